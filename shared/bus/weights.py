"""The weights record: the newest published version and where to fetch it (a worker that starts or
missed a push loads it from here)."""

from __future__ import annotations

import redis

from shared.bus.codec import CodecError, decode_value, encode_value
from shared.bus.keys import Keys
from shared.messages import WeightsRecord


class WeightsRecordStore:
    def __init__(self, client: redis.Redis, keys: Keys):
        self.client = client
        self.key = keys.weights

    def get(self) -> WeightsRecord | None:
        raw = self.client.get(self.key)
        if raw is None:
            return None
        try:
            return decode_value(WeightsRecord, raw)
        except (CodecError, ValueError) as exc:
            raise CodecError(f"{self.key} holds an unreadable record: {exc}") from exc

    def set(self, record: WeightsRecord) -> None:
        self.client.set(self.key, encode_value(record))
