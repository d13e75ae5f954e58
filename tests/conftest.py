"""Fixtures shared by all tests: a real redis-server, the built-in models."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis

from launcher.processes import start_redis_server


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """A private redis-server on a free loopback port for the whole session."""
    process, url = start_redis_server(tmp_path_factory.mktemp("redis"))
    yield url
    process.stop()


@pytest.fixture
def namespace() -> str:
    """A fresh key namespace per test, so tests sharing the server never see each other's keys."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_client(redis_url) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def default_init_dir() -> Path:
    """The built-in tokenizer + randomly initialised model (cached on disk across runs)."""
    from shared.base_policy import default_init_model

    return default_init_model()


@pytest.fixture(scope="session")
def default_base_dir() -> Path:
    """The warmed-up default base policy (cached on disk across runs)."""
    from shared.base_policy import default_base_policy

    return default_base_policy()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct converted from its GGUF file (cached on disk across runs)."""
    from tests.helpers.checkpoints import converted_smollm2

    return converted_smollm2()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """A real SeaweedFS S3 store (``weed mini``, keys required) with an empty bucket, for the whole session."""
    from tests.helpers.seaweedfs import start_seaweedfs

    store = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield store
    store.process.kill()  # a scratch store: nothing to flush, and a graceful stop takes seconds
