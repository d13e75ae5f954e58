"""A verifier process: takes one item at a time from its socket and answers with its result.

The item's deadline is enforced twice. Here, a timer (SIGALRM, so this must be the main thread of
the process) interrupts the verifier just before the deadline, which keeps the process alive and
cheap. In the supervisor, a hard deadline kills this process should the timer not get through (a
long computation in C that never returns to the interpreter). Before either, the verifiers refuse
inputs that could only end at the deadline (``answers.runaway``), answered at once as "timeout".
"""

from __future__ import annotations

import contextlib
import gc
import resource
import signal
import socket
import time
from collections.abc import Iterator

from services.reward.answers.runaway import Runaway
from services.reward.protocol import READY, recv_frame, send_frame
from services.reward.registry import resolve
from services.reward.verifiers import VerifierOptions
from shared.api.reward import ScoreItem, ScoreResult, ScoreStatus


class DeadlineExceeded(BaseException):
    """A BaseException, so that the ``except Exception`` blocks in math-verify and sympy let it through."""


def soft_budget(item_timeout_s: float) -> float:
    """The process's own deadline: early enough that its answer beats the supervisor's kill."""
    return item_timeout_s - min(0.25, item_timeout_s / 10)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise DeadlineExceeded in the block after ``seconds``. Main thread only (SIGALRM)."""
    fired = False

    def on_alarm(signum, frame):
        nonlocal fired
        fired = True
        raise DeadlineExceeded

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    started = time.monotonic()
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:
            # Someone else's timer was running (pytest-timeout, for one): put it back.
            left = previous_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), previous_interval)
    if fired:
        # Some bare ``except:`` swallowed the interruption; the result computed after it is not to be trusted.
        raise DeadlineExceeded


def unscored_result(item_id: str, status: ScoreStatus, detail: str) -> ScoreResult:
    """An item that got no verdict: reward 0, never correct, and why in ``detail``."""
    return ScoreResult(id=item_id, reward=0.0, correct=False, status=status, detail=detail)


def timeout_result(item_id: str, item_timeout_s: float) -> ScoreResult:
    return unscored_result(item_id, ScoreStatus.timeout, f"verification exceeded the {item_timeout_s:g} s deadline")


def error_result(item_id: str, detail: str) -> ScoreResult:
    return unscored_result(item_id, ScoreStatus.error, detail)


REFUSED = "refused before verification, it could only end at the deadline"


def refused_result(item_id: str, reason: str) -> ScoreResult:
    return unscored_result(item_id, ScoreStatus.refused, f"{REFUSED}: {reason}")


def score(item: ScoreItem, item_timeout_s: float, options: VerifierOptions | None = None) -> ScoreResult:
    try:
        verifier = resolve(item.verifier)  # a plug-in that fails to load costs its items, not the process
        with deadline(soft_budget(item_timeout_s)):
            verdict = verifier(item.response, item.reference, options or VerifierOptions())
    except DeadlineExceeded:
        return timeout_result(item.id, item_timeout_s)
    except Runaway as exc:
        return refused_result(item.id, str(exc))
    except Exception as exc:  # one bad input costs one item, never the process and the items after it
        return error_result(item.id, f"{type(exc).__name__}: {str(exc)[:500]}")
    return ScoreResult(
        id=item.id, reward=verdict.reward, correct=verdict.correct, extracted=verdict.extracted, detail=verdict.detail
    )


def _warm_up(item_timeout_s: float, options: VerifierOptions) -> None:
    # The first verification builds math-verify's regexes and the LaTeX parser (~0.1 s): pay it
    # before announcing readiness rather than in the first request's latency.
    score(ScoreItem(id="warm-up", response="\\boxed{\\frac{1}{2}}", reference="0.5"), item_timeout_s, options)


def main(sock: socket.socket, item_timeout_s: float, memory_mb: int | None, options: VerifierOptions) -> None:
    # Ctrl-C reaches the whole process group; the supervisor decides when verifier processes stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_mb is not None:
        limit = memory_mb * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    _warm_up(item_timeout_s, options)
    # Everything alive now (sympy, math-verify, pydantic, the warm-up's caches) lives as long as the
    # process: moved out of the collector's generations, full collections no longer walk it per item.
    gc.freeze()
    send_frame(sock, READY)
    while (frame := recv_frame(sock)) is not None:
        item = ScoreItem.model_validate_json(frame)
        result = score(item, item_timeout_s, options).model_dump_json().encode()
        try:
            send_frame(sock, result)
        except (BrokenPipeError, ConnectionResetError):
            return  # the supervisor is gone or gave up on this item; nobody to answer
