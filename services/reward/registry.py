"""Which verifiers the reward service has, found by name.

A verifier is a function ``(response: str, reference: str, options: VerifierOptions) -> score``
where the score is a :class:`~services.reward.verifiers.Verdict`, a bool (correct or not) or a
float (the reward; correct when it is at least 1). Two ways to make one known:

- an entry point in the group ``prefix_rft.verifiers`` of an installed package (the name is the
  entry point's); the built-in ``math``, ``gsm8k`` and ``format`` are registered this way in
  prefix-rft's own ``pyproject.toml``;
- a ``module:function`` path listed in the service's settings (``reward.verifier_paths``); requests
  then name it by that path. Only listed paths: a path a client could choose would let it call any
  importable function in the service.

The service checks every requested name against :meth:`VerifierRegistry.names` (an unknown one is a
422 listing the known ones); verifier processes resolve a name with :func:`resolve`, which trusts it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points

from services.reward import verifiers as builtin
from services.reward.verifiers import Verdict, VerifierOptions
from shared.api.reward import VerifierInfo

ENTRY_POINT_GROUP = "prefix_rft.verifiers"

Score = Verdict | bool | float
VerifierFn = Callable[[str, str, VerifierOptions], Score]


class UnknownVerifier(LookupError):
    def __init__(self, name: str, known: Iterable[str]):
        self.name = name
        self.known = sorted(known)
        super().__init__(f"unknown verifier {name!r}; known verifiers: {', '.join(self.known)}")


class BadVerifier(ValueError):
    """A verifier path or entry point that does not lead to a usable function."""


def _entry_points() -> dict[str, tuple[str, str]]:
    """Name -> (``module:function``, distribution) for every installed entry point of the group."""
    found: dict[str, tuple[str, str]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        if ep.name in found and found[ep.name][0] != ep.value:
            raise BadVerifier(
                f"verifier {ep.name!r} is registered twice: {found[ep.name][0]} ({found[ep.name][1]}) "
                f"and {ep.value} ({dist})"
            )
        found[ep.name] = (ep.value, dist)
    return found


def _builtin_targets() -> dict[str, str]:
    return {name: f"{fn.__module__}:{fn.__qualname__}" for name, fn in builtin.BUILTIN.items()}


class VerifierRegistry:
    """The verifiers one service offers: entry points, the built-ins, and the paths its settings list."""

    def __init__(self, paths: Iterable[str] = ()):
        self._infos: dict[str, VerifierInfo] = {}
        # The built-ins are also entry points of prefix-rft; from a source checkout whose installed
        # metadata predates them they are known all the same.
        for name, target in _builtin_targets().items():
            self._infos[name] = VerifierInfo(name=name, target=target, source="built-in", description=_doc(target))
        for name, (target, dist) in _entry_points().items():
            if name in self._infos and self._infos[name].target != target:
                raise BadVerifier(f"{dist} registers verifier {name!r} ({target}), a built-in name: choose another")
            self._infos[name] = VerifierInfo(
                name=name, target=target, source=f"entry point ({dist})", description=_doc(target)
            )
        for path in paths:
            load_path(path)  # a bad path stops the service at start-up, not at the first request
            self._infos[path] = VerifierInfo(
                name=path, target=path, source="settings (reward.verifier_paths)", description=_doc(path)
            )

    def names(self) -> list[str]:
        return sorted(self._infos)

    def infos(self) -> list[VerifierInfo]:
        return [self._infos[name] for name in self.names()]

    def check(self, name: str) -> str:
        if name not in self._infos:
            raise UnknownVerifier(name, self._infos)
        return name


def load_path(path: str) -> VerifierFn:
    """The function at ``module:function`` (``function`` may be dotted: ``module:Class.method``)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise BadVerifier(f"verifier path {path!r}: expected 'module:function'")
    try:
        target = importlib.import_module(module_name)
    except ImportError as exc:
        raise BadVerifier(f"verifier path {path!r}: cannot import {module_name!r} ({exc})") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise BadVerifier(f"verifier path {path!r}: {module_name!r} has no {attr!r}") from None
    if not callable(target):
        raise BadVerifier(f"verifier path {path!r} is not a function")
    try:
        inspect.signature(target).bind("response", "reference", VerifierOptions())
    except TypeError as exc:
        raise BadVerifier(f"verifier {path!r} does not take (response, reference, options): {exc}") from None
    except ValueError:
        pass  # no signature to read (a builtin): calling it will tell
    return target


@functools.cache
def resolve(name: str) -> Callable[[str, str, VerifierOptions], Verdict]:
    """The verifier called ``name`` (an entry point, a built-in or a ``module:function`` path), its
    score made a Verdict. Names are checked by the service before they reach a verifier process."""
    if name in builtin.BUILTIN:
        fn: VerifierFn = builtin.BUILTIN[name]
    elif ":" in name:
        fn = load_path(name)
    else:
        points = _entry_points()
        if name not in points:
            raise UnknownVerifier(name, [*builtin.BUILTIN, *points])
        fn = load_path(points[name][0])

    def verify(response: str, reference: str, options: VerifierOptions) -> Verdict:
        return as_verdict(fn(response, reference, options), name)

    return verify


def as_verdict(score: Score, name: str) -> Verdict:
    if isinstance(score, Verdict):
        return score
    if isinstance(score, bool):
        return Verdict(correct=score, reward=float(score))
    if isinstance(score, (int, float)):
        return Verdict(correct=score >= 1.0, reward=float(score))
    raise TypeError(f"verifier {name!r} returned {type(score).__name__}, not a Verdict, bool or float")


def _doc(target: str) -> str | None:
    """The first line of the function's docstring; None for one that cannot be loaded (its requests
    then end as errors naming why)."""
    try:
        fn = load_path(target)
    except BadVerifier:
        return None
    doc = inspect.getdoc(fn)
    return doc.splitlines()[0] if doc else None
