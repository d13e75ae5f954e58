"""What the deployment tests share: the tools (kubectl, hadolint), deploy/ built as a user builds
it, the compose rules (interpolation, override merge) the checks need, and each service's settings
class. The rules themselves are tested in tests/unit/test_deploy_tools.py, so a check never passes
because its helper is wrong.
"""

from __future__ import annotations

import atexit
import base64
import functools
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("cpu", "gpu")
COMPOSE_VARIANTS = {"cpu": ("compose.yaml",), "gpu": ("compose.yaml", "compose.gpu.yaml")}
# Host-side variables compose files require; what a user would export.
COMPOSE_TEST_ENV = {"PREFIX_RFT_ASSETS": "/srv/prefix-rft"}
SERVICES = ("reward", "rollout", "learner")
IMAGE = "prefix-rft"


def tool(name: str) -> str:
    """An executable from the dev extra: next to this interpreter first (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"'{name}' not found next to {sys.executable} or on PATH: install the dev extra (make install)")
    return found


def require(module: str):
    """A module from the dev extra; missing, the test fails (a skip would hide an unchecked file)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(f"Python module '{module}' is missing: install the dev extra (make install)")


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)


# ---- deploy/ as a user has it ------------------------------------------------------------------


def prepared_checkout(root: Path) -> Path:
    """A copy of deploy/ and configs/ under ``root`` after ``deploy/make-secrets.sh``, so building
    never writes secrets into the checkout."""
    ignore = shutil.ignore_patterns("secret.env", "prft_token", "redis_url", "redis_users.acl", "__pycache__")
    shutil.copytree(DEPLOY, root / "deploy", ignore=ignore)
    shutil.copytree(REPO / "configs", root / "configs", ignore=ignore)
    result = run(["sh", str(root / "deploy" / "make-secrets.sh")])
    assert result.returncode == 0, result.stderr
    return root


@functools.cache
def deploy_checkout() -> Path:
    """One prepared copy for the whole session (read-only for the tests that share it)."""
    root = Path(tempfile.mkdtemp(prefix="prft-deploy-"))
    atexit.register(shutil.rmtree, root, True)
    return prepared_checkout(root)


def kustomize(path: Path) -> list[dict]:
    result = run([tool("kubectl"), "kustomize", str(path)])
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@functools.cache
def k8s_manifests() -> dict[str, list[dict]]:
    """Every overlay's resources, as `kubectl kustomize` builds them."""
    return {overlay: kustomize(deploy_checkout() / "deploy" / "k8s" / "overlays" / overlay) for overlay in OVERLAYS}


def find(resources: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [r for r in resources if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)]


def one(resources: list[dict], kind: str, name: str) -> dict:
    found = find(resources, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads(resources: list[dict]) -> list[dict]:
    return [r for r in resources if r["kind"] in ("Deployment", "StatefulSet")]


def config_map_data(resources: list[dict], name: str) -> dict[str, str]:
    return one(resources, "ConfigMap", name)["data"]


def secret_data(resources: list[dict], name: str) -> dict[str, str]:
    secret = one(resources, "Secret", name)
    decoded = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    return {**decoded, **secret.get("stringData", {})}


# ---- compose ------------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution: ${V}, ${V:-default}, ${V-default}, ${V:?error}, ${V?error}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        present = name in env and (env[name] != "" or not (op or "").startswith(":"))
        if op in (":-", "-"):
            return env[name] if present else arg
        if op in (":?", "?") and not present:
            raise KeyError(f"compose requires ${name}: {arg}")
        return env.get(name, "")

    return _VARIABLE.sub(substitute, value)


def volume_target(volume: Any) -> str:
    if isinstance(volume, dict):
        return volume["target"]
    parts = volume.split(":")
    return parts[1] if len(parts) > 1 else parts[0]


# Sequences compose merges by a key (the rest are replaced, e.g. command, or appended, e.g. ports).
_MERGE_BY = {"volumes": volume_target, "secrets": lambda s: s if isinstance(s, str) else s["source"]}
_REPLACE = {"command", "entrypoint", "test", "device_ids", "capabilities"}


def merge(base: Any, override: Any, key: str = "") -> Any:
    """docker compose's rule for `-f a.yaml -f b.yaml`, for the keys these files use."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for k, v in override.items():
            merged[k] = merge(base[k], v, k) if k in base else v
        return merged
    if isinstance(base, list) and isinstance(override, list) and key not in _REPLACE:
        if key in _MERGE_BY:
            by_key = {_MERGE_BY[key](item): item for item in base}
            by_key.update({_MERGE_BY[key](item): item for item in override})
            return list(by_key.values())
        return base + [item for item in override if item not in base]
    return override


def load_compose(directory: Path, files: tuple[str, ...], env: dict[str, str] | None = None) -> dict:
    """The compose model `docker compose -f ... config` would see (YAML anchors and merge keys resolved)."""
    env = {**COMPOSE_TEST_ENV, **(env or {})}
    model: dict = {}
    for name in files:
        document = interpolate(yaml.safe_load((directory / name).read_text()), env)
        model = merge(model, document)
    return {k: v for k, v in model.items() if not k.startswith("x-")}


@functools.cache
def compose_files() -> dict[str, dict]:
    """The compose model of each variant: compose.yaml alone (cpu) and with the GPU override."""
    directory = deploy_checkout() / "deploy" / "compose"
    return {variant: load_compose(directory, files) for variant, files in COMPOSE_VARIANTS.items()}


# ---- the settings each service reads ----------------------------------------------------------

SETTINGS_CLASSES = {
    "reward": ("services.reward.settings", "RewardSettings"),
    "rollout": ("services.rollout.settings", "RolloutSettings"),
    "learner": ("services.learner.settings", "LearnerSettings"),
}


def settings_class(service: str) -> type:
    module_name, class_name = SETTINGS_CLASSES[service]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        pytest.fail(f"{module_name} cannot be imported ({exc}): the {service} manifests cannot be checked")
    cls = getattr(module, class_name, None)
    if cls is None:
        pytest.fail(f"{module_name} has no {class_name}: the {service} manifests cannot be checked")
    assert cls.yaml_section == service
    return cls
