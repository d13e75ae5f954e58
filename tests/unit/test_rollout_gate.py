"""The version gate: a swap waits for running generations and holds new ones back until it is done."""

import asyncio

from services.rollout.gate import VersionGate


def test_a_swap_waits_for_holds_and_blocks_new_ones():
    async def scenario():
        gate = VersionGate(0)
        events: list[str] = []
        release_first = asyncio.Event()

        async def generation(name: str, wait: asyncio.Event | None = None) -> int:
            async with gate.hold() as version:
                events.append(f"{name} start v{version}")
                if wait is not None:
                    await wait.wait()
                events.append(f"{name} end v{version}")
                return version

        async def swap() -> None:
            async with gate.exclusive():
                events.append("swap")
                gate.version = 1

        first = asyncio.create_task(generation("first", release_first))
        await asyncio.sleep(0)
        swapping = asyncio.create_task(swap())
        await asyncio.sleep(0)
        assert gate.swapping and gate.holds == 1
        second = asyncio.create_task(generation("second"))  # arrives during the swap: must wait for it
        await asyncio.sleep(0.01)
        assert "swap" not in events and not any(e.startswith("second") for e in events)
        release_first.set()
        assert await first == 0 and await second == 1
        await swapping
        return events

    events = asyncio.run(scenario())
    assert events == ["first start v0", "first end v0", "swap", "second start v1", "second end v1"]


def test_a_cancelled_swap_does_not_block_the_gate():
    async def scenario():
        gate = VersionGate(5)
        hold = gate.hold()
        await hold.__aenter__()

        async def swap():
            async with gate.exclusive():
                gate.version = 6

        task = asyncio.create_task(swap())
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await hold.__aexit__(None, None, None)
        async with gate.hold() as version:
            return version, gate.swapping

    assert asyncio.run(scenario()) == (5, False)
