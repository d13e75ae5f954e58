"""Redis stream helpers: append, consumer-group read, acknowledge, reclaim, duplicate detection.

Delivery is at-least-once: an entry stays pending on its consumer until acknowledged, and entries
of a consumer that died are reclaimed by another (XAUTOCLAIM). Consumers de-duplicate by message
id with :class:`SeenIds`, so each message takes effect once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Generic, TypeVar

import redis
from pydantic import BaseModel
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from shared.codec import CodecError, decode, encode

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Keys:
    """Every Redis key of one job lives under its namespace."""

    namespace: str

    @property
    def tasks(self) -> str:
        return f"{self.namespace}:tasks"

    @property
    def trajectories(self) -> str:
        return f"{self.namespace}:trajectories"

    @property
    def weights(self) -> str:
        return f"{self.namespace}:weights"

    @property
    def workers(self) -> str:
        return f"{self.namespace}:workers"

    def seen(self, name: str) -> str:
        return f"{self.namespace}:seen:{name}"

    def dead_letters(self, stream: str) -> str:
        return f"{stream}:dead"


TASKS_GROUP = "rollout"
TRAJECTORIES_GROUP = "learner"


@dataclass(frozen=True)
class Entry(Generic[M]):
    entry_id: str
    message: M


# A redis-server restart (AOF replay) takes a second or two: every command rides over it with retries
# instead of failing the service. Safe to repeat: task appends, trajectory appends (append-once) and
# acknowledgements are all de-duplicated or idempotent. About 12 s in all before the error surfaces.
RECONNECT_RETRIES = 14


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), RECONNECT_RETRIES),
    )


class StreamQueue(Generic[M]):
    """A Redis stream of ``model`` messages read by one consumer group."""

    def __init__(self, client: redis.Redis, stream: str, group: str, model: type[M]):
        self.client = client
        self.stream = stream
        self.group = group
        self.model = model

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def append(self, message: M) -> str:
        return _text(self.client.xadd(self.stream, encode(message)))

    def read(self, consumer: str, count: int = 1, block_ms: int | None = None) -> list[Entry[M]]:
        """New entries for ``consumer``; they stay pending on it until :meth:`ack`."""
        reply = self.client.xreadgroup(self.group, consumer, {self.stream: ">"}, count=count, block=block_ms)
        raw = [item for _, items in (reply or []) for item in items]
        return self._decode_all(raw)

    def reclaim(self, consumer: str, min_idle_ms: int, count: int = 16) -> list[Entry[M]]:
        """Take over entries pending longer than ``min_idle_ms`` on any consumer (a dead one)."""
        claimed: list = []
        cursor = "0-0"
        while True:
            reply = self.client.xautoclaim(
                self.stream, self.group, consumer, min_idle_time=min_idle_ms, start_id=cursor, count=count
            )
            cursor, items = _text(reply[0]), reply[1]
            claimed.extend(item for item in items if item is not None and item[1] is not None)
            if cursor == "0-0" or len(claimed) >= count:
                break
        return self._decode_all(claimed)

    def ack(self, *entry_ids: str) -> int:
        return int(self.client.xack(self.stream, self.group, *entry_ids)) if entry_ids else 0

    def pending(self) -> int:
        return int(self.client.xpending(self.stream, self.group)["pending"])

    def length(self) -> int:
        return int(self.client.xlen(self.stream))

    def backlog(self) -> int:
        """Entries not yet delivered to any consumer of the group."""
        for group in self.client.xinfo_groups(self.stream):
            if _text(group["name"]) == self.group:
                lag = group.get("lag")
                return int(lag) if lag is not None else self.length()
        return self.length()

    def _decode_all(self, raw: list) -> list[Entry[M]]:
        entries = []
        for entry_id, fields in raw:
            entry_id = _text(entry_id)
            try:
                entries.append(Entry(entry_id, decode(self.model, fields)))
            except (CodecError, ValueError) as exc:
                # Keep the bytes for inspection rather than dropping them, and stop redelivery.
                log.error("entry %s of %s is unreadable (%s); moved to dead letters", entry_id, self.stream, exc)
                self.client.xadd(f"{self.stream}:dead", {**fields, b"error": str(exc).encode()})
                self.ack(entry_id)
        return entries


class SeenIds:
    """A Redis set of message ids already taken into account (duplicate detection)."""

    def __init__(self, client: redis.Redis, key: str):
        self.client = client
        self.key = key

    def first_time(self, message_id: str) -> bool:
        """Record ``message_id``; True only the first time it is seen."""
        return bool(self.client.sadd(self.key, message_id))

    def __contains__(self, message_id: str) -> bool:
        return bool(self.client.sismember(self.key, message_id))

    def __len__(self) -> int:
        return int(self.client.scard(self.key))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
