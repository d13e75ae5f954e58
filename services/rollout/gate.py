"""A version gate: generation runs under a shared hold that pins one weight version; a swap takes the
gate exclusively, so it waits for every hold to end and no hold starts until the swap is done.

A worker takes one hold for a whole prompt group, so every sample of a group comes from one version.
A waiting swap blocks new holds (writer preference): a steady stream of requests cannot starve it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class VersionGate:
    def __init__(self, version: int = 0):
        self.version = version
        self._holds = 0
        self._swapping = False
        self._changed = asyncio.Condition()

    @property
    def holds(self) -> int:
        return self._holds

    @property
    def swapping(self) -> bool:
        return self._swapping

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[int]:
        """Yield the version that every generation inside the block runs with."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._swapping)
            self._holds += 1
            version = self.version
        try:
            yield version
        finally:
            async with self._changed:
                self._holds -= 1
                self._changed.notify_all()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Wait for running holds to end; set ``self.version`` inside the block to publish a new one."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._swapping)
            self._swapping = True
            try:
                await self._changed.wait_for(lambda: self._holds == 0)
            except BaseException:
                self._swapping = False
                self._changed.notify_all()
                raise
        try:
            yield
        finally:
            async with self._changed:
                self._swapping = False
                self._changed.notify_all()
