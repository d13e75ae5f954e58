"""A Redis stream of one message type read by one consumer group: the delivery rules both streams share.

Delivery is at-least-once: an entry stays pending on its consumer until acknowledged, and entries of a
consumer that died are reclaimed by another (XAUTOCLAIM). An entry that cannot be decoded is moved to
the stream's dead letters instead of being redelivered forever.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Generic, TypeVar

import redis
from pydantic import BaseModel

from shared.bus.codec import CodecError, decode, encode
from shared.bus.keys import dead_letters_of

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Entry(Generic[M]):
    entry_id: str
    message: M


@dataclass(frozen=True)
class PendingEntry:
    """An entry delivered to a consumer and not yet acknowledged."""

    entry_id: str
    consumer: str
    idle_ms: int
    deliveries: int


class MessageStream(Generic[M]):
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
        return text(self.client.xadd(self.stream, encode(message)))

    def read(self, consumer: str, count: int = 1, block_ms: int | None = None) -> list[Entry[M]]:
        """New entries for ``consumer``; they stay pending on it until :meth:`ack`."""
        reply = self.client.xreadgroup(self.group, consumer, {self.stream: ">"}, count=count, block=block_ms)
        return self._decode_all([item for _, items in (reply or []) for item in items])

    def reclaim(self, consumer: str, min_idle_ms: int, count: int = 16) -> list[Entry[M]]:
        """Take over up to ``count`` entries pending longer than ``min_idle_ms`` on any consumer (a dead one)."""
        claimed: list = []
        cursor = "0-0"
        while True:
            reply = self.client.xautoclaim(
                self.stream, self.group, consumer, min_idle_time=min_idle_ms, start_id=cursor, count=count
            )
            cursor, items = text(reply[0]), reply[1]
            claimed.extend(item for item in items if item is not None and item[1] is not None)
            if cursor == "0-0" or len(claimed) >= count:
                break
        return self._decode_all(claimed)

    def ack(self, *entry_ids: str) -> int:
        return int(self.client.xack(self.stream, self.group, *entry_ids)) if entry_ids else 0

    def pending(self) -> int:
        return int(self.client.xpending(self.stream, self.group)["pending"])

    def pending_entries(self, consumer: str | None = None, count: int = 10_000) -> list[PendingEntry]:
        """The entries pending on ``consumer`` (on any consumer if None), oldest first."""
        extra = {"consumername": consumer} if consumer is not None else {}
        rows = self.client.xpending_range(self.stream, self.group, min="-", max="+", count=count, **extra)
        return [
            PendingEntry(text(r["message_id"]), text(r["consumer"]), int(r["time_since_delivered"]),
                         int(r["times_delivered"]))
            for r in rows
        ]

    def length(self) -> int:
        return int(self.client.xlen(self.stream))

    def added_total(self) -> int:
        """Entries ever appended, trimmed ones included (0 before the first)."""
        if not self.client.exists(self.stream):
            return 0
        return int(self.client.xinfo_stream(self.stream)["entries-added"])

    def low_water(self) -> str | None:
        """The lowest entry id a consumer group of the stream may still need: a group's oldest pending
        entry, or the first entry it has not been delivered. Every entry below it was acknowledged by
        every group (another reader, an audit or an archive, takes its own group and so holds trimming
        back until it acknowledges). None when the stream has no group."""
        if not self.client.exists(self.stream):
            return None
        candidates = []
        for info in self.client.xinfo_groups(self.stream):
            ms, seq = position(text(info["last-delivered-id"]))
            candidates.append((ms, seq + 1))  # everything up to the last delivered entry went to a consumer
            if int(info["pending"]):
                oldest = self.client.xpending(self.stream, text(info["name"]))["min"]
                candidates.append(position(text(oldest)))
        if not candidates:
            return None
        low_ms, low_seq = min(candidates)
        return f"{low_ms}-{low_seq}"

    def trim_acknowledged(self) -> tuple[int, str | None]:
        """Delete the entries below :meth:`low_water` (acknowledged, so no consumer needs them again);
        returns (entries deleted, the low water). Safe against concurrent appends and reads: those only
        touch ids at or above it."""
        low = self.low_water()
        if low is None:
            return 0, None
        return int(self.client.xtrim(self.stream, minid=low, approximate=False)), low

    def backlog(self) -> int:
        """Entries not yet delivered to any consumer of the group."""
        for group in self.client.xinfo_groups(self.stream):
            if text(group["name"]) == self.group:
                lag = group.get("lag")
                return int(lag) if lag is not None else self.length()
        return self.length()

    def consumers(self) -> list[str]:
        """Names of the group's consumers (a consumer stays until it leaves the group)."""
        return [text(c["name"]) for c in self.client.xinfo_consumers(self.stream, self.group)]

    def _decode_all(self, raw: list) -> list[Entry[M]]:
        entries = []
        for entry_id, fields in raw:
            entry_id = text(entry_id)
            try:
                entries.append(Entry(entry_id, decode(self.model, fields)))
            except (CodecError, ValueError) as exc:
                # Keep the bytes for inspection rather than dropping them, and stop redelivery.
                log.error("entry %s of %s is unreadable (%s); moved to dead letters", entry_id, self.stream, exc)
                self.client.xadd(dead_letters_of(self.stream), {**fields, b"error": str(exc).encode()})
                self.ack(entry_id)
        return entries


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def position(entry_id: str) -> tuple[int, int]:
    """(milliseconds, sequence) of a stream entry id: compares in stream order."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def entry_ms(entry_id: str) -> int:
    """The millisecond part of a stream entry id."""
    return position(entry_id)[0]
