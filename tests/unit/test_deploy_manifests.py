"""Kubernetes and compose files: they build, they validate against the published schemas, and the
pieces refer to each other correctly (selectors, ports, names, volumes, GPUs)."""

from __future__ import annotations

import functools
import json
import os
import shutil
from importlib import resources as importlib_resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.helpers.deploy import (
    COMPOSE_TEST_ENV,
    COMPOSE_VARIANT_ENV,
    COMPOSE_VARIANTS,
    DEPLOY,
    IMAGE,
    K8S_VARIANTS,
    OVERLAYS,
    REPO,
    SERVICES,
    compose_files,
    deploy_checkout,
    find,
    interpolate,
    k8s_manifests,
    k8s_variant_dir,
    kustomize,
    load_compose,
    one,
    require,
    run,
    secret_data,
    tool,
    workloads,
)

# The oldest Kubernetes release these manifests promise to work on, and the newest the validator knows.
K8S_VERSIONS = ("1.29.0", None)


def kubernetes_validate():
    return require("kubernetes_validate")


# ---- Kubernetes: schema --------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", K8S_VARIANTS)
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


@pytest.mark.parametrize("overlay", K8S_VARIANTS)
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
    assert len(find(resources, "ConfigMap")) == 1
    # The job's Secret once; the s3 component adds the store's keys as a Secret of their own.
    secrets = sorted(r["metadata"]["name"].rsplit("-", 1)[0] for r in find(resources, "Secret"))
    assert secrets == (["prefix-rft-s3", "prefix-rft-secrets"] if "s3" in overlay else ["prefix-rft-secrets"])
    for resource in resources:
        if resource["kind"] != "Namespace":
            assert resource["metadata"].get("namespace") == "prefix-rft", resource["metadata"]["name"]
        assert resource["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "prefix-rft", (
            resource["kind"],
            resource["metadata"]["name"],
        )


def test_there_is_one_base_and_two_overlays():
    assert sorted(p.name for p in (DEPLOY / "k8s" / "overlays").iterdir()) == sorted(OVERLAYS)
    # Every component is built by a test (the variants here, or a test of its own).
    tested = {c for _, components in K8S_VARIANTS.values() for c in components}
    tested |= {"external-redis", "multinode-learner"}
    assert sorted(p.name for p in (DEPLOY / "k8s" / "components").iterdir()) == sorted(tested)
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


@pytest.mark.parametrize("overlay", K8S_VARIANTS)
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


@pytest.mark.parametrize("overlay", K8S_VARIANTS)
def test_stateful_sets_are_governed_by_their_headless_service(overlay):
    resources = k8s_manifests()[overlay]
    for stateful in find(resources, "StatefulSet"):
        service = one(resources, "Service", stateful["spec"]["serviceName"])
        assert service["spec"].get("clusterIP") == "None"
        assert stateful["spec"]["replicas"] == 1


@pytest.mark.parametrize("overlay", K8S_VARIANTS)
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


@pytest.mark.parametrize("overlay", K8S_VARIANTS)
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
            if "secret" in volume:
                keys = secrets.get(volume["secret"]["secretName"])
                assert keys is not None, (workload["metadata"]["name"], volume)
                assert all(item["key"] in keys for item in volume["secret"].get("items", [])), volume
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in templates, (workload["metadata"]["name"], mount)
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets.get(ref["name"], {}), (workload["metadata"]["name"], env["name"])


@pytest.mark.parametrize("overlay", K8S_VARIANTS)
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


@pytest.mark.parametrize("overlay", K8S_VARIANTS)
def test_rollout_probes_use_readyz_and_healthz(overlay):
    container = one(k8s_manifests()[overlay], "Deployment", "rollout")["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("overlay", K8S_VARIANTS)
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


# ---- Kubernetes: the weight transports' components ---------------------------------------------

S3_VARIANTS = [v for v in K8S_VARIANTS if v.endswith("-s3")]


def container_of(resources: list[dict], kind: str, name: str) -> dict:
    containers = one(resources, kind, name)["spec"]["template"]["spec"]["containers"]
    (container,) = [c for c in containers if c["name"] == name]
    return container


def weed_flags(args: list[str]) -> dict[str, str]:
    return dict(a[1:].split("=", 1) for a in args if a.startswith("-") and "=" in a)


@pytest.mark.parametrize("variant", S3_VARIANTS)
def test_s3_store_runs_weed_from_the_learners_image(variant):
    # Nothing to build or push for the store: the overlay's image (cpu, gpu) carries `weed`.
    resources = k8s_manifests()[variant]
    store = container_of(resources, "StatefulSet", "seaweedfs")
    learner = container_of(resources, "StatefulSet", "learner")
    assert store["image"] == learner["image"] == f"{IMAGE}:{K8S_VARIANTS[variant][0]}"
    # Past the image's entrypoint, which runs `prefix-rft`.
    assert store["command"] == ["tini", "--", "weed"] and store["args"][0] == "mini"


@pytest.mark.parametrize("variant", S3_VARIANTS)
def test_s3_store_keeps_its_data_on_its_volume_and_its_keys_in_the_secret(variant):
    resources = k8s_manifests()[variant]
    stateful = one(resources, "StatefulSet", "seaweedfs")
    store = container_of(resources, "StatefulSet", "seaweedfs")
    flags = weed_flags(store["args"])
    mounts = {m["mountPath"]: m["name"] for m in store["volumeMounts"]}
    assert mounts[flags["dir"]] == stateful["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    folder, _, file = flags["s3.config"].rpartition("/")
    volume = next(v for v in stateful["spec"]["template"]["spec"]["volumes"] if v["name"] == mounts[folder])
    (item,) = [i for i in volume["secret"]["items"] if i["path"] == file]
    identities = json.loads(secret_data(resources, volume["secret"]["secretName"])[item["key"]])
    assert sorted(i["name"] for i in identities["identities"]) == ["learner", "worker"]
    # Ready only once the bucket the learner uploads to exists.
    ready = " ".join(store["startupProbe"]["exec"]["command"])
    assert f"/buckets/{flags['bucket']}/" in ready and ":8333/healthz" in ready


@pytest.mark.parametrize("variant", S3_VARIANTS)
def test_only_the_s3_gateway_is_let_into_the_store(variant):
    # The filer, master and volume server answer without keys: the policy lets in the S3 port alone,
    # from this job's learner and workers.
    resources = k8s_manifests()[variant]
    policy = one(resources, "NetworkPolicy", "seaweedfs")["spec"]
    assert selects(policy["podSelector"]["matchLabels"], pod_labels(one(resources, "StatefulSet", "seaweedfs")))
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    (port,) = rule["ports"]
    declared = {p["name"]: p["containerPort"] for p in container_of(resources, "StatefulSet", "seaweedfs")["ports"]}
    (service_port,) = one(resources, "Service", "seaweedfs")["spec"]["ports"]
    assert declared[port["port"]] == service_port["port"] and port["protocol"] == "TCP"
    (source,) = rule["from"]
    assert set(source) == {"podSelector"}, "from this namespace only"
    for kind, name in (("StatefulSet", "learner"), ("Deployment", "rollout")):
        assert selects(source["podSelector"]["matchLabels"], pod_labels(one(resources, kind, name))), name


def test_kustomize_refuses_the_s3_component_without_its_keys(tmp_path):
    # As for the job's secrets: no store runs with default or empty keys.
    built = k8s_variant_dir("cpu-s3")  # a user's kustomization on top of the cpu overlay
    shutil.copytree(deploy_checkout() / "deploy", tmp_path / "deploy", ignore=shutil.ignore_patterns("s3.env"))
    variant = tmp_path / built.relative_to(deploy_checkout())
    assert (variant / "kustomization.yaml").is_file()
    result = run([tool("kubectl"), "kustomize", str(variant)])
    assert result.returncode != 0 and "s3.env" in result.stderr


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
    for variant, model in compose_files().items():
        store = {"seaweedfs"} if variant.endswith("-s3") else set()
        assert set(model["services"]) == {"redis", *SERVICES, *store}, variant


def built_images(model: dict) -> dict[str, list[dict]]:
    """Each image tag the project builds, with every build section that names it."""
    builds: dict[str, list[dict]] = {}
    for name, service in model["services"].items():
        if service.get("image", "").startswith(IMAGE):
            assert "build" in service, f"{name}: {service['image']} has no build: `up --build` would pull it"
            builds.setdefault(service["image"], []).append(service["build"])
    return builds


@pytest.mark.parametrize("variant", COMPOSE_VARIANTS)
def test_services_that_share_an_image_build_it_the_same_way(variant):
    # One tag, two recipes: whichever builds last wins, and another service runs it.
    for image, builds in built_images(compose_files()[variant]).items():
        assert all(b == builds[0] for b in builds), f"{variant}: {image} is built {len(builds)} different ways"


def test_the_gpu_s3_stack_needs_both_image_variables_or_neither():
    # compose.s3.yaml's header: with the GPU override the store runs the GPU image only when both
    # variables are set; with neither it builds the CPU image for itself (a second image, but one
    # recipe per tag); with the image alone it would build prefix-rft:gpu with the CPU engine.
    directory = deploy_checkout() / "deploy" / "compose"
    files = COMPOSE_VARIANTS["gpu-s3"]
    neither = built_images(load_compose(directory, files))
    assert set(neither) == {f"{IMAGE}:gpu", f"{IMAGE}:cpu"}
    assert all(len({json.dumps(b, sort_keys=True) for b in builds}) == 1 for builds in neither.values())
    both = built_images(load_compose(directory, files, COMPOSE_VARIANT_ENV["gpu-s3"]))
    assert set(both) == {f"{IMAGE}:gpu"}
    half = built_images(load_compose(directory, files, {"PREFIX_RFT_IMAGE": f"{IMAGE}:gpu"}))
    assert len({json.dumps(b, sort_keys=True) for b in half[f"{IMAGE}:gpu"]}) == 2


def test_compose_s3_store_runs_weed_with_its_data_on_a_volume_and_its_keys_from_a_secret():
    for variant in [v for v in COMPOSE_VARIANTS if v.endswith("-s3")]:
        model = compose_files()[variant]
        store = model["services"]["seaweedfs"]
        assert store["entrypoint"] == ["tini", "--", "weed"] and store["command"][0] == "mini", variant
        flags = weed_flags(store["command"])
        volume = next(v for v in store["volumes"] if v.split(":")[1] == flags["dir"])
        assert volume.split(":")[0] in model["volumes"], f"{variant}: the store's data is not on a named volume"
        assert flags["s3.config"].removeprefix("/run/secrets/") in store["secrets"]
        # Healthy once the bucket exists, and the learner and the workers start only then.
        check = " ".join(store["healthcheck"]["test"])
        assert f"/buckets/{flags['bucket']}/" in check and ":8333/healthz" in check
        assert store["expose"] == ["8333"]
        for name in ("learner", "rollout"):
            assert model["services"][name]["depends_on"]["seaweedfs"] == {"condition": "service_healthy"}, name


def compose_client() -> list[str] | None:
    """The Go plugin when the docker client has it, else Debian's docker-compose 1.29; None: neither."""
    if shutil.which("docker") and run(["docker", "compose", "version"]).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


@pytest.mark.parametrize("variant", COMPOSE_VARIANTS)
def test_the_compose_client_reads_every_variant_as_these_tests_do(variant):
    # The checks here read the files with tests/helpers/deploy.py's rules; the real client must agree.
    client = compose_client()
    if client is None:
        pytest.skip("no compose client (`docker compose` or docker-compose; `make images` installs one)")
    directory = deploy_checkout() / "deploy" / "compose"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFIX_RFT_", "COMPOSE_"))}
    env.update({**COMPOSE_TEST_ENV, **COMPOSE_VARIANT_ENV.get(variant, {})})
    files = [arg for name in COMPOSE_VARIANTS[variant] for arg in ("-f", name)]
    result = run([*client, *files, "config"], cwd=directory, env=env)
    assert result.returncode == 0, result.stderr
    theirs = yaml.safe_load(result.stdout)["services"]
    ours = compose_files()[variant]["services"]
    assert set(theirs) == set(ours)
    for name, service in ours.items():
        other = theirs[name]
        for key in ("image", "command", "entrypoint"):
            assert other.get(key) == service.get(key), (name, key)
        assert {k: str(v) for k, v in other.get("environment", {}).items()} == {
            k: str(v) for k, v in service.get("environment", {}).items()
        }, name
        sources = sorted(s if isinstance(s, str) else s["source"] for s in other.get("secrets", []))
        assert sources == sorted(service.get("secrets", [])), name
        assert set(other.get("depends_on", {})) == set(service.get("depends_on", {})), name


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
