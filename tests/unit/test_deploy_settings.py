"""The contract between the deployment files and the code: every command a container runs is a
real `prefix-rft` sub-command, every PRFT_ variable a manifest sets is a setting that service
reads, the settings load with exactly the environment and config file the container gets, and the
addresses they produce (ports, URLs, paths) meet the other manifests. A renamed setting, port or
option breaks this test, not a deployment.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import botocore.session
import pytest
import yaml
from pydantic import BaseModel

from shared.settings import ENV_PREFIX, load_settings
from tests.helpers.deploy import (
    COMPOSE_VARIANTS,
    DEPLOY,
    IMAGE,
    K8S_VARIANTS,
    REPO,
    SERVICES,
    compose_files,
    deploy_checkout,
    find,
    k8s_manifests,
    secret_data,
    settings_class,
)
from tests.helpers.settings_paths import (
    COMMON_SECTIONS,
    cli_commands,
    env_name_error,
    setting_path_error,
)

CONFIG_FILES = (REPO / "configs" / "paper-gpu.yaml", DEPLOY / "k8s" / "base" / "config.yaml")
# Stand-ins for what only a running cluster knows.
POD_IP = "10.1.2.3"
HOSTNAME = "prefix-rft-rollout-3"


class _Small(BaseModel):
    class Inner(BaseModel):
        depth: int = 0

    value: int = 0
    inner: Inner = Inner()
    maybe: Inner | None = None
    extra: dict[str, Any] = {}


def test_setting_path_walks_nested_models():
    assert setting_path_error(_Small, ["VALUE"]) is None
    assert setting_path_error(_Small, ["inner", "depth"]) is None
    assert setting_path_error(_Small, ["maybe", "depth"]) is None
    assert setting_path_error(_Small, ["extra", "anything"]) is None
    assert "not a setting" in setting_path_error(_Small, ["valeu"])
    assert "not a setting" in setting_path_error(_Small, ["inner", "dpth"])
    assert "no sub-settings" in setting_path_error(_Small, ["value", "x"])


def test_env_names_are_checked_against_the_service_that_reads_them():
    assert env_name_error("learner", "PRFT_LEARNER__DEEPSPEED__ZERO_STAGE") is None
    assert env_name_error("learner", "PRFT_REDIS__URL") is None and env_name_error("reward", "PRFT_AUTH__TOKEN") is None
    assert env_name_error("learner", "VLLM_HOST_IP") is None
    assert "not a setting" in env_name_error("learner", "PRFT_LEARNER__RUNDIR")
    assert "not read by the learner" in env_name_error("learner", "PRFT_REWARD__PORT")
    assert "not a setting" in env_name_error("reward", "PRFT_REDIS__HOST")


# ---- what each container gets ----------------------------------------------------------------------


@dataclass
class Container:
    where: str
    argv: list[str]
    env: dict[str, str]
    config_text: str | None
    ports: set[int]  # where the deployment expects the service to listen
    health: list[tuple[int, str]]  # (port, path) of every probe or health check
    mounts: set[str] = field(default_factory=set)
    # Secret files as the container sees them (path inside -> the file a test can read), for the
    # variables that name one (AWS_SHARED_CREDENTIALS_FILE).
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def service(self) -> str:
        return self.argv[0]


@dataclass
class Store:
    """The s3 transport's SeaweedFS (compose.s3.yaml, components/weights-s3), as deployed."""

    host: str  # the name the other containers reach it at
    port: int  # the port that name answers on
    args: list[str]  # `weed` arguments
    identities: str  # the -s3.config file: its keys and what each may do


@dataclass
class Deployment:
    name: str
    containers: dict[str, Container]
    redis_host: str
    redis_password: str
    service_ports: dict[str, int]  # service name -> port its Service / compose service name answers on
    store: Store | None = None


def weed_flags(args: list[str]) -> dict[str, str]:
    """`weed mini`'s -name=value arguments."""
    return dict(a[1:].split("=", 1) for a in args if a.startswith("-") and "=" in a)


def _k8s_env(container: dict, secrets: dict, config_maps: dict, pod_name: str) -> dict[str, str]:
    fields = {"status.podIP": POD_IP, "metadata.name": pod_name, "metadata.namespace": "prefix-rft"}
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            # $(VAR) refers to a variable defined above it in the list; $$( escapes.
            value = re.sub(
                r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"]
            )
            env[item["name"]] = value.replace("$$(", "$(")
            continue
        source = item["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[item["name"]] = config_maps[ref["name"]][ref["key"]]
        elif "fieldRef" in source:
            env[item["name"]] = fields[source["fieldRef"]["fieldPath"]]
        elif "resourceFieldRef" in source:
            kind, resource = source["resourceFieldRef"]["resource"].split(".")
            quantity = str(container["resources"][kind][resource])
            # Kubernetes rounds up to whole units (divisor 1).
            env[item["name"]] = str(math.ceil(int(quantity[:-1]) / 1000) if quantity.endswith("m") else int(quantity))
        else:
            raise AssertionError(f"unknown env source {source}")
    return env


def _k8s_config_text(argv: list[str], container: dict, volumes: dict, config_maps: dict) -> str | None:
    if "--config" not in argv:
        return None
    path = argv[argv.index("--config") + 1]
    for mount in container.get("volumeMounts", []):
        if path.startswith(mount["mountPath"].rstrip("/") + "/"):
            volume = volumes[mount["name"]]
            assert "configMap" in volume, f"--config {path} is not on a ConfigMap volume"
            key = path[len(mount["mountPath"].rstrip("/")) + 1 :]
            data = config_maps[volume["configMap"]["name"]]
            assert key in data, f"--config {path}: the ConfigMap has no key {key!r} (it has {sorted(data)})"
            return data[key]
    raise AssertionError(f"--config {path} is not on any mounted volume")


def k8s_deployment(resources: list[dict], overlay: str) -> Deployment:
    secrets = {s["metadata"]["name"]: secret_data(resources, s["metadata"]["name"]) for s in find(resources, "Secret")}
    config_maps = {c["metadata"]["name"]: c.get("data", {}) for c in find(resources, "ConfigMap")}
    containers = {}
    for workload in [r for r in resources if r["kind"] in ("Deployment", "StatefulSet")]:
        spec = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            if not container["image"].split(":")[0] == IMAGE:
                continue
            if "prft-entrypoint" not in container.get("command", ["prft-entrypoint"]):
                continue  # another program the image carries (the s3 store's weed), not a service
            where = f"k8s/{overlay} {workload['kind']}/{workload['metadata']['name']}"
            # `args` only: `command` would replace the image's entrypoint (tini, secrets, prefix-rft).
            assert "command" not in container, f"{where}: set args, not command"
            argv = container["args"]
            named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            health = []
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in container and "httpGet" in container[probe]:
                    get = container[probe]["httpGet"]
                    health.append((named.get(get["port"], get["port"]), get["path"]))
            containers[argv[0]] = Container(
                where=where,
                argv=argv,
                env=_k8s_env(container, secrets, config_maps, f"{workload['metadata']['name']}-7d9f-x2"),
                config_text=_k8s_config_text(argv, container, volumes, config_maps),
                ports=set(named.values()),
                health=health,
                mounts={m["mountPath"] for m in container.get("volumeMounts", [])},
            )
    redis = next(r for r in resources if r["kind"] == "StatefulSet" and r["metadata"]["name"] == "redis")
    redis_container = redis["spec"]["template"]["spec"]["containers"][0]
    redis_env = _k8s_env(redis_container, secrets, config_maps, "redis-0")
    service_ports = {s["metadata"]["name"]: s["spec"]["ports"][0]["port"] for s in find(resources, "Service")}
    return Deployment(
        f"k8s-{overlay}", containers, "redis", redis_env["REDIS_PASSWORD"], service_ports,
        _k8s_store(resources, secrets, service_ports),
    )


def _k8s_store(resources: list[dict], secrets: dict, service_ports: dict[str, int]) -> Store | None:
    found = [r for r in resources if r["kind"] == "StatefulSet" and r["metadata"]["name"] == "seaweedfs"]
    if not found:
        return None
    spec = found[0]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    config = weed_flags(container["args"])["s3.config"]
    mount = next(m for m in container["volumeMounts"] if config.startswith(m["mountPath"].rstrip("/") + "/"))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])["secret"]
    path = config[len(mount["mountPath"].rstrip("/")) + 1 :]
    key = next((i["key"] for i in volume.get("items", []) if i["path"] == path), path)
    return Store("seaweedfs", service_ports["seaweedfs"], container["args"], secrets[volume["secretName"]][key])


def compose_deployment(model: dict, directory: Path, variant: str) -> Deployment:
    secret_files = {name: directory / s["file"] for name, s in model["secrets"].items()}
    containers = {}
    service_ports: dict[str, int] = {}
    for name, service in model["services"].items():
        if not service.get("image", "").startswith(IMAGE) or "entrypoint" in service:
            continue  # another image, or another program the image carries (the s3 store's weed)
        where = f"compose/{variant} {name}"
        environment = service.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        env = {}
        for key, value in environment.items():
            value = str(value)
            if key.endswith("_FILE") and key.startswith("PRFT_"):
                # What deploy/docker/entrypoint.sh does with a secret file.
                secret = value.removeprefix("/run/secrets/")
                assert secret in service.get("secrets", []), f"{where}: {key} names secret {secret!r} not given to it"
                key, value = key[: -len("_FILE")], secret_files[secret].read_text().strip()
            env[key] = value.replace("{hostname}", HOSTNAME)
        argv = service["command"]
        config_text = None
        mounts = set()
        for volume in service.get("volumes", []):
            target = volume["target"] if isinstance(volume, dict) else volume.split(":")[1]
            mounts.add(target)
            if "--config" in argv and target == argv[argv.index("--config") + 1]:
                source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
                config_text = (directory / source).read_text()
        if "--config" in argv:
            assert config_text is not None, f"{where}: --config {argv[argv.index('--config') + 1]} is not mounted"
        test = service["healthcheck"]["test"]
        url = urlsplit(next(word for word in test if word.startswith("http")))
        published = {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in service.get("ports", [])}
        # `expose`: ports the other containers use that are not published on the host (the swarm's).
        exposed = {int(p) for p in service.get("expose", [])}
        files = {f"/run/secrets/{secret}": secret_files[secret] for secret in service.get("secrets", [])}
        containers[argv[0]] = Container(
            where, argv, env, config_text, (published or {url.port}) | exposed, [(url.port, url.path)], mounts, files
        )
        # Compose services answer on their container port under their service name.
        service_ports[argv[0]] = next(iter(published or {url.port}))
    acl = secret_files[model["services"]["redis"]["secrets"][0]].read_text()
    password = re.search(r"user default on >(\S+)", acl).group(1)
    store = None
    if "seaweedfs" in model["services"]:
        service = model["services"]["seaweedfs"]
        secret = weed_flags(service["command"])["s3.config"].removeprefix("/run/secrets/")
        assert secret in service["secrets"], f"compose/{variant} seaweedfs: -s3.config names secret {secret!r}"
        (port,) = service["expose"]
        store = Store("seaweedfs", int(port), service["command"], secret_files[secret].read_text())
    return Deployment(f"compose-{variant}", containers, "redis", password, service_ports, store)


@functools.cache
def deployments() -> dict[str, Deployment]:
    """Every deployment variant, each service as its container gets it."""
    found = {f"k8s-{v}": k8s_deployment(k8s_manifests()[v], v) for v in K8S_VARIANTS}
    directory = deploy_checkout() / "deploy" / "compose"
    found.update({f"compose-{v}": compose_deployment(compose_files()[v], directory, v) for v in COMPOSE_VARIANTS})
    return found


DEPLOYMENTS = [f"k8s-{v}" for v in K8S_VARIANTS] + [f"compose-{v}" for v in COMPOSE_VARIANTS]
S3_DEPLOYMENTS = [d for d in DEPLOYMENTS if d.endswith("-s3")]
SWARM_DEPLOYMENTS = [d for d in DEPLOYMENTS if d.endswith("-swarm")]


def cases() -> list:
    return [pytest.param(d, s, id=f"{d}-{s}") for d in DEPLOYMENTS for s in SERVICES]


# ---- the checks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_each_service_runs_once_per_deployment(deployment):
    assert set(deployments()[deployment].containers) == set(SERVICES)


@pytest.mark.parametrize(("deployment", "service"), cases())
def test_container_runs_a_real_prefix_rft_subcommand(deployment, service):
    container = deployments()[deployment].containers[service]
    commands = cli_commands()
    assert container.service in commands, (
        f"{container.where}: `prefix-rft {container.service}` is not a sub-command (there: {sorted(commands)})"
    )
    # The sub-command hands its arguments to the service's own parser (services/<svc>/entry.py).
    parser = importlib.import_module(f"services.{container.service}.entry").build_parser()
    options = set(parser._option_string_actions)
    for word in container.argv[1:]:
        if word.startswith("-"):
            assert word in options, (
                f"{container.where}: `prefix-rft {service}` has no option {word} (it has {sorted(options)})"
            )


@pytest.mark.parametrize(("deployment", "service"), cases())
def test_every_prft_variable_is_a_setting_the_service_reads(deployment, service):
    container = deployments()[deployment].containers[service]
    errors = [e for e in (env_name_error(service, name) for name in container.env) if e]
    assert not errors, f"{container.where}:\n" + "\n".join(errors)


def load_as_container(container: Container, tmp_path: Path, monkeypatch) -> Any:
    """The service's settings exactly as the container builds them: its env and its --config file."""
    for name in list(__import__("os").environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in container.env.items():
        monkeypatch.setenv(name, value)
    config = None
    if container.config_text is not None:
        config = tmp_path / "config.yaml"
        config.write_text(container.config_text)
    return load_settings(settings_class(container.service), config)


@pytest.mark.parametrize(("deployment", "service"), cases())
def test_settings_load_and_listen_where_the_deployment_looks(deployment, service, tmp_path, monkeypatch):
    container = deployments()[deployment].containers[service]
    settings = load_as_container(container, tmp_path, monkeypatch)
    assert settings.host == "0.0.0.0", f"{container.where}: listens on {settings.host}, unreachable from other pods"
    assert settings.port in container.ports, (
        f"{container.where}: listens on {settings.port}, declared {container.ports}"
    )
    for port, path in container.health:
        assert port == settings.port, f"{container.where}: probe {path} on port {port}, service on {settings.port}"
    paths = {path for _, path in container.health}
    assert "/healthz" in paths or "/readyz" in paths


@pytest.mark.parametrize(("deployment", "service"), cases())
def test_every_service_shares_the_redis_and_the_token(deployment, service, tmp_path, monkeypatch):
    plan = deployments()[deployment]
    settings = load_as_container(plan.containers[service], tmp_path, monkeypatch)
    url = urlsplit(settings.redis.url)
    assert (url.hostname, url.port, url.password) == (plan.redis_host, 6379, plan.redis_password)
    token = settings.auth.token.get_secret_value()
    assert len(token) >= 32, f"{plan.containers[service].where}: weight pushes need the shared token"
    others = {c.env.get("PRFT_AUTH__TOKEN") for c in plan.containers.values()}
    assert others == {token}


def url_target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_rollout_registers_its_own_address_and_finds_the_reward_service(deployment, tmp_path, monkeypatch):
    plan = deployments()[deployment]
    rollout = plan.containers["rollout"]
    settings = load_as_container(rollout, tmp_path, monkeypatch)
    public = getattr(settings, "public_url", None)
    assert public, f"{rollout.where}: the worker must register a reachable URL (public_url) for the learner to find it"
    host, port = url_target(public)
    # Its own address, not a Service name: the learner pushes weights to each worker.
    assert host in (POD_IP, HOSTNAME) and port == settings.port, f"{rollout.where}: registers {public}"
    worker_id = getattr(settings, "worker_id", None)
    if worker_id is not None:
        assert "rollout" in worker_id, f"{rollout.where}: worker_id {worker_id!r} is not per replica"
    reward = load_as_container(plan.containers["reward"], tmp_path, monkeypatch)
    assert url_target(settings.reward_url) == ("reward", reward.port) and plan.service_ports["reward"] == reward.port


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_learner_serves_weights_under_its_service_name_and_keeps_runs_on_a_volume(deployment, tmp_path, monkeypatch):
    plan = deployments()[deployment]
    learner = plan.containers["learner"]
    settings = load_as_container(learner, tmp_path, monkeypatch)
    assert (
        url_target(settings.public_base_url())
        == ("learner", settings.port)
        == ("learner", plan.service_ports["learner"])
    )
    assert any(Path(settings.run_dir).is_relative_to(mount) for mount in learner.mounts), (
        f"{learner.where}: run_dir {settings.run_dir} is not on a volume; checkpoints would die with the container"
    )
    assert "--resume" in learner.argv, f"{learner.where}: a restarted learner must continue from its checkpoint"


@pytest.mark.parametrize(("deployment", "service"), [c for c in cases() if c.values[1] in ("rollout", "learner")])
def test_model_and_data_paths_are_on_mounted_volumes(deployment, service, tmp_path, monkeypatch):
    container = deployments()[deployment].containers[service]
    settings = load_as_container(container, tmp_path, monkeypatch)
    for name in ("model", "data"):
        value = getattr(settings, name, None)
        value = getattr(value, "path", value)  # learner.data is a section: its file is learner.data.path
        if value and Path(value).is_absolute():
            assert any(Path(value).is_relative_to(m) for m in container.mounts), (
                f"{container.where}: {name} {value} is on no mounted volume (mounts: {sorted(container.mounts)})"
            )


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_rollout_and_learner_load_the_same_model(deployment, tmp_path, monkeypatch):
    # The worker generates token ids the learner trains on: one tokenizer, one starting policy.
    plan = deployments()[deployment]
    rollout = load_as_container(plan.containers["rollout"], tmp_path, monkeypatch)
    learner = load_as_container(plan.containers["learner"], tmp_path, monkeypatch)
    assert str(getattr(rollout, "model", None)) == str(learner.model)


# ---- the weight transports ------------------------------------------------------------------------

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_a_swarm_node_would_give_its_peers_a_reachable_address(deployment, tmp_path, monkeypatch):
    # Whatever transport the deployment picks, a job file that names swarm gets nodes other
    # containers can dial: never the loopback address a node falls back on without a public URL.
    plan = deployments()[deployment]
    learner = load_as_container(plan.containers["learner"], tmp_path, monkeypatch)
    rollout = load_as_container(plan.containers["rollout"], tmp_path, monkeypatch)
    for where, swarm, settings in (
        (plan.containers["learner"].where, learner.weights.swarm, learner),
        (plan.containers["rollout"].where, rollout.swarm, rollout),
    ):
        host = swarm.advertised_host(settings.public_base_url())
        assert host not in LOOPBACK, f"{where}: a swarm node would advertise {host}, which no peer reaches"


@pytest.mark.parametrize("deployment", SWARM_DEPLOYMENTS)
def test_swarm_nodes_listen_on_a_declared_port_and_advertise_their_own_address(deployment, tmp_path, monkeypatch):
    plan = deployments()[deployment]
    learner = load_as_container(plan.containers["learner"], tmp_path, monkeypatch)
    rollout = load_as_container(plan.containers["rollout"], tmp_path, monkeypatch)
    assert learner.weights.transport == "swarm", f"{plan.containers['learner'].where}: not on the swarm"
    on_k8s = deployment.startswith("k8s-")
    # In Kubernetes each pod's IP; in compose the name each container answers to on the network:
    # the learner's service name (one container), a worker's host name (one per replica).
    for container, settings, swarm, address in (
        (plan.containers["learner"], learner, learner.weights.swarm, POD_IP if on_k8s else "learner"),
        (plan.containers["rollout"], rollout, rollout.swarm, POD_IP if on_k8s else HOSTNAME),
    ):
        # Fixed and declared, so that a NetworkPolicy or a firewall can let it through (0 would be
        # a free port picked at start, which nothing could declare).
        assert swarm.port > 0 and swarm.port != settings.port, f"{container.where}: swarm port {swarm.port}"
        assert swarm.port in container.ports, (
            f"{container.where}: the swarm listens on {swarm.port}, the container declares {container.ports}"
        )
        assert swarm.advertised_host(settings.public_base_url()) == address, container.where


def aws_view(container: Container, tmp_path: Path, monkeypatch) -> tuple[str | None, str | None, tuple | None]:
    """What the container's S3 client finds: the endpoint and region by the transport's own rule, and
    the keys by botocore's credential chain (variables, then an AWS credentials file), with nothing
    of this machine's own AWS set-up."""
    from shared.weights.transports.s3 import endpoint_from_env, region_from_env

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name, value in container.env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, str(container.files.get(value, value)))
    credentials = botocore.session.Session().get_credentials()
    keys = None if credentials is None else (credentials.access_key, credentials.secret_key)
    return endpoint_from_env(), region_from_env(), keys


@pytest.mark.parametrize("deployment", S3_DEPLOYMENTS)
def test_s3_learner_and_workers_reach_the_store_with_their_own_keys(deployment, tmp_path, monkeypatch):
    plan = deployments()[deployment]
    store = plan.store
    assert store is not None, f"{deployment}: no SeaweedFS store"
    flags = weed_flags(store.args)
    # The S3 gateway listens on -s3.port, 8333 unless given (weed's default).
    assert store.port == int(flags.get("s3.port", 8333)), f"{deployment}: the store answers on {store.port}"
    learner = load_as_container(plan.containers["learner"], tmp_path, monkeypatch)
    assert learner.weights.transport == "s3" and learner.weights.s3.bucket == flags["bucket"], (
        f"{deployment}: the learner uploads to {learner.weights.s3.bucket}, the store makes {flags['bucket']}"
    )
    # The workers read the store's address from the variables only: the learner must use the same.
    assert learner.weights.s3.endpoint_url is None
    identities = {
        credential["accessKey"]: (credential["secretKey"], set(identity["actions"]))
        for identity in json.loads(store.identities)["identities"]
        for credential in identity["credentials"]
    }
    # The learner uploads, lists and deletes versions; a worker only reads.
    for service, rights in (("learner", {"Read", "Write", "List"}), ("rollout", {"Read"})):
        container = plan.containers[service]
        endpoint, region, keys = aws_view(container, tmp_path, monkeypatch)
        assert endpoint and url_target(endpoint) == (store.host, store.port), f"{container.where}: endpoint {endpoint}"
        assert region, f"{container.where}: no AWS_REGION"
        assert keys is not None, f"{container.where}: no S3 credentials"
        assert keys[0] in identities, f"{container.where}: key {keys[0]} is not one the store knows"
        assert identities[keys[0]] == (keys[1], rights), f"{container.where}: wrong secret or rights"


# ---- the job files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name if p.parent.name == "configs" else "k8s-base")
def test_config_files_load_for_every_service(path):
    document = yaml.safe_load(path.read_text())
    unknown = set(document) - {*COMMON_SECTIONS, *SERVICES}
    # A misspelt section would be ignored silently by every service.
    assert not unknown, f"{path}: unknown sections {sorted(unknown)}"
    for service in SERVICES:
        load_settings(settings_class(service), path)


def test_paper_config_is_the_papers_setting(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    path = REPO / "configs" / "paper-gpu.yaml"
    learner = load_settings(settings_class("learner"), path)
    algorithm = learner.algorithm
    assert learner.model.startswith("/assets/models/Qwen2.5-Math-")
    assert str(learner.data.path).startswith("/assets/data/")
    assert (learner.batch_prompts, algorithm.n_rollouts, learner.mini_batch_prompts) == (128, 8, 64)
    assert (algorithm.name.value, algorithm.n_hybrid, algorithm.n_on_policy) == ("prefix-rft", 1, 7)
    assert learner.lr == 1e-6 and learner.total_steps == 500
    assert (learner.sampling.temperature, learner.sampling.max_tokens, learner.agg_constant) == (1.0, 8192, 8192)
    schedule = algorithm.schedule
    assert (schedule.kind, schedule.high, schedule.low_end, schedule.decay_steps) == ("cosine", 0.95, 0.05, 500)
    assert (algorithm.clip_eps_low, algorithm.clip_eps_high, algorithm.dual_clip_c) == (0.2, 0.2, 3.0)
    assert algorithm.entropy_clip and algorithm.entropy_clip_top == 0.2 and algorithm.entropy_coef == 0.001
    assert algorithm.baseline.value == "group" and algorithm.demo_fraction == 1.0
    assert learner.deepspeed.dtype == "bf16"
    rollout = load_settings(settings_class("rollout"), path)
    assert str(rollout.model) == learner.model
    # The worker must accept the learner's requests: response length, and room for the prompt.
    assert rollout.max_tokens >= learner.sampling.max_tokens and rollout.max_n >= algorithm.n_rollouts
    assert rollout.max_model_len >= learner.sampling.max_tokens + 2048
