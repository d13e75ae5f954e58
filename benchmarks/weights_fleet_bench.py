"""How fast a weight version reaches a fleet of workers: one origin and N lightweight workers.

Workers are real processes (several workers to a process), each with its own libtorrent session and
its own rate limits; a worker holds a version once every bucket of the version's manifest has
arrived, hashed to the manifest's SHA-256 and been applied from memory into a torch state dict (no
vLLM engine: the machine cannot hold hundreds). Every node (origin included) is limited to --rate-mb
MB/s up and down, so one transfer of the model takes about --model-mb / --rate-mb seconds.

Designs, each per N:
- origin: today's design, every worker downloads the whole version from the one origin (peer
  exchange off; the same engine and limits, so only the topology differs; with a bandwidth-bound
  origin the protocol does not matter).
- swarm: the origin seeds, workers fetch from each other too (peers introduced from a registry:
  a directory of listening ports here, the Redis worker registry in a deployment).
Faults (--faults): 20% of the workers' processes SIGKILLed mid-transfer, and --joiners workers started
mid-version; every live worker must end on the new version, and none may apply a partial one.

--tls: the swarm backend's authentication (shared/weights/transports/swarm.py): SSL torrents whose root
is a job CA, every node listening on TLS only with a certificate of that CA.

Figures: time until 50/99/100% of the live workers hold the version (from the moment the origin
publishes), bytes served by the origin (payload, and as a multiple of the model size). A table is
printed and a PNG saved.

    .venv/bin/python benchmarks/weights_fleet_bench.py [--sizes 8,64,256] [--model-mb 8] [--rate-mb 4]
        [--designs swarm,origin] [--faults] [--tls] [--png docs/weights_fleet.png]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import libtorrent as lt
import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared.weights.manifest import Manifest, build_manifest, load_state_dict  # noqa: E402
from shared.weights.transports.swarm import SwarmLimits, join, make_torrent, open_session  # noqa: E402
from shared.weights.transports.swarm_ca import JobAuthority  # noqa: E402

HOST = "127.0.0.1"
PEERS_PER_ROUND = 6  # new peers a worker is introduced to per look at the registry
INTRODUCE_EVERY_S = 0.5  # how often a worker looks at the registry (the backend: introduce_interval_s)
TOKEN = "fleet-bench-token"  # --tls: the job's token, whence its CA


def write_model(path: Path, megabytes: float) -> None:
    """Random bf16 tensors of a transformer's shapes, ``megabytes`` in all (the values do not matter)."""
    generator = torch.Generator().manual_seed(0)
    hidden = 256
    total = int(megabytes * (1 << 20)) // 2
    tensors, layer = {}, 0
    while total > 0:
        rows = min(4 * hidden, max(1, total // hidden))
        tensors[f"layers.{layer}.mlp.weight"] = torch.randn(rows, hidden, generator=generator).to(torch.bfloat16)
        total -= rows * hidden
        layer += 1
    save_file(tensors, path)


# ---------------------------------------------------------------- a worker process (several workers)


def run_workers(args: argparse.Namespace) -> None:
    run = Path(args.run)
    manifest = Manifest.model_validate_json((run / "manifest.json").read_text())
    torrent = (run / "model.torrent").read_bytes()
    limits = SwarmLimits(upload_bps=args.rate, download_bps=args.rate)
    origin_port = int((run / "origin.port").read_text())
    results = (run / "results" / f"p{args.first}.jsonl").open("a")
    workers = []
    certificate = JobAuthority(TOKEN).issue_node() if args.tls else None
    for index in range(args.first, args.first + args.count):
        port = args.port + index
        session = open_session(HOST, port, limits, ssl=args.tls)
        session.apply_settings({"alert_mask": lt.alert.category_t.status_notification})  # torrent_finished
        save = run / "w" / str(index)
        save.mkdir(parents=True, exist_ok=True)
        handle = join(session, torrent, save, exchange_peers=args.design == "swarm", certificate=certificate)
        handle.connect_peer((HOST, origin_port))
        if args.design == "swarm":
            (run / "peers" / str(port)).write_text("")  # a partial holder serves the pieces it has
        workers.append({"index": index, "port": port, "session": session, "handle": handle, "known": set(),
                        "state": None})
    print(json.dumps({"ready": args.first}), flush=True)
    pending = list(workers)
    introduced = 0.0
    while pending:
        time.sleep(0.05)
        # Completion from each session's alerts, not by asking every handle its status: a status call
        # waits for the session's network thread, and tens of them a round made this loop the bottleneck.
        finished = [w for w in pending
                    if any(isinstance(a, lt.torrent_finished_alert) for a in w["session"].pop_alerts())]
        for worker in finished:
            # Every bucket verified against the manifest before anything is applied.
            data = (run / "w" / str(worker["index"]) / "model.safetensors").read_bytes()
            for i in range(len(manifest.buckets)):
                bucket = manifest.buckets[i]
                manifest.verify(i, memoryview(data)[bucket.start : bucket.start + bucket.size])
            worker["state"] = load_state_dict(manifest, data)
            results.write(json.dumps({"worker": worker["index"], "t": time.time(),
                                      "buckets": len(manifest.buckets)}) + "\n")
            results.flush()
            pending.remove(worker)
        if args.design != "swarm" or time.monotonic() - introduced < INTRODUCE_EVERY_S:
            continue
        introduced = time.monotonic()
        peers = [int(p.name) for p in (run / "peers").iterdir()]
        for worker in pending:
            room = args.peers - len(worker["known"]) if args.peers else PEERS_PER_ROUND
            fresh = [p for p in peers if p != worker["port"] and p not in worker["known"]]
            for port in random.sample(fresh, max(0, min(PEERS_PER_ROUND, room, len(fresh)))):
                worker["handle"].connect_peer((HOST, port))
                worker["known"].add(port)
    while True:  # keep seeding until the coordinator ends the run
        time.sleep(1)


# ---------------------------------------------------------------- the coordinator


def spawn(args, run: Path, design: str, first: int, count: int) -> subprocess.Popen:
    argv = [sys.executable, __file__, "--worker", "--run", str(run), "--design", design, "--first", str(first),
            "--count", str(count), "--port", str(args.run_port), "--rate", str(int(args.rate_mb * (1 << 20))),
            "--peers", str(args.peers)]
    if args.tls:
        argv.append("--tls")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    return process


def read_results(run: Path) -> dict[int, dict]:
    found = {}
    for path in (run / "results").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                found[record["worker"]] = record
    return found


RUNS = iter(range(1000))


def one_run(args, design: str, n: int, faults: bool) -> dict:
    # Fresh ports for every run: a killed run's sockets may linger.
    args.run_port = args.base_port + 1000 * next(RUNS)
    run = Path(tempfile.mkdtemp(prefix=f"fleet-{design}-{n}-", dir=args.scratch))
    for sub in ("results", "peers", "w", "origin"):
        (run / sub).mkdir()
    shutil.copy(args.model, run / "origin" / "model.safetensors")
    manifest = build_manifest(run / "origin" / "model.safetensors", 1, args.bucket_kb << 10)
    (run / "manifest.json").write_text(manifest.model_dump_json())
    authority = JobAuthority(TOKEN) if args.tls else None
    root = authority.root_certificate() if authority else None
    (run / "model.torrent").write_bytes(make_torrent(run / "origin" / "model.safetensors", manifest, root))
    rate = int(args.rate_mb * (1 << 20))
    origin = open_session(HOST, args.run_port + 999, SwarmLimits(upload_bps=rate, download_bps=rate), ssl=args.tls)
    (run / "origin.port").write_text(str(args.run_port + 999))

    per_process = max(1, math.ceil(n / args.processes))
    processes: list[tuple[subprocess.Popen, range]] = []
    for first in range(0, n, per_process):
        count = min(per_process, n - first)
        processes.append((spawn(args, run, design, first, count), range(first, first + count)))
    for process, _ in processes:  # every worker listening and waiting before the version is published
        process.stdout.readline()
    started = time.time()
    handle = join(origin, (run / "model.torrent").read_bytes(), run / "origin", seed=True,
                  exchange_peers=design == "swarm", certificate=authority.issue_node() if authority else None)
    killed: set[int] = set()
    expected = set(range(n))
    single = args.model_mb / args.rate_mb
    if faults:
        time.sleep(single * 0.5)  # mid-transfer
        victims = processes[: max(1, round(0.2 * len(processes)))]
        for process, workers in victims:
            process.send_signal(signal.SIGKILL)
            killed.update(workers)
        joiners = []
        # At most two joining processes: each process start costs seconds of CPU on this machine.
        per_joiner = max(per_process, math.ceil(args.joiners / 2))
        for first in range(n, n + args.joiners, per_joiner):
            count = min(per_joiner, n + args.joiners - first)
            joiners.append((spawn(args, run, design, first, count), range(first, first + count)))
        for process, workers in joiners:
            process.stdout.readline()
            expected.update(workers)
        processes += joiners
    live = expected - killed
    deadline = started + args.timeout
    while time.time() < deadline:
        done = read_results(run)
        if live <= set(done):
            break
        time.sleep(0.25)
    done = read_results(run)
    origin_bytes = handle.status().total_payload_upload
    for process, _ in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
    del origin
    times = sorted(done[w]["t"] - started for w in live if w in done)
    shutil.rmtree(run, ignore_errors=True)

    def at(share: float) -> float | None:
        needed = math.ceil(share * len(live))
        return times[needed - 1] if len(times) >= needed else None

    partial = [w for w in done.values() if w["buckets"] != len(manifest.buckets)]
    return {
        "design": design, "n": n, "faults": faults, "live": len(live), "holding": len(times),
        "t50": at(0.5), "t99": at(0.99), "t100": at(1.0), "origin_bytes": origin_bytes,
        "origin_x": origin_bytes / manifest.total_bytes, "partial": len(partial), "killed": len(killed),
    }


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--design", default="swarm", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="8,64,256")
    parser.add_argument("--designs", default="swarm,origin")
    parser.add_argument("--model-mb", type=float, default=8.0)
    parser.add_argument("--rate-mb", type=float, default=4.0, help="MB/s up and down, per node")
    parser.add_argument("--bucket-kb", type=int, default=256,
                        help="bucket (piece) size, a power of two from 16: about 32 pieces pipeline well")
    parser.add_argument("--processes", type=int, default=8, help="worker processes per run (joiners aside)")
    parser.add_argument("--faults", action="store_true", help="also run each size with kills and joiners")
    parser.add_argument("--tls", action="store_true", help="authenticated peers, as the swarm backend runs them")
    parser.add_argument("--joiners", type=int, default=50)
    parser.add_argument("--peers", type=int, default=16,
                        help="peers a worker is introduced to in all (0: every one; the swarm backend's max_peers)")
    parser.add_argument("--origin-max-n", type=int, default=64,
                        help="largest N for the origin design (its time grows as N: larger ones are computed)")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--base-port", type=int, default=20000)
    parser.add_argument("--scratch", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    parser.add_argument("--png", default="")
    args = parser.parse_args()
    if args.worker:
        run_workers(args)
        return

    args.model = Path(tempfile.mkdtemp(prefix="fleet-model-", dir=args.scratch)) / "model.safetensors"
    write_model(args.model, args.model_mb)
    model_bytes = args.model.stat().st_size
    print(f"model {model_bytes / (1 << 20):.1f} MiB in {math.ceil(model_bytes / (args.bucket_kb << 10))} buckets, "
          f"{args.rate_mb} MB/s per node: one transfer ~{args.model_mb / args.rate_mb:.1f} s", flush=True)
    single = one_run(args, "swarm", 1, False)
    print(f"single transfer (N=1): {fmt(single['t100'])} s", flush=True)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        for design in args.designs.split(","):
            for faults in ([False, True] if args.faults else [False]):
                if design == "origin" and (n > args.origin_max_n or faults):
                    continue
                row = one_run(args, design, n, faults)
                rows.append(row)
                print(json.dumps(row), flush=True)
    shutil.rmtree(args.model.parent, ignore_errors=True)

    print(f"\nsingle transfer: {fmt(single['t100'])} s; model {model_bytes / 1e6:.1f} MB\n")
    print("| design | N | faults | live | holding | t50 s | t99 s | t100 s | t99 / single | origin bytes (x model) "
          "| partial applies |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = "-" if r["t99"] is None else f"{r['t99'] / single['t100']:.2f}"
        print(f"| {r['design']} | {r['n']} | {'20% killed, +' + str(args.joiners) if r['faults'] else 'none'} "
              f"| {r['live']} | {r['holding']} | {fmt(r['t50'])} | {fmt(r['t99'])} | {fmt(r['t100'])} | {ratio} "
              f"| {r['origin_bytes'] / 1e6:.0f} MB ({r['origin_x']:.1f}x) | {r['partial']} |")
    for n in [int(s) for s in args.sizes.split(",")]:
        if n > args.origin_max_n and "origin" in args.designs:
            print(f"| origin (computed: N x one transfer) | {n} | none | {n} | - | {fmt(n * single['t100'] / 2)} "
                  f"| {fmt(0.99 * n * single['t100'])} | {fmt(n * single['t100'])} | - | "
                  f"{n * model_bytes / 1e6:.0f} MB ({n:.1f}x) | - |")
    if args.png:
        plot(rows, single["t100"], Path(args.png))


def plot(rows: list[dict], single: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for design in sorted({r["design"] for r in rows}):
        for faults in (False, True):
            chosen = [r for r in rows if r["design"] == design and r["faults"] == faults and r["t99"] is not None]
            if not chosen:
                continue
            label = design + (" (faults)" if faults else "")
            left.plot([r["n"] for r in chosen], [r["t99"] for r in chosen], marker="o", label=label)
            right.plot([r["n"] for r in chosen], [r["origin_x"] for r in chosen], marker="o", label=label)
    left.axhline(2 * single, linestyle="--", color="grey", label="2x one transfer (goal)")
    right.axhline(3, linestyle="--", color="grey", label="3x model (goal)")
    for axis, title in ((left, "time to 99% of workers (s)"), (right, "origin bytes / model size")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("workers")
        axis.set_title(title)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
