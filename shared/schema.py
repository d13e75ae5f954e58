"""The base of every pydantic contract between processes: HTTP bodies (shared/api) and Redis entries
(shared/messages)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

TokenIds = list[int]


class Message(BaseModel):
    # Unknown fields are an error: a typo in a client must not be silently dropped.
    model_config = ConfigDict(extra="forbid")
