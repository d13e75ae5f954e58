"""Delta versions: bytes of each version's delta against its full file, and the time to encode and apply.

Two sources:
- a finished run's weight versions (``--weights``: its ``learner/weights`` folder; run it with
  ``--set learner.keep_weights=50`` so consecutive versions are kept): every pair of consecutive
  versions, encoded as the learner does (``WeightStore.write_delta``: mmap, XOR, zlib level 1) and
  applied as a worker does (``apply_delta``, every bucket verified);
- a synthetic bf16 file of ``--synthetic-mb`` MB where a share of the values change by a few low bits
  (an RL step at a small learning rate), and where every value changes (the worst case).

The learner encodes on its release thread (services.learner.weights.Release), not in the training
loop; the last figure is how long the loop's thread was held at most while a synthetic delta was encoded
beside it (the longest gap between iterations of a small torch loop, against the same loop alone).

    .venv/bin/python benchmarks/delta_bench.py --weights runs/<run>/learner/weights [--synthetic-mb 500]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import load_file, save, save_file

from services.learner.weights import WeightStore
from shared.api.weights import DELTA_FILE
from shared.weights.delta import apply_delta, encode_delta
from shared.weights.manifest import Manifest, write_manifest

BUCKET = 16 << 20


def _changed_values(a: bytes, b: bytes) -> float:
    """Share of 2-byte words that differ (a bf16 value each; half of an fp32 value)."""
    n = len(a) // 2 * 2
    x = np.frombuffer(a[:n], dtype=np.uint16)
    y = np.frombuffer(b[:n], dtype=np.uint16)
    return float(np.count_nonzero(x != y)) / max(1, x.size)


def measure(store: WeightStore, version: int) -> dict | None:
    """Encode the delta ``version - 1 -> version`` in ``store`` and apply it; None when there is none."""
    started = time.perf_counter()
    manifest = store.write_delta(version)
    encode_s = time.perf_counter() - started
    if manifest is None:
        return None
    base, new = store.file(version - 1).read_bytes(), store.file(version).read_bytes()
    data = (store.directory(version) / DELTA_FILE).read_bytes()
    full = Manifest.model_validate_json(store.manifest_file(version).read_text())
    started = time.perf_counter()
    rebuilt = apply_delta(base, manifest.delta, data, full)
    apply_s = time.perf_counter() - started
    assert bytes(rebuilt) == new
    return {"version": version, "full": len(new), "delta": len(data), "changed": _changed_values(base, new),
            "encode_s": encode_s, "apply_s": apply_s, "bf16": _as_bf16(store, version)}


def _as_bf16(store: WeightStore, version: int) -> float | None:
    """delta / full had the two versions been saved in bf16 (None when they already are): what a model
    trained in fp32 would send if it published bf16 weights, as vLLM serves them."""
    pair = [load_file(store.file(v)) for v in (version - 1, version)]
    if all(t.dtype == torch.bfloat16 for t in pair[1].values()):
        return None
    base, new = (save({k: t.to(torch.bfloat16) for k, t in state.items()}) for state in pair)
    return encode_delta(base, new, version - 1, version)[0].delta_bytes / len(new)


def run_versions(weights: Path, scratch: Path) -> list[dict]:
    """Every consecutive pair of the run's versions, copied into a scratch store (the run's folder stays
    as it was)."""
    store = WeightStore(scratch / "run", keep=1000, bucket_bytes=BUCKET)
    versions = sorted(int(p.name[1:]) for p in weights.glob("v*") if p.name[1:].isdigit())
    for version in versions:
        target = store.directory(version)
        target.mkdir(parents=True)
        shutil.copy(weights / f"v{version}" / "model.safetensors", store.file(version))
        write_manifest(store.file(version), version, BUCKET)
    return [row for v in versions if v - 1 in versions and (row := measure(store, v)) is not None]


def _gaps(until: threading.Event | None, seconds: float = 2.0) -> list[float]:
    """Gaps between iterations of a small torch loop (a stand-in for the training loop's thread). On one
    torch thread: what is measured is the thread being held (the GIL), not two cores shared by three."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    x = torch.ones(256, 256)
    gaps = []
    last = started = time.perf_counter()
    while (until is None and last - started < seconds) or (until is not None and not until.is_set()):
        (x @ x).sum()
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    torch.set_num_threads(threads)
    return gaps


def loop_stall(store: WeightStore) -> tuple[list[float], list[float]]:
    """The loop's gaps alone, then while ``store``'s v1 delta is encoded on another thread."""
    alone = _gaps(None)
    (store.directory(1) / DELTA_FILE).unlink(missing_ok=True)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (store.write_delta(1), done.set()))
    thread.start()
    beside = _gaps(done)
    thread.join()
    return alone, beside


def synthetic(scratch: Path, megabytes: int, share: float, seed: int = 0, stall: bool = False) -> dict:
    """A bf16 file of ``megabytes`` where ``share`` of the values move by a few low bits."""
    store = WeightStore(scratch / f"synthetic-{share}", keep=10, bucket_bytes=BUCKET)
    values = megabytes * (1 << 20) // 2
    generator = torch.Generator().manual_seed(seed)
    weights = (0.02 * torch.randn(values, generator=generator)).to(torch.bfloat16)
    moved = weights.clone()
    if share >= 1:
        moved = (moved.float() * (1 + 1e-2 * torch.randn(values, generator=generator))).to(torch.bfloat16)
    else:
        chosen = torch.randperm(values, generator=generator)[: int(values * share)]
        moved[chosen] = (moved[chosen].float() * (1 + 1e-2 * torch.randn(chosen.numel(), generator=generator))).to(
            torch.bfloat16)
    for version, tensor in enumerate((weights, moved)):
        store.directory(version).mkdir(parents=True)
        save_file({"w": tensor}, store.file(version))
        write_manifest(store.file(version), version, BUCKET)
    del weights, moved
    row = measure(store, 1)
    row["version"] = f"{share:.0%} moved"
    if stall:
        row["stall"] = loop_stall(store)
    return row


def table(title: str, rows: list[dict]) -> Table:
    out = Table(title=title)
    for column in ("version", "full MB", "delta MB", "delta / full", "16-bit words changed", "encode s",
                   "apply s", "in bf16: delta / full"):
        out.add_column(column, justify="right")
    for row in rows:
        out.add_row(str(row["version"]), f"{row['full'] / 1e6:.2f}", f"{row['delta'] / 1e6:.3f}",
                    f"{row['delta'] / row['full']:.1%}", f"{row['changed']:.1%}", f"{row['encode_s']:.2f}",
                    f"{row['apply_s']:.2f}", "-" if row["bf16"] is None else f"{row['bf16']:.1%}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, help="a run's learner/weights folder")
    parser.add_argument("--synthetic-mb", type=int, default=500, help="0: skip the synthetic files")
    parser.add_argument("--shares", type=float, nargs="*", default=[0.02, 1.0],
                        help="shares of the synthetic values that move")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="delta-bench-") as tmp:
        scratch = Path(tmp)
        if args.weights is not None:
            rows = run_versions(args.weights, scratch)
            if not rows:
                raise SystemExit(f"{args.weights} holds no two consecutive versions")
            console.print(table(f"Deltas of a run's consecutive versions ({args.weights})", rows))
            mean = sum(r["delta"] for r in rows) / sum(r["full"] for r in rows)
            console.print(f"mean delta / full: {mean:.1%} over {len(rows)} versions")
        if args.synthetic_mb:
            rows = []
            for index, share in enumerate(args.shares):
                rows.append(synthetic(scratch, args.synthetic_mb, share, stall=index == 0))
                shutil.rmtree(scratch / f"synthetic-{share}")
            console.print(table(f"Synthetic bf16 versions of {args.synthetic_mb} MB", rows))
            alone, beside = rows[0]["stall"]
            console.print(
                f"training-loop thread while the {rows[0]['version']} delta is encoded on the release thread: "
                f"longest gap {max(beside) * 1e3:.0f} ms (alone {max(alone) * 1e3:.0f} ms), median iteration "
                f"{statistics.median(beside) * 1e3:.1f} ms (alone {statistics.median(alone) * 1e3:.1f} ms)"
            )


if __name__ == "__main__":
    main()
