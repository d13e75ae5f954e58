"""A real rollout worker (vLLM) takes weight versions through the s3 transport: the learner's publish
path uploads a version to a real SeaweedFS, the push names its s3:// manifest, and the worker, given
only the standard AWS variables, fetches the buckets from the store and swaps; a version that is gone
from the store is refused with the reason while the worker keeps serving the one it has."""

import asyncio

import pytest

from services.learner.weights import Publisher, WeightStore
from shared.api.rollout import RolloutClient, WeightsUpdateFailed, WeightUpdate
from shared.bus import Keys, WeightsRecordStore, WorkerRegistry
from shared.modeling import load_model, load_tokenizer
from shared.weights.settings import WeightsSettings
from shared.weights.transports import open_origin
from tests.helpers.rollout import TOKEN, start_rollout
from tests.helpers.workers import register, served_version, wait_for, weight_swaps

pytestmark = pytest.mark.integration


def test_a_worker_takes_versions_from_the_object_store(
    tmp_path, seaweedfs, redis_client, namespace, default_init_dir, monkeypatch
):
    for name, value in seaweedfs.env().items():  # the learner's side, in this process
        monkeypatch.setenv(name, value)
    # The worker gets the store's address and keys from the same variables, and no new setting.
    process, url = start_rollout(tmp_path / "worker", default_init_dir, extra_env=seaweedfs.env())
    try:
        weights = WeightsSettings.model_validate(
            {"transport": "s3", "bucket_mb": 1, "s3": {"bucket": seaweedfs.bucket, "prefix": "worker"}}
        )
        origin = open_origin(weights, "http://127.0.0.1:9")  # nothing there: the worker must use the store
        model, tokenizer = load_model(default_init_dir), load_tokenizer(default_init_dir)
        store = WeightStore(tmp_path / "weights", keep=3, bucket_bytes=weights.bucket_bytes)
        state = {name: tensor * 0.5 for name, tensor in model.state_dict().items()}
        store.save(model, state, 1, tokenizer)
        ref = origin.publish(1, store.directory(1))
        assert ref.manifest.startswith("s3://")

        keys = Keys(namespace)
        register(redis_client, keys, "w", url)
        publisher = Publisher(WeightsRecordStore(redis_client, keys), WorkerRegistry(redis_client, keys), TOKEN,
                              worker_ttl_s=30, retries=0, timeout_s=300)
        swaps = weight_swaps(url)
        publisher.publish(1, ref.uri, ref.manifest, origin.name)
        wait_for(lambda: served_version(url) == 1, 300, "the worker to serve v1 from the store", [process])
        publisher.close(timeout=30)
        assert publisher.last_report.pushed == ["w"]
        assert weight_swaps(url) == swaps + 1

        # A version the learner has retired from the store: refused with the reason, v1 still served.
        store.save(model, model.state_dict(), 2, tokenizer)
        gone = origin.publish(2, store.directory(2))
        origin.retire(2)
        update = WeightUpdate(version=2, uri=gone.uri, manifest=gone.manifest, transport="s3")

        async def push_and_wait() -> None:
            async with RolloutClient(url, TOKEN, timeout_s=120) as client:
                accepted = await client.push_weights(update)
                assert (accepted.version, accepted.outcome) == (2, "queued")  # the fetch runs in the background
                await client.wait_for_version(2, timeout_s=120)

        with pytest.raises(WeightsUpdateFailed, match="404 NoSuchKey; the version may have been retired"):
            asyncio.run(push_and_wait())
        assert served_version(url) == 1
        origin.close()
    finally:
        process.stop()
