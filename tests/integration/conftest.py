import pytest

from tests.helpers.rollout import start_rollout


@pytest.fixture(scope="module")
def rollout_worker(tmp_path_factory, default_init_dir):
    """A real rollout service (vLLM, HTTP only) that takes weight pushes with the bearer token
    ``tests.helpers.rollout.TOKEN``; tests register it in Redis as a worker would."""
    process, url = start_rollout(tmp_path_factory.mktemp("push-target"), default_init_dir)
    try:
        yield url
    finally:
        process.stop()
