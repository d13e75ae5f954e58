"""The pool's queue: round-robin between requests, first come first served within one.

A single FIFO let one request of 32 slow items hold every verifier process until its last item
finished; a one-item request behind it waited for all 32. Here each request is a lane, and the
next item comes from the next lane in turn, so a request waits for at most one item per request
ahead of it, whatever their sizes.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    def __init__(self) -> None:
        self._lanes: collections.deque[collections.deque[T]] = collections.deque()
        self._size = 0
        self._getters: collections.deque[asyncio.Future[None]] = collections.deque()

    def put_lane(self, items: Iterable[T]) -> None:
        """Queue the items of one request, behind the lanes already waiting."""
        lane = collections.deque(items)
        if not lane:
            return
        self._lanes.append(lane)
        self._size += len(lane)
        for _ in range(min(len(lane), len(self._getters))):
            self._wake_one()

    async def get(self) -> T:
        while not self._size:
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._getters:
                    self._getters.remove(waiter)
                elif self._size:
                    self._wake_one()  # we were woken for an item we will not take: pass it on
                raise
        lane = self._lanes.popleft()
        item = lane.popleft()
        self._size -= 1
        if lane:
            self._lanes.append(lane)  # the lane's next item waits for one turn of the others
        return item

    def qsize(self) -> int:
        return self._size

    def drain(self) -> list[T]:
        items = [item for lane in self._lanes for item in lane]
        self._lanes.clear()
        self._size = 0
        return items

    def _wake_one(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
