"""Connecting to the job's Redis, and the errors callers may handle without importing redis."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

Redis = redis.Redis
# Raised while Redis cannot be reached (after the retries): the caller waits and tries again.
Unreachable = (redis.ConnectionError, redis.TimeoutError)
# Any failure of a Redis command.
RedisError = redis.RedisError

# A redis-server restart (AOF replay) takes a second or two: every command rides over it with retries
# instead of failing the service. Safe to repeat: task appends, trajectory appends (append-once) and
# acknowledgements are all de-duplicated or idempotent. About 12 s in all before the error surfaces.
RECONNECT_RETRIES = 14


def connect(url: str, reconnect: bool = True) -> redis.Redis:
    """A client for ``url``; ``reconnect=False`` for one-shot readers that should fail at once."""
    if not reconnect:
        return redis.Redis.from_url(url)
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), RECONNECT_RETRIES),
    )
