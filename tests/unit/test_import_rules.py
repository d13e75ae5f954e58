"""The import rules that keep the pieces separable. Each service runs in its own container from the same
image, so a service importing another would drag that one's dependencies and start-up into it; shared/
is what every service imports, so it must not depend on any of them or on the launcher; the launcher
starts services, never the other way round. Tests share helpers through tests/helpers/ or a conftest,
never by importing another test module.

The rules are read from the source with ``ast`` (lazy imports inside functions, relative imports and
``importlib.import_module("...")`` with a literal name count too), so nothing is imported to check them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path) -> Iterator[tuple[int, tuple[str, ...]]]:
    """(line, names) for every import in the file, names being what the import may refer to as absolute
    module names: ``from a import b`` gives ``("a", "a.b")``, since ``b`` may be a module
    (``from services import learner``) or a name in ``a``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, (alias.name,)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            parent = ".".join([*base, node.module] if node.module else base)
            for alias in node.names:
                yield node.lineno, (parent,) if alias.name == "*" else (parent, f"{parent}.{alias.name}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, (node.args[0].value,)


def python_files(root: Path, top: str) -> list[Path]:
    return sorted(p for p in (root / top).rglob("*.py") if "__pycache__" not in p.parts)


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def service_of(name: str) -> str | None:
    """``services.rollout.worker`` -> ``rollout``; the ``services`` package itself belongs to none."""
    parts = name.split(".")
    return parts[1] if parts[0] == "services" and len(parts) > 1 else None


def is_test_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "tests" and (parts[-1].startswith("test_") or parts[-1] == "conftest")


def violations(root: Path) -> dict[str, list[str]]:
    """Every breach of each rule under ``root``, as ``file:line imports module``."""
    found: dict[str, list[str]] = {
        "services import each other": [],
        "shared imports a service or the launcher": [],
        "services import the launcher": [],
        "tests import other test modules": [],
    }

    def report(rule: str, path: Path, line: int, names: tuple[str, ...]) -> None:
        found[rule].append(f"{path.relative_to(root)}:{line} imports {names[-1]}")

    for path in python_files(root, "services"):
        own = service_of(module_name(path, root))
        for line, names in imported_modules(path, root):
            if own is not None and any(service_of(n) not in (None, own) for n in names):
                report("services import each other", path, line, names)
            if any(within(n, "launcher") for n in names):
                report("services import the launcher", path, line, names)
    for path in python_files(root, "shared"):
        for line, names in imported_modules(path, root):
            if any(within(n, "services") or within(n, "launcher") for n in names):
                report("shared imports a service or the launcher", path, line, names)
    for path in python_files(root, "tests"):
        own = module_name(path, root)
        for line, names in imported_modules(path, root):
            if any(n != own and is_test_module(n) for n in names):
                report("tests import other test modules", path, line, names)
    return found


RULES = list(violations(REPO))


@pytest.fixture(scope="module")
def repository() -> dict[str, list[str]]:
    return violations(REPO)


@pytest.mark.parametrize("rule", RULES)
def test_the_repository_keeps_the_rule(repository, rule):
    assert repository[rule] == [], f"{rule}:\n" + "\n".join(repository[rule])


# ---- the checker catches what it is meant to catch ----------------------------------------------

CLEAN = {
    "services/__init__.py": "",
    "services/rollout/__init__.py": "",
    "services/rollout/worker.py": "from services.rollout import engine\nfrom . import gate\nimport shared.bus\n",
    "services/rollout/engine.py": "from shared.api.reward import RewardClient\n",
    "services/rollout/gate.py": "",
    "services/learner/__init__.py": "",
    "services/learner/main.py": "from .window import StalenessWindow\n",
    "shared/__init__.py": "",
    "shared/prefix.py": "import math\nfrom shared import modeling\n",
    "launcher/__init__.py": "",
    "launcher/cli.py": "from services.learner.main import serve\n",
    "tests/__init__.py": "",
    "tests/helpers/__init__.py": "",
    "tests/helpers/rollout.py": "TOKEN = 't'\n",
    "tests/unit/__init__.py": "",
    "tests/unit/test_a.py": "from tests.helpers.rollout import TOKEN\n",
}

BREACHES = [
    ("services import each other", "services/rollout/worker.py", "from services.learner.main import serve\n"),
    ("services import each other", "services/rollout/worker.py", "from services import learner\n"),
    ("services import each other", "services/rollout/worker.py", "from ..learner import main\n"),
    ("services import each other", "services/rollout/gate.py", "def f():\n    import services.learner.main\n"),
    (
        "services import each other",
        "services/rollout/gate.py",
        "import importlib\nimportlib.import_module('services.learner.main')\n",
    ),
    ("services import the launcher", "services/learner/main.py", "from launcher.cli import app\n"),
    ("shared imports a service or the launcher", "shared/prefix.py", "from services.learner import main\n"),
    ("shared imports a service or the launcher", "shared/prefix.py", "import launcher.cli\n"),
    ("tests import other test modules", "tests/unit/test_a.py", "from tests.unit.test_b import X\n"),
    ("tests import other test modules", "tests/helpers/rollout.py", "from tests.unit.test_b import X\n"),
    ("tests import other test modules", "tests/unit/test_a.py", "from tests.unit.conftest import f\n"),
    ("tests import other test modules", "tests/unit/test_a.py", "from .test_b import X\n"),
]


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_tree_that_keeps_the_rules_passes(tmp_path):
    assert violations(tree(tmp_path, CLEAN)) == {rule: [] for rule in RULES}


@pytest.mark.parametrize(("rule", "path", "source"), BREACHES)
def test_each_breach_is_reported_under_its_rule(tmp_path, rule, path, source):
    files = {**CLEAN, path: CLEAN[path] + source}
    found = violations(tree(tmp_path, files))
    assert [r for r, breaches in found.items() if breaches] == [rule]
    assert all(b.startswith(f"{path}:") for b in found[rule])
