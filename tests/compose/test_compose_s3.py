"""The s3 weight transport through compose, for real: the stack with compose.s3.yaml (a SeaweedFS
store run from the project's image, the store's keys from deploy/make-secrets.sh) trains the default
job, the learner publishes each version to the store, and a worker applies one it read from there;
the workers' key reads but cannot write. A stack of its own beside the http one
(tests/compose/test_compose_stack.py), brought up only to the learner's first trained version and
torn down: one more start of the stack (94 s from `up` to the first step on a quiet machine, for
the http stack) and its teardown. Not measured yet with the store.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
import yaml

from shared.bus import Keys
from shared.bus.codec import decode_value
from shared.messages import WeightsRecord
from shared.weights.transports.s3 import parse_uri
from tests.helpers.compose_stack import Stack, counter_total, worker_version
from tests.helpers.deploy import prepared_checkout

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1800)]

SERVICES = ("redis", "seaweedfs", "reward", "rollout", "learner")

# Run in the learner's or a worker's container: their S3 client as the transport builds it, with
# the container's own endpoint, region and keys (compose.s3.yaml's AWS_ variables).
STORE_PROBE = """
import sys
from botocore.exceptions import ClientError
from shared.weights.transports.s3 import endpoint_from_env, make_client, region_from_env
client = make_client(endpoint_from_env(), region_from_env(), 30.0, 2)
action, bucket, prefix = sys.argv[1:4]
if action == "list":
    print("\\n".join(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])))
else:
    try:
        client.put_object(Bucket=bucket, Key=prefix + "intruder", Body=b"x")
        print("written")
    except ClientError as exc:
        print(exc.response["Error"]["Code"])
"""


@pytest.fixture(scope="module")
def stack(images, tmp_path_factory):
    stack = Stack(prepared_checkout(tmp_path_factory.mktemp("compose-s3")), ("compose.yaml", "compose.s3.yaml"))
    try:
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", timeout=900, check=False)


def weights_record(stack: Stack) -> WeightsRecord | None:
    """The learner's record of its newest version, read inside the redis container."""
    job = yaml.safe_load((stack.root / "deploy" / "k8s" / "base" / "config.yaml").read_text())
    password = urlsplit((stack.compose_dir / "secrets" / "redis_url").read_text().strip()).password
    result = stack.compose(
        "exec", "-T", "redis", "redis-cli", "--user", "default", "--pass", password, "--no-auth-warning",
        "get", Keys(job["redis"]["namespace"]).weights,
    )
    raw = result.stdout.strip()
    return decode_value(WeightsRecord, raw) if raw else None


def published_after_a_step(stack: Stack) -> WeightsRecord | None:
    record = weights_record(stack)
    return record if record is not None and record.version >= 1 else None


def store_probe(stack: Stack, service: str, action: str, bucket: str, prefix: str) -> list[str]:
    result = stack.compose("exec", "-T", service, "python", "-c", STORE_PROBE, action, bucket, prefix)
    return result.stdout.split()


def weight_fetches(url: str) -> float:
    """Weight versions this worker fetched through a transport (its Prometheus counter)."""
    return counter_total(url, "rollout_weight_fetches")


def test_the_s3_stack_comes_up_healthy_with_its_store(stack):
    assert (stack.compose_dir / "secrets" / "s3_identities.json").is_file()
    stack.up_at = time.monotonic()
    stack.compose("up", "-d", "--no-build")
    for service in SERVICES:
        stack.wait_for(lambda s=service: stack.health(s) == ["healthy"], 900, f"{service} healthy")


def test_a_worker_applies_a_version_the_learner_published_to_the_store(stack):
    # Version 0 is published at start; version 1 after the first step, pushed to a worker that is
    # already up, so it is fetched (not loaded at the worker's start).
    record = stack.wait_for(lambda: published_after_a_step(stack), 900, "version 1 published")
    print(f"up -> version {record.version} published: {time.monotonic() - stack.up_at:.0f} s")
    assert record.transport == "s3" and record.manifest.startswith("s3://"), record
    bucket, key = parse_uri(record.manifest)
    folder = key.rpartition("/")[0] + "/"
    # The version is in the store, as the learner's own client lists it.
    assert key in store_probe(stack, "learner", "list", bucket, folder)
    # The worker serves it, fetched through the transport the record names (no fallback to the
    # learner's URL: a version with a manifest is fetched through its transport or not at all).
    rollout = stack.url("rollout", 8000)
    stack.wait_for(lambda: worker_version(rollout) >= record.version, 300, f"the worker on v{record.version}")
    assert weight_fetches(rollout) >= 1
    # The workers' key only reads.
    assert store_probe(stack, "rollout", "put", bucket, folder) == ["AccessDenied"]


def test_teardown_leaves_nothing_behind(stack):
    stack.compose("down", "--volumes", "--remove-orphans", timeout=900)
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}
