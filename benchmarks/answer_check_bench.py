"""Answer checking against the case table: the reward service's verifiers vs math-verify alone.

Reads ``tests/data/answer_cases.yaml`` (each case: response, reference, expected verdict) and
prints, per category and in total, how many expected verdicts

1. the service's verifier gives (``services.reward.verifiers``, the case's verifier, in this process);
2. ``math_verify.parse`` + ``verify`` give, called directly on the same two strings;

then lists every case the service gets wrong, and every case math-verify gets right that the
service gets wrong (each should be listed with its reason in docs/reward.md).

    .venv/bin/python benchmarks/answer_check_bench.py [--strictness standard|strict] [--show-all]
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import time
from pathlib import Path

import yaml
from math_verify import parse, verify
from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.table import Table

from services.reward.answers.runaway import Runaway
from services.reward.verifiers import BUILTIN, VerifierOptions

CASES = Path(__file__).resolve().parents[1] / "tests" / "data" / "answer_cases.yaml"


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cat: str
    r: str
    g: str
    ok: bool
    v: str = "math"
    why: str | None = None


def load_cases(path: Path = CASES) -> list[Case]:
    return [Case.model_validate(raw) for raw in yaml.safe_load(path.read_text())]


def service_verdict(case: Case, options: VerifierOptions) -> tuple[bool, str]:
    try:
        verdict = BUILTIN[case.v](case.r, case.g, options)
    except Runaway as exc:
        return False, f"refused: {exc}"
    except Exception as exc:  # what the service answers as status "error"
        return False, f"error: {type(exc).__name__}: {exc}"
    return verdict.correct, verdict.detail or ""


def math_verify_verdict(case: Case) -> bool:
    return bool(verify(parse(case.g), parse(case.r)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strictness", choices=["standard", "strict"], default="standard")
    parser.add_argument("--cases", type=Path, default=CASES)
    args = parser.parse_args()
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # its timeout warnings

    cases = load_cases(args.cases)
    options = VerifierOptions(strictness=args.strictness)
    per_cat: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    service_wrong, regressions = [], []
    service_s = direct_s = 0.0
    for i, case in enumerate(cases):
        started = time.perf_counter()
        got, detail = service_verdict(case, options)
        service_s += time.perf_counter() - started
        started = time.perf_counter()
        direct = math_verify_verdict(case)
        direct_s += time.perf_counter() - started
        counts = per_cat[case.cat]
        counts[0] += 1
        counts[1] += got == case.ok
        counts[2] += direct == case.ok
        if got != case.ok:
            service_wrong.append((i, case, got, detail))
            if direct == case.ok:
                regressions.append((i, case, got, detail))

    table = Table(title=f"Answer checking: {len(cases)} cases from {args.cases.name}, strictness {args.strictness}")
    for column in ("category", "cases", "service agrees", "math-verify direct agrees"):
        table.add_column(column, justify="left" if column == "category" else "right")
    for cat, (n, service, direct) in per_cat.items():
        table.add_row(cat, str(n), str(service), str(direct))
    total = [sum(c[k] for c in per_cat.values()) for k in range(3)]
    table.add_row("total", *(str(t) for t in total), style="bold")
    Console(width=160).print(table)
    print(f"service agrees on {total[1]}/{total[0]}; math-verify direct agrees on {total[2]}/{total[0]}")
    print(
        f"time per case: service {1000 * service_s / len(cases):.1f} ms, math-verify direct "
        f"{1000 * direct_s / len(cases):.1f} ms (one process, after warm-up of the first case)"
    )
    print(f"\ncases the service gets wrong ({len(service_wrong)}):")
    for i, case, got, detail in service_wrong:
        print(f"  #{i} [{case.cat}] expected {case.ok}, service {got} ({detail})")
        print(f"      response: {case.r!r}\n      reference: {case.g!r}")
    print(f"\ncases math-verify direct gets right and the service gets wrong: {len(regressions)}")
    for i, case, _, _ in regressions:
        print(f"  #{i} [{case.cat}] {case.r!r} vs {case.g!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
