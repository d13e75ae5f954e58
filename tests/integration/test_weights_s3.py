"""The ``s3`` weight transport against a real SeaweedFS store that requires keys: the learner uploads a
version once (multipart, parts in parallel) and a receiver gets it back byte-identical in verified
ranged reads; a tampered object is refetched and then refused, never handed over in part; a retired
version is gone from the bucket; a request without the right keys is refused, and a worker is told why.
"""

import asyncio
import logging

import httpx
import pytest
import torch
from safetensors.torch import save_file

from services.learner.weights import Publisher, WeightStore
from services.rollout.weights import WeightsError, fetch_version
from shared.api.rollout import WeightUpdate
from shared.api.weights import WEIGHTS_FILE, weights_url
from shared.bus import Keys, WeightsRecordStore, WorkerRegistry
from shared.modeling import load_model, load_tokenizer
from shared.weights.manifest import MANIFEST_FILE, BucketMismatch, write_manifest
from shared.weights.settings import S3Settings, WeightsSettings
from shared.weights.transport import receive
from shared.weights.transports import open_origin, open_transport
from shared.weights.transports.s3 import S3Error, S3Origin
from tests.helpers.rollout import TOKEN

pytestmark = pytest.mark.integration

LEARNER = "http://learner.test:8002"
MIB = 1 << 20


@pytest.fixture
def aws_env(seaweedfs, monkeypatch):
    """The learner's and the worker's environment: the standard AWS variables for the test store, and
    nothing else of AWS's (no profile file, no instance metadata probe)."""
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return seaweedfs


def _version(folder, version, megabytes=12, bucket_bytes=MIB):
    """A safetensors file of about ``megabytes`` (several multipart parts of 5 MiB) and its manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(version)
    save_file({"w": torch.randn(megabytes * MIB // 4, generator=generator)}, folder / WEIGHTS_FILE)
    write_manifest(folder / WEIGHTS_FILE, version, bucket_bytes)
    return folder


def _origin(store, prefix, **overrides):
    return S3Origin(S3Settings(bucket=store.bucket, prefix=prefix, part_mb=5, upload_concurrency=4, **overrides),
                    LEARNER)


def _receive(ref, concurrency=4):
    async def run():
        async with open_transport("s3") as transport:
            return await receive(transport, ref, concurrency)

    return asyncio.run(run())


def _keys(store, prefix):
    listing = store.client().list_objects_v2(Bucket=store.bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def test_a_version_goes_up_once_and_comes_back_identical_in_ranged_reads(aws_env, tmp_path):
    folder = _version(tmp_path / "v7", 7)
    origin = _origin(aws_env, "round-trip")
    ref = origin.publish(7, folder)
    # The learner's own URL stays the whole-file address (for a worker that takes no transport).
    assert ref.uri == weights_url(LEARNER, 7)
    assert ref.manifest == f"s3://{aws_env.bucket}/round-trip/v7/manifest.json"
    assert _keys(aws_env, "round-trip/") == ["round-trip/v7/manifest.json", "round-trip/v7/model.safetensors"]
    # Uploaded in parts: the store's ETag of a multipart object counts them (12 MiB in 5 MiB parts).
    head = aws_env.client().head_object(Bucket=aws_env.bucket, Key="round-trip/v7/model.safetensors")
    assert head["ETag"].strip('"').endswith("-3")

    manifest, blob = _receive(ref.manifest)
    assert manifest.version == 7 and len(manifest.buckets) > 10
    assert bytes(blob) == (folder / WEIGHTS_FILE).read_bytes()
    origin.close()


def test_a_tampered_object_is_refetched_then_refused_and_nothing_is_written(aws_env, tmp_path, caplog):
    folder = _version(tmp_path / "v1", 1, megabytes=3)
    origin = _origin(aws_env, "tampered")
    ref = origin.publish(1, folder)
    data = bytearray((folder / WEIGHTS_FILE).read_bytes())
    data[MIB + 100] ^= 0xFF  # one byte of bucket 1
    aws_env.client().put_object(Bucket=aws_env.bucket, Key="tampered/v1/model.safetensors", Body=bytes(data))

    with caplog.at_level(logging.WARNING), pytest.raises(BucketMismatch, match="v1 bucket 1: hash mismatch"):
        _receive(ref.manifest)
    assert caplog.text.count("v1 bucket 1: hash mismatch; refetching") == 2  # retried, then refused

    # A worker's fetch: a clear error, and no version for the engine to load.
    with pytest.raises(WeightsError, match=r"\(s3\): v1 bucket 1: hash mismatch"):
        _fetch(ref.manifest, "s3")
    origin.close()


def _fetch(manifest: str, transport: str):
    """What a worker does with an update naming ``manifest`` (services.rollout.weights.fetch_version)."""
    update = WeightUpdate(version=1, uri="http://learner.invalid/v1/weights/1", manifest=manifest, transport=transport)
    return asyncio.run(fetch_version(update, None, 60, 4))


def test_retire_deletes_the_version_and_only_it(aws_env, tmp_path):
    origin = _origin(aws_env, "retire")
    refs = {v: origin.publish(v, _version(tmp_path / f"v{v}", v, megabytes=1)) for v in (1, 2)}
    origin.retire(1)
    assert _keys(aws_env, "retire/") == ["retire/v2/manifest.json", "retire/v2/model.safetensors"]
    with pytest.raises(S3Error, match="404 NoSuchKey; the version may have been retired"):
        _receive(refs[1].manifest)
    assert _receive(refs[2].manifest)[0].version == 2
    origin.retire(3)  # nothing there: nothing to do
    origin.close()


def test_requests_without_the_right_keys_are_refused_with_a_reason(aws_env, tmp_path, monkeypatch):
    folder = _version(tmp_path / "v4", 4, megabytes=1)
    origin = _origin(aws_env, "auth")
    ref = origin.publish(4, folder)
    # Anonymous: the store itself refuses an unsigned request.
    anonymous = httpx.get(f"{aws_env.endpoint_url}/{aws_env.bucket}/auth/v4/{MANIFEST_FILE}")
    assert anonymous.status_code == 403

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(WeightsError, match="403 SignatureDoesNotMatch; check AWS_ACCESS_KEY_ID and AWS_SECRET"):
        _fetch(ref.manifest, "s3")
    with pytest.raises(S3Error, match="upload s3://.*403 SignatureDoesNotMatch"):  # the learner's side too
        _origin(aws_env, "auth").publish(5, folder)

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(WeightsError, match="no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        _fetch(ref.manifest, "s3")

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", aws_env.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws_env.secret_key)
    closed = "http://127.0.0.1:9"  # discard port: nothing listens on loopback
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", closed)
    with pytest.raises(WeightsError, match=f"cannot reach {closed}; set AWS_ENDPOINT_URL_S3"):
        _fetch(ref.manifest, "s3")
    origin.close()


def test_the_learners_publish_path_records_an_s3_version_a_worker_reads(
    aws_env, tmp_path, redis_client, namespace, default_init_dir
):
    """What the coordinator does per version (store.save, origin.publish, publisher.publish,
    store.prune, origin.retire), with the origin the job's settings open."""
    weights = WeightsSettings.model_validate(
        {"transport": "s3", "bucket_mb": 1, "s3": {"bucket": aws_env.bucket, "prefix": "learner"}}
    )
    origin = open_origin(weights, LEARNER)
    model, tokenizer = load_model(default_init_dir), load_tokenizer(default_init_dir)
    store = WeightStore(tmp_path / "weights", keep=1, bucket_bytes=weights.bucket_bytes)
    keys = Keys(namespace)
    records = WeightsRecordStore(redis_client, keys)
    publisher = Publisher(records, WorkerRegistry(redis_client, keys), TOKEN, worker_ttl_s=30, retries=0,
                          timeout_s=30)
    for version in (0, 1):
        store.save(model, model.state_dict(), version, tokenizer)
        ref = origin.publish(version, store.directory(version))
        publisher.publish(version, ref.uri, ref.manifest, origin.name)
        for dropped in store.prune(version):
            origin.retire(dropped)
    publisher.close()

    record = records.get()
    assert (record.version, record.transport) == (1, "s3")
    assert record.manifest == f"s3://{aws_env.bucket}/learner/v1/manifest.json"
    assert "AWS" not in record.model_dump_json() and aws_env.secret_key not in record.model_dump_json()
    assert _keys(aws_env, "learner/") == ["learner/v1/manifest.json", "learner/v1/model.safetensors"]
    assert bytes(_fetch(record.manifest, record.transport).blob) == store.file(1).read_bytes()
    origin.close()
