"""An event simulation of weight distribution to fleets this machine cannot hold (N = 1,000 and 10,000).

Time advances in rounds: one round is the time a node takes to send one piece at its rate. In a round
every holder (the origin included, which may have more upload capacity) sends one piece to one peer
that lacks it (rarest piece first among those the peer lacks), and every node receives at most one
piece; a node holds the version once it has every piece. The designs:
- origin: every worker downloads from the origin only (today's design);
- swarm: workers also send to each other (the swarm transport).
Versions are full (every worker lacks every piece) or deltas (every worker already holds the base; the
delta's pieces are a fraction --delta of the full size; a joiner lacks the base too and fetches both).
Churn: 20% of the workers leave half-way through one transfer's time, and 20% as many join then.

Calibration: the bench (benchmarks/weights_fleet_bench.py) gives the ratio of a swarm's time to 99%
to one transfer's at N = 8, 64, 256; --calibrate prints the simulation's ratio at the bench's settings
to compare, and --efficiency scales a node's nominal rate to what a transfer achieves.

    .venv/bin/python benchmarks/weights_fleet_sim.py [--calibrate] [--sizes 1000,10000]
"""

from __future__ import annotations

import argparse
import functools
import math

import numpy as np

MODELS = {"1.5B": 3.09e9, "7B": 15.23e9}  # bf16 bytes


@functools.cache  # rounds depend on the pieces, not on the model size or the link
def simulate(
    n: int, pieces: int, design: str, origin_slots: int = 1, delta_pieces: int | None = None,
    churn: bool = False, seed: int = 0, max_rounds: int = 100_000,
) -> dict:
    """Rounds until 50/99/100% of the live workers hold the version, and pieces the origin sent."""
    rng = np.random.default_rng(seed)
    total = pieces if delta_pieces is None else pieces + delta_pieces
    have = np.zeros((n, total), dtype=bool)
    if delta_pieces is not None:
        have[:, :pieces] = True  # everyone holds the base; the delta's pieces are new
    alive = np.ones(n, dtype=bool)
    done_at = np.full(n, -1)
    origin_sent = 0
    churn_round = (total if delta_pieces is None else delta_pieces) // 2
    for round_ in range(1, max_rounds + 1):
        if churn and round_ == churn_round:
            leaving = rng.choice(np.flatnonzero(alive), size=int(0.2 * n), replace=False)
            alive[leaving] = False
            joiners = int(0.2 * n)
            have = np.vstack([have, np.zeros((joiners, total), dtype=bool)])
            alive = np.concatenate([alive, np.ones(joiners, dtype=bool)])
            done_at = np.concatenate([done_at, np.full(joiners, -1)])
        complete = have.all(axis=1)
        needy = np.flatnonzero(alive & ~complete)
        if needy.size == 0:
            break
        counts = have[alive].sum(axis=0)  # rarity of each piece among live workers
        receiving = np.zeros(have.shape[0], dtype=bool)
        sends: list[tuple[int, int]] = []
        # The origin first: it holds everything.
        for v in rng.choice(needy, size=min(origin_slots, needy.size), replace=False):
            missing = np.flatnonzero(~have[v])
            sends.append((v, missing[np.argmin(counts[missing] + rng.random(missing.size))]))
            receiving[v] = True
            origin_sent += 1
        if design == "swarm":
            uploaders = np.flatnonzero(alive & have.any(axis=1))
            rng.shuffle(uploaders)
            candidates = needy[~receiving[needy]]
            rng.shuffle(candidates)
            # Pair each uploader with a needy peer it can help (a few tries), as choking rounds do.
            pointer = 0
            for u in uploaders:
                for _ in range(4):
                    if pointer >= candidates.size:
                        break
                    v = candidates[(pointer + rng.integers(0, 8)) % candidates.size]
                    if receiving[v] or v == u:
                        continue
                    useful = np.flatnonzero(have[u] & ~have[v])
                    if useful.size:
                        sends.append((v, useful[np.argmin(counts[useful] + rng.random(useful.size))]))
                        receiving[v] = True
                        pointer += 1
                        break
        for v, piece in sends:
            have[v, piece] = True
        newly = alive & have.all(axis=1) & (done_at < 0)
        done_at[newly] = round_
    live_done = np.sort(done_at[alive])
    live = live_done.size

    def at(share: float) -> float:
        value = live_done[math.ceil(share * live) - 1]
        return float("nan") if value < 0 else float(value)

    return {"t50": at(0.5), "t99": at(0.99), "t100": at(1.0), "origin_pieces": origin_sent}


def calibrate(pieces: int) -> None:
    print(f"simulation at the bench's settings ({pieces} pieces, origin rate = worker rate):")
    single = simulate(1, pieces, "swarm")["t100"]
    for n in (8, 64, 256):
        r = simulate(n, pieces, "swarm")
        ratio, origin = r["t99"] / single, r["origin_pieces"] / pieces
        print(f"  swarm N={n}: t99 / one transfer = {ratio:.2f}, origin = {origin:.1f}x model")


def table(args) -> None:
    print("| model | link | N | version | churn | design | t99 (s) | origin bytes (x model) |")
    print("|---|---|---|---|---|---|---|---|")
    for model, size in MODELS.items():
        for gbit in (10, 25):
            rate = gbit * 1e9 / 8 * args.efficiency
            piece_bytes = size / args.pieces
            round_s = piece_bytes / rate
            for n in args.sizes:
                for version in ("full", "delta"):
                    delta = None if version == "full" else max(1, round(args.delta * args.pieces))
                    for churn in (False, True):
                        for design in ("swarm", "origin"):
                            if design == "origin":
                                # Analytic: the origin sends the version to each worker in turn.
                                need = args.pieces if delta is None else delta
                                workers = n  # with churn, the leavers' transfers are replaced by the joiners'
                                joiner_extra = 0 if delta is None or not churn else int(0.2 * n) * args.pieces
                                sent = 0.99 * workers * need + joiner_extra
                                t99 = sent * round_s / args.origin_slots
                                origin = (workers * need + joiner_extra) / args.pieces
                            else:
                                r = simulate(n, args.pieces, "swarm", args.origin_slots, delta, churn, seed=1)
                                t99 = r["t99"] * round_s
                                origin = r["origin_pieces"] / args.pieces
                            churned = "20% out, 20% in" if churn else "none"
                            print(f"| {model} | {gbit} Gbit/s | {n:,} | {version} | {churned} | {design} "
                                  f"| {t99:,.0f} | {origin:,.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pieces", type=int, default=64, help="pieces of a full version in the simulation")
    parser.add_argument("--delta", type=float, default=0.06, help="a delta's size as a share of the full version")
    parser.add_argument("--efficiency", type=float, default=0.9, help="achieved / nominal link rate")
    parser.add_argument("--origin-slots", type=int, default=1, help="origin rate as a multiple of a worker's")
    parser.add_argument("--sizes", type=lambda text: [int(n) for n in text.split(",")], default=[1000, 10000],
                        help="fleet sizes, comma-separated")
    parser.add_argument("--calibrate", action="store_true")
    args = parser.parse_args()
    if args.calibrate:
        calibrate(32)
    table(args)


if __name__ == "__main__":
    main()
