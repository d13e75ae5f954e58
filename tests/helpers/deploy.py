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
# What a user builds: an overlay alone, or with the components that put the job on another weight
# transport (deploy/k8s/components/weights-*), added on top of it from a kustomization of their own.
K8S_VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cpu": ("cpu", ()),
    "gpu": ("gpu", ()),
    "cpu-s3": ("cpu", ("weights-s3",)),
    "gpu-s3": ("gpu", ("weights-s3",)),
    "cpu-swarm": ("cpu", ("weights-swarm",)),
}
COMPOSE_VARIANTS = {
    "cpu": ("compose.yaml",),
    "gpu": ("compose.yaml", "compose.gpu.yaml"),
    "cpu-s3": ("compose.yaml", "compose.s3.yaml"),
    "gpu-s3": ("compose.yaml", "compose.gpu.yaml", "compose.s3.yaml"),
    "cpu-swarm": ("compose.yaml", "compose.swarm.yaml"),
}
# Host-side variables compose files require; what a user would export.
COMPOSE_TEST_ENV = {"PREFIX_RFT_ASSETS": "/srv/prefix-rft"}
# ... and what a variant's files ask for on top (compose.s3.yaml's header): the store runs the GPU image.
COMPOSE_VARIANT_ENV = {"gpu-s3": {"PREFIX_RFT_IMAGE": "prefix-rft:gpu", "PREFIX_RFT_EXTRA": "gpu"}}
# Files deploy/make-secrets.sh writes: never copied from the checkout into a test's copy of deploy/.
SECRET_FILES = (
    "secret.env",
    "prft_token",
    "redis_url",
    "redis_users.acl",
    "s3_identities.json",
    "s3_learner_credentials",
    "s3_worker_credentials",
    "s3.env",
    "s3-identities.json",
)
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
    ignore = shutil.ignore_patterns(*SECRET_FILES, "__pycache__")
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


def k8s_variant_dir(name: str) -> Path:
    """The folder `kubectl kustomize` builds for a variant: the overlay itself, or a user's
    kustomization that adds components on top of it."""
    overlay, components = K8S_VARIANTS[name]
    if not components:
        return deploy_checkout() / "deploy" / "k8s" / "overlays" / overlay
    variant = deploy_checkout() / "deploy" / "k8s" / "variants" / name
    variant.mkdir(parents=True, exist_ok=True)
    listed = ", ".join(f"../../components/{c}" for c in components)
    variant.joinpath("kustomization.yaml").write_text(
        f"resources: [../../overlays/{overlay}]\ncomponents: [{listed}]\n"
    )
    return variant


@functools.cache
def k8s_manifests() -> dict[str, list[dict]]:
    """Every variant's resources (K8S_VARIANTS), as `kubectl kustomize` builds them."""
    return {name: kustomize(k8s_variant_dir(name)) for name in K8S_VARIANTS}


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
    """The compose model of each variant: compose.yaml alone (cpu), with the GPU override, and with
    the overrides that put the job on another weight transport (COMPOSE_VARIANTS)."""
    directory = deploy_checkout() / "deploy" / "compose"
    return {
        variant: load_compose(directory, files, COMPOSE_VARIANT_ENV.get(variant))
        for variant, files in COMPOSE_VARIANTS.items()
    }


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
