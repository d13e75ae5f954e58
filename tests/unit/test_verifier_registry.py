"""Verifiers found by name: the built-ins, entry points of installed packages, module:function paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib  # Python 3.11+, as the project's environment

from services.reward.registry import BadVerifier, UnknownVerifier, VerifierRegistry, as_verdict, load_path, resolve
from services.reward.verifiers import BUILTIN, Verdict, VerifierOptions, verify_math


def test_the_builtins_are_known_by_name():
    registry = VerifierRegistry()
    assert {"math", "gsm8k", "format"} <= set(registry.names())
    infos = {info.name: info for info in registry.infos()}
    assert infos["math"].target == "services.reward.verifiers:verify_math"
    assert resolve("math")(r"\boxed{1/2}", "0.5", VerifierOptions()) == verify_math(r"\boxed{1/2}", "0.5")
    assert set(BUILTIN) == {"math", "gsm8k", "format"}


def test_the_builtins_are_declared_as_entry_points():
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    declared = project["project"]["entry-points"]["prefix_rft.verifiers"]
    assert declared == {name: f"{fn.__module__}:{fn.__qualname__}" for name, fn in BUILTIN.items()}


def test_an_unknown_name_is_refused_naming_the_known_ones():
    with pytest.raises(UnknownVerifier, match="unknown verifier 'nope'; known verifiers: .*format.*gsm8k.*math"):
        VerifierRegistry().check("nope")


def test_a_path_is_known_once_the_settings_list_it():
    path = "services.reward.verifiers:verify_format"
    with pytest.raises(UnknownVerifier):
        VerifierRegistry().check(path)  # a client cannot pick any importable function
    registry = VerifierRegistry([path])
    assert registry.check(path) == path
    assert resolve(path)(r"\boxed{3}", "", VerifierOptions()).extracted == "3"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("no_colon", "expected 'module:function'"),
        ("no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
        ("services.reward.verifiers:nope", "has no 'nope'"),
        ("services.reward.verifiers:__doc__", "is not a function"),
        ("os.path:join", None),  # takes any number of strings: the signature check lets it through
        ("math:sqrt", "does not take"),
        ("json:dumps", "does not take \\(response, reference, options\\)"),
    ],
)
def test_bad_paths_are_refused_at_start_up_with_the_reason(path, reason):
    if reason is None:
        load_path(path)
        return
    with pytest.raises(BadVerifier, match=reason):
        VerifierRegistry([path])


def test_a_score_may_be_a_verdict_a_bool_or_a_float():
    assert as_verdict(True, "v") == Verdict(correct=True, reward=1.0)
    assert as_verdict(0.5, "v") == Verdict(correct=False, reward=0.5)
    assert as_verdict(1.0, "v") == Verdict(correct=True, reward=1.0)
    with pytest.raises(TypeError, match="returned str"):
        as_verdict("yes", "v")
