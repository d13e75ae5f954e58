"""Kubernetes and compose files: they build, they validate against the published schemas, and the
pieces refer to each other correctly (selectors, ports, names, volumes, GPUs)."""

from __future__ import annotations

import functools
import json
import shutil
from importlib import resources as importlib_resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.helpers.deploy import (
    COMPOSE_VARIANTS,
    DEPLOY,
    IMAGE,
    OVERLAYS,
    REPO,
    SERVICES,
    compose_files,
    deploy_checkout,
    find,
    interpolate,
    k8s_manifests,
    kustomize,
    one,
    require,
    run,
    tool,
    workloads,
)

# The oldest Kubernetes release these manifests promise to work on, and the newest the validator knows.
K8S_VERSIONS = ("1.29.0", None)


def kubernetes_validate():
    return require("kubernetes_validate")


# ---- Kubernetes: schema --------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_built_manifest_validates_against_the_kubernetes_schemas(overlay):
    kv = kubernetes_validate()
    versions = [v or kv.latest_version() for v in K8S_VERSIONS]
    for resource in k8s_manifests()[overlay]:
        for version in versions:
            try:
                kv.validate(resource, version, strict=True)
            except kv.ValidationError as exc:
                where = "/".join(str(p) for p in exc.path)
                pytest.fail(f"{overlay}: {resource['kind']}/{resource['metadata']['name']} at {where}: {exc.message}")


def test_the_validator_rejects_an_unknown_field():
    # Proves the schema check above is live: strict mode refuses a misspelt field.
    kv = kubernetes_validate()
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"selectr": {"a": "b"}}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, kv.latest_version(), strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_holds_the_whole_system_in_its_namespace(overlay):
    resources = k8s_manifests()[overlay]
    kinds = {(r["kind"], r["metadata"]["name"]) for r in resources}
    expected = {
        ("Namespace", "prefix-rft"),
        ("StatefulSet", "redis"),
        ("Service", "redis"),
        ("Deployment", "reward"),
        ("Service", "reward"),
        ("HorizontalPodAutoscaler", "reward"),
        ("Deployment", "rollout"),
        ("Service", "rollout"),
        ("HorizontalPodAutoscaler", "rollout"),
        ("PodDisruptionBudget", "rollout"),
        ("StatefulSet", "learner"),
        ("Service", "learner"),
    }
    assert expected <= kinds
    assert len(find(resources, "ConfigMap")) == 1 and len(find(resources, "Secret")) == 1
    for resource in resources:
        if resource["kind"] != "Namespace":
            assert resource["metadata"].get("namespace") == "prefix-rft", resource["metadata"]["name"]
        assert resource["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "prefix-rft", (
            resource["kind"],
            resource["metadata"]["name"],
        )


def test_there_is_one_base_and_two_overlays():
    assert sorted(p.name for p in (DEPLOY / "k8s" / "overlays").iterdir()) == sorted(OVERLAYS)
    for overlay in OVERLAYS:
        kustomization = yaml.safe_load((DEPLOY / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text())
        assert "../../base" in kustomization["resources"]


def test_base_alone_needs_an_overlay_for_its_image_tag():
    # The base names the image without a tag; each overlay picks the engine build.
    for workload in workloads(kustomize(deploy_checkout() / "deploy" / "k8s" / "base")):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            if container["name"] in SERVICES:
                assert container["image"] == IMAGE


# ---- Kubernetes: references between resources -------------------------------------------------


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_pods_and_reach_a_declared_port(overlay):
    resources = k8s_manifests()[overlay]
    for service in find(resources, "Service"):
        matched = [w for w in workloads(resources) if selects(service["spec"]["selector"], pod_labels(w))]
        assert len(matched) == 1, f"Service/{service['metadata']['name']} selects {len(matched)} workloads"
        ports = {
            p.get("name"): p["containerPort"]
            for c in matched[0]["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            resolved = ports.get(target) if isinstance(target, str) else target
            assert resolved == port["port"], f"Service/{service['metadata']['name']} port {port}: pods expose {ports}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_stateful_sets_are_governed_by_their_headless_service(overlay):
    resources = k8s_manifests()[overlay]
    for stateful in find(resources, "StatefulSet"):
        service = one(resources, "Service", stateful["spec"]["serviceName"])
        assert service["spec"].get("clusterIP") == "None"
        assert stateful["spec"]["replicas"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscalers_and_the_disruption_budget_target_real_workloads(overlay):
    resources = k8s_manifests()[overlay]
    for hpa in find(resources, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = one(resources, ref["kind"], ref["name"])
        # A replicas field in the Deployment would fight the autoscaler on every re-apply.
        assert "replicas" not in target["spec"], ref["name"]
        assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Resource":
                name = metric["resource"]["name"]
                for container in target["spec"]["template"]["spec"]["containers"]:
                    # Utilization is relative to the request: without one the HPA cannot compute it.
                    assert name in container["resources"]["requests"], (ref["name"], container["name"])
    pdb = one(resources, "PodDisruptionBudget", "rollout")
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(one(resources, "Deployment", "rollout")))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_volumes_config_maps_and_secrets_resolve(overlay):
    resources = k8s_manifests()[overlay]
    config_maps = {r["metadata"]["name"]: r.get("data", {}) for r in find(resources, "ConfigMap")}
    secrets = {r["metadata"]["name"]: r.get("data", {}) for r in find(resources, "Secret")}
    claims = {r["metadata"]["name"] for r in find(resources, "PersistentVolumeClaim")}
    for workload in workloads(resources):
        spec = workload["spec"]["template"]["spec"]
        templates = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for volume in volumes.values():
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in templates, (workload["metadata"]["name"], mount)
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets.get(ref["name"], {}), (workload["metadata"]["name"], env["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_non_root_with_requests_and_limits(overlay):
    for workload in workloads(k8s_manifests()[overlay]):
        spec = workload["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"]:
            resources = container["resources"]
            for kind in ("cpu", "memory"):
                assert kind in resources["requests"] and kind in resources["limits"], (
                    workload["metadata"]["name"],
                    kind,
                )
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rollout_probes_use_readyz_and_healthz(overlay):
    container = one(k8s_manifests()[overlay], "Deployment", "rollout")["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_and_learner_keep_their_state_on_volumes(overlay):
    resources = k8s_manifests()[overlay]
    redis = one(resources, "StatefulSet", "redis")
    container = redis["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/data"]
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == container["volumeMounts"][0]["name"]

    learner = one(resources, "StatefulSet", "learner")
    mounts = {m["name"]: m["mountPath"] for m in learner["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts[learner["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]] == "/var/lib/prefix-rft"


def gpus(container: dict) -> int:
    limits = container["resources"]["limits"]
    return int(limits.get("nvidia.com/gpu", 0))


def test_gpu_overlay_gives_rollout_and_learner_a_gpu_and_the_cpu_overlay_none():
    for overlay, expected in (("cpu", 0), ("gpu", 1)):
        resources = k8s_manifests()[overlay]
        for kind, name in (("Deployment", "rollout"), ("StatefulSet", "learner")):
            spec = one(resources, kind, name)["spec"]["template"]["spec"]
            assert gpus(spec["containers"][0]) == expected, (overlay, name)
            assert spec["containers"][0]["image"] == f"{IMAGE}:{overlay}"
        reward = one(resources, "Deployment", "reward")["spec"]["template"]["spec"]["containers"][0]
        assert gpus(reward) == 0 and reward["image"] == f"{IMAGE}:{overlay}"


def test_gpu_overlay_mounts_the_assets_volume_read_only():
    resources = k8s_manifests()["gpu"]
    assert "ReadOnlyMany" in one(resources, "PersistentVolumeClaim", "assets")["spec"]["accessModes"]
    for kind, name in (("Deployment", "rollout"), ("StatefulSet", "learner")):
        spec = one(resources, kind, name)["spec"]["template"]["spec"]
        mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "assets")
        assert mount == {"name": "assets", "mountPath": "/assets", "readOnly": True}


def test_gpu_overlay_config_is_the_paper_config_byte_for_byte():
    paper = (REPO / "configs" / "paper-gpu.yaml").read_text()
    assert (DEPLOY / "k8s" / "overlays" / "gpu" / "paper-gpu.yaml").read_text() == paper, (
        "deploy/k8s/overlays/gpu/paper-gpu.yaml must be a copy of configs/paper-gpu.yaml"
    )
    (config_map,) = find(k8s_manifests()["gpu"], "ConfigMap")
    assert config_map["data"]["config.yaml"] == paper
    (config_map,) = find(k8s_manifests()["cpu"], "ConfigMap")
    assert config_map["data"]["config.yaml"] == (DEPLOY / "k8s" / "base" / "config.yaml").read_text()


def test_external_redis_component_removes_the_in_cluster_redis():
    variant = deploy_checkout() / "deploy" / "k8s" / "external"
    variant.mkdir()
    variant.joinpath("kustomization.yaml").write_text(
        "resources: [../overlays/cpu]\ncomponents: [../components/external-redis]\n"
    )
    resources = kustomize(variant)
    assert not find(resources, "StatefulSet", "redis") and not find(resources, "Service", "redis")
    assert find(resources, "StatefulSet", "learner")


def test_kustomize_refuses_to_build_without_the_secrets(tmp_path):
    # A fresh checkout has no secret.env: the build stops with the file's name instead of
    # deploying empty or default credentials.
    shutil.copytree(DEPLOY / "k8s", tmp_path / "k8s", ignore=shutil.ignore_patterns("secret.env"))
    result = run([tool("kubectl"), "kustomize", str(tmp_path / "k8s" / "overlays" / "cpu")])
    assert result.returncode != 0 and "secret.env" in result.stderr


# ---- compose ------------------------------------------------------------------------------------


def compose_schema() -> dict:
    require("check_jsonschema")
    path = importlib_resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(path.read_text())


def validate_compose(model: dict) -> None:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(model), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


@pytest.mark.parametrize("name", ["compose.yaml", "compose.gpu.yaml"])
def test_each_compose_file_validates_against_the_compose_specification(name):
    raw = yaml.safe_load((DEPLOY / "compose" / name).read_text())
    validate_compose(interpolate(raw, {"PREFIX_RFT_ASSETS": "/srv/prefix-rft"}))


@pytest.mark.parametrize("variant", COMPOSE_VARIANTS)
def test_merged_compose_model_validates_against_the_compose_specification(variant):
    validate_compose(compose_files()[variant])


def test_the_schema_check_is_live():
    with pytest.raises(AssertionError, match="restartt|Additional properties"):
        validate_compose({"services": {"x": {"image": "a", "restartt": "always"}}})


def test_compose_starts_redis_and_the_three_services():
    assert set(compose_files()["cpu"]["services"]) == {"redis", *SERVICES}
    assert set(compose_files()["gpu"]["services"]) == {"redis", *SERVICES}


def test_redis_has_aof_persistence_and_a_password():
    redis = compose_files()["cpu"]["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    acl = command[command.index("--aclfile") + 1]
    assert acl == f"/run/secrets/{redis['secrets'][0]}"
    source = Path(compose_files()["cpu"]["secrets"][redis["secrets"][0]]["file"])
    assert "user default on >" in (deploy_checkout() / "deploy" / "compose" / source).read_text()
    assert (
        any(v.startswith("redis-data:") for v in redis["volumes"]) and "redis-data" in compose_files()["cpu"]["volumes"]
    )


def test_rollout_scales_without_collisions():
    for model in compose_files().values():
        rollout = model["services"]["rollout"]
        # --scale rollout=N: no fixed name, host name or host port that two replicas would share.
        assert "container_name" not in rollout and "hostname" not in rollout
        for port in rollout.get("ports", []):
            host_part = port.rsplit(":", 1)[0] if isinstance(port, str) else str(port.get("published", ""))
            assert host_part.split(":")[-1] == "", f"fixed host port {port!r} stops --scale rollout=N"
        assert "{hostname}" in rollout["environment"]["PRFT_ROLLOUT__PUBLIC_URL"]


def test_every_secret_file_compose_names_is_made_by_make_secrets():
    for variant, model in compose_files().items():
        for name, secret in model["secrets"].items():
            path = deploy_checkout() / "deploy" / "compose" / secret["file"]
            assert path.is_file() and path.read_text().strip(), (variant, name)
        for service in model["services"].values():
            for secret in service.get("secrets", []):
                assert secret in model["secrets"]


def test_gpu_override_reserves_gpus_and_builds_the_cuda_image():
    services = compose_files()["gpu"]["services"]
    for name in ("rollout", "learner"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    for name in SERVICES:
        assert services[name]["image"] == f"{IMAGE}:gpu"
        assert services[name]["build"]["args"]["EXTRA"] == "gpu"
    for name in SERVICES:
        assert compose_files()["cpu"]["services"][name]["image"] == f"{IMAGE}:cpu"
        assert "deploy" not in compose_files()["cpu"]["services"][name]


def test_compose_builds_the_image_from_the_dockerfile():
    for model in compose_files().values():
        for name in SERVICES:
            build = model["services"][name]["build"]
            assert (DEPLOY / "compose" / build["context"] / build["dockerfile"]).resolve() == (
                DEPLOY / "docker" / "Dockerfile"
            )


# ---- Kubernetes: the multi-node learner component ----------------------------------------------


@functools.cache
def multinode_manifests() -> list[dict]:
    """The GPU overlay with the multi-node learner component, as a user's kustomization adds it."""
    variant = deploy_checkout() / "deploy" / "k8s" / "multinode"
    variant.mkdir(exist_ok=True)
    variant.joinpath("kustomization.yaml").write_text(
        "resources: [../overlays/gpu]\ncomponents: [../components/multinode-learner]\n"
    )
    return kustomize(variant)


def test_multinode_learner_validates_against_the_kubernetes_schemas():
    kv = kubernetes_validate()
    for resource in multinode_manifests():
        for version in [v or kv.latest_version() for v in K8S_VERSIONS]:
            try:
                kv.validate(resource, version, strict=True)
            except kv.ValidationError as exc:
                where = "/".join(str(p) for p in exc.path)
                pytest.fail(f"{resource['kind']}/{resource['metadata']['name']} at {where}: {exc.message}")
        if resource["kind"] != "Namespace":
            assert resource["metadata"].get("namespace") == "prefix-rft", resource["metadata"]["name"]
        assert resource["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "prefix-rft"


def _flags(args: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)


def test_multinode_learner_ranks_meet_through_a_headless_service():
    resources = multinode_manifests()
    learner = one(resources, "StatefulSet", "learner")
    spec = learner["spec"]
    container = spec["template"]["spec"]["containers"][0]
    flags = _flags(container["args"])
    # One torchrun node per pod, all started at once (torchrun waits for every node).
    assert int(flags["nnodes"]) == spec["replicas"] > 1
    assert spec["podManagementPolicy"] == "Parallel"
    assert int(flags["nproc-per-node"]) == gpus(container)
    # Node rank = the pod's ordinal, so global rank 0 is always on learner-0.
    assert flags["node-rank"] == "$(NODE_RANK)"
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    # Rendezvous at learner-0 through the governing headless Service, on a port the pods declare,
    # resolvable before any pod is ready.
    governing = one(resources, "Service", spec["serviceName"])
    assert governing["spec"]["clusterIP"] == "None" and governing["spec"]["publishNotReadyAddresses"] is True
    assert selects(governing["spec"]["selector"], pod_labels(learner))
    assert flags["master-addr"] == f"learner-0.{spec['serviceName']}"
    declared = {p["name"]: p["containerPort"] for p in container["ports"]}
    (port,) = governing["spec"]["ports"]
    assert declared[port["targetPort"]] == port["port"] == int(flags["master-port"])


def test_multinode_learner_serves_http_from_rank_0_only():
    resources = multinode_manifests()
    learner = one(resources, "StatefulSet", "learner")
    container = learner["spec"]["template"]["spec"]["containers"][0]
    http = one(resources, "Service", "learner")
    selector = http["spec"]["selector"]
    assert selector.pop("statefulset.kubernetes.io/pod-name") == "learner-0"
    assert selects(selector, pod_labels(learner))
    # Pods other than learner-0 answer no HTTP: one template for all, so no HTTP probe at all.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe not in container, probe
    # torchrun runs the same `prefix-rft learner` the single-pod learner runs.
    assert container["command"][-1] == "torchrun"
    argv = container["args"][container["args"].index("--no-python") + 1 :]
    assert argv[:2] == ["prefix-rft", "learner"]
    from services.learner.entry import build_parser
    from tests.helpers.settings_paths import env_name_error

    # `prefix-rft learner` hands its arguments to the learner's own parser.
    options = set(build_parser()._option_string_actions)
    assert all(word in options for word in argv[2:] if word.startswith("-")), argv
    errors = [e for e in (env_name_error("learner", e["name"]) for e in container["env"]) if e]
    assert not errors, errors


def test_multinode_learner_shares_one_run_directory():
    # Every rank writes its DeepSpeed files into the same checkpoint and reads the commit marker.
    resources = multinode_manifests()
    learner = one(resources, "StatefulSet", "learner")
    assert "volumeClaimTemplates" not in learner["spec"]
    volumes = {v["name"]: v for v in learner["spec"]["template"]["spec"]["volumes"]}
    claim = one(resources, "PersistentVolumeClaim", volumes["runs"]["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    mounts = {m["name"]: m["mountPath"] for m in learner["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["runs"] == "/var/lib/prefix-rft"
