"""The rules the deployment tests rely on (compose interpolation and override merge, the prepared
checkout and its secrets), tested here so a deployment check never passes because its helper is wrong.
"""

from __future__ import annotations

import configparser
import json
import re

import pytest

from tests.helpers.deploy import REPO, deploy_checkout, interpolate, merge, prepared_checkout, run, volume_target


def test_interpolate_follows_compose_rules():
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET}-${UNSET:-d}-${EMPTY:-d}-${EMPTY-d}-$${SET}", env) == "x-d-d--${SET}"
    assert interpolate({"a": ["${SET}", 3]}, env) == {"a": ["x", 3]}
    with pytest.raises(KeyError, match="needed"):
        interpolate("${UNSET:?needed}", env)


def test_merge_follows_compose_rules():
    base = {
        "services": {
            "s": {
                "command": ["a", "b"],
                "environment": {"A": "1", "B": "2"},
                "volumes": ["./x:/etc/x:ro", {"type": "volume", "source": "v", "target": "/data"}],
                "ports": ["1:1"],
            }
        }
    }
    override = {
        "services": {
            "s": {
                "command": ["c"],
                "environment": {"B": "3"},
                "volumes": [{"type": "bind", "source": "./y", "target": "/etc/x"}],
                "ports": ["2:2"],
            }
        }
    }
    merged = merge(base, override)["services"]["s"]
    assert merged["command"] == ["c"]
    assert merged["environment"] == {"A": "1", "B": "3"}
    assert sorted(volume_target(v) for v in merged["volumes"]) == ["/data", "/etc/x"]
    assert {"type": "bind", "source": "./y", "target": "/etc/x"} in merged["volumes"]
    assert merged["ports"] == ["1:1", "2:2"]


def test_prepared_checkout_has_every_secret():
    secrets = deploy_checkout() / "deploy" / "compose" / "secrets"
    for name in ("prft_token", "redis_url", "redis_users.acl"):
        assert (secrets / name).read_text().strip(), name
    assert (deploy_checkout() / "deploy" / "k8s" / "base" / "secret.env").is_file()


def test_make_secrets_keeps_existing_secrets_unless_forced(tmp_path):
    root = prepared_checkout(tmp_path)
    token = root / "deploy" / "compose" / "secrets" / "prft_token"
    secret_env = root / "deploy" / "k8s" / "base" / "secret.env"
    before = (token.read_text(), secret_env.read_text())
    assert run(["sh", str(root / "deploy" / "make-secrets.sh")]).returncode == 0
    assert (token.read_text(), secret_env.read_text()) == before
    assert run(["sh", str(root / "deploy" / "make-secrets.sh"), "--force"]).returncode == 0
    assert token.read_text() != before[0] and secret_env.read_text() != before[1]


def test_make_secrets_agree_between_compose_and_kubernetes():
    secrets = deploy_checkout() / "deploy" / "compose" / "secrets"
    k8s = dict(
        line.split("=", 1) for line in (deploy_checkout() / "deploy/k8s/base/secret.env").read_text().splitlines()
    )
    password = k8s["redis-password"]
    assert re.fullmatch(r"[0-9a-f]{64}", password) and re.fullmatch(r"[0-9a-f]{64}", k8s["auth-token"])
    assert k8s["redis-url"] == f"redis://:{password}@redis:6379/0"
    assert secrets.joinpath("redis_url").read_text().strip() == k8s["redis-url"]
    assert secrets.joinpath("prft_token").read_text().strip() == k8s["auth-token"]
    acl = secrets.joinpath("redis_users.acl").read_text().splitlines()
    assert acl[0] == f"user default on >{password} ~* &* +@all"
    # The health-check user can run PING and nothing else.
    assert acl[1] == "user healthcheck on nopass -@all +ping"


def test_make_secrets_gives_the_s3_store_and_its_clients_the_same_keys():
    compose = deploy_checkout() / "deploy" / "compose" / "secrets"
    component = deploy_checkout() / "deploy" / "k8s" / "components" / "weights-s3"
    identities = json.loads(compose.joinpath("s3_identities.json").read_text())
    assert json.loads(component.joinpath("s3-identities.json").read_text()) == identities
    store = {i["name"]: (i["credentials"][0]["accessKey"], i["credentials"][0]["secretKey"])
             for i in identities["identities"]}
    k8s = dict(line.split("=", 1) for line in component.joinpath("s3.env").read_text().splitlines())
    for who, file in (("learner", "s3_learner_credentials"), ("worker", "s3_worker_credentials")):
        credentials = configparser.ConfigParser()
        credentials.read_string(compose.joinpath(file).read_text())
        keys = (credentials["default"]["aws_access_key_id"], credentials["default"]["aws_secret_access_key"])
        assert keys == store[who] == (k8s[f"{who}-access-key"], k8s[f"{who}-secret-key"]), who
        assert re.fullmatch(r"[0-9a-f]{20}", keys[0]) and re.fullmatch(r"[0-9a-f]{40}", keys[1]), who
    assert store["learner"] != store["worker"]


def test_make_secrets_adds_the_s3_keys_beside_secrets_made_before(tmp_path):
    # A checkout whose secrets predate the s3 store: running the script again adds the store's keys
    # and keeps the token and the Redis password the running services use.
    root = prepared_checkout(tmp_path)
    compose = root / "deploy" / "compose" / "secrets"
    component = root / "deploy" / "k8s" / "components" / "weights-s3"
    s3_files = [compose / "s3_identities.json", compose / "s3_learner_credentials",
                compose / "s3_worker_credentials", component / "s3.env", component / "s3-identities.json"]
    for path in s3_files:
        path.unlink()
    kept = [compose / "prft_token", compose / "redis_url", root / "deploy" / "k8s" / "base" / "secret.env"]
    before = [path.read_text() for path in kept]
    assert run(["sh", str(root / "deploy" / "make-secrets.sh")]).returncode == 0
    assert all(path.is_file() for path in s3_files)
    assert [path.read_text() for path in kept] == before


def test_generated_secrets_are_never_committed():
    paths = [
        "deploy/compose/secrets/prft_token",
        "deploy/compose/secrets/redis_url",
        "deploy/compose/secrets/redis_users.acl",
        "deploy/k8s/base/secret.env",
        "deploy/compose/secrets/s3_identities.json",
        "deploy/compose/secrets/s3_learner_credentials",
        "deploy/compose/secrets/s3_worker_credentials",
        "deploy/k8s/components/weights-s3/s3.env",
        "deploy/k8s/components/weights-s3/s3-identities.json",
    ]
    result = run(["git", "check-ignore", "--no-index", *paths], cwd=REPO)
    assert sorted(result.stdout.split()) == sorted(paths)
