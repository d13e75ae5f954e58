"""The pool's queue: round-robin between requests, in order within one."""

from __future__ import annotations

import asyncio

from services.reward.fair_queue import FairQueue


def drain_in_order(queue: FairQueue[str]) -> list[str]:
    async def take() -> list[str]:
        return [await queue.get() for _ in range(queue.qsize())]

    return asyncio.run(take())


def test_a_small_request_behind_a_big_one_is_served_on_the_next_turn():
    queue: FairQueue[str] = FairQueue()
    queue.put_lane([f"big{i}" for i in range(32)])
    queue.put_lane(["small"])
    assert drain_in_order(queue)[:3] == ["big0", "small", "big1"]


def test_lanes_take_turns_and_keep_their_order():
    queue: FairQueue[str] = FairQueue()
    queue.put_lane(["a1", "a2", "a3"])
    queue.put_lane(["b1", "b2"])
    queue.put_lane([])  # an empty request adds no turn
    queue.put_lane(["c1"])
    assert queue.qsize() == 6
    assert drain_in_order(queue) == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert queue.qsize() == 0


def test_waiting_getters_are_woken_by_a_new_lane():
    async def scenario() -> list[str]:
        queue: FairQueue[str] = FairQueue()
        getters = [asyncio.create_task(queue.get()) for _ in range(3)]
        await asyncio.sleep(0)
        queue.put_lane(["x", "y"])
        done, pending = await asyncio.wait(getters, timeout=1.0)
        assert len(done) == 2 and len(pending) == 1
        queue.put_lane(["z"])
        await asyncio.wait(pending, timeout=1.0)
        return sorted(task.result() for task in getters)

    assert asyncio.run(scenario()) == ["x", "y", "z"]


def test_a_cancelled_getter_passes_its_item_on():
    async def scenario() -> str:
        queue: FairQueue[str] = FairQueue()
        first = asyncio.create_task(queue.get())
        second = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        queue.put_lane(["only"])  # wakes the first getter ...
        first.cancel()  # ... which is cancelled before it runs
        return await asyncio.wait_for(second, 1.0)

    assert asyncio.run(scenario()) == "only"


def test_drain_returns_what_is_left():
    queue: FairQueue[int] = FairQueue()
    queue.put_lane([1, 2])
    queue.put_lane([3])
    assert sorted(queue.drain()) == [1, 2, 3]
    assert queue.qsize() == 0
