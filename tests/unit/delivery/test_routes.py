"""spoolgate/delivery/routes.py: route slots, the ramp, and what a down route allows."""

from __future__ import annotations

import asyncio

from spoolgate.delivery.routes import RouteGate


async def _holders(gate: RouteGate, count: int) -> tuple[list[asyncio.Task], list[int]]:
    order: list[int] = []

    async def hold(number: int) -> None:
        await gate.acquire()
        order.append(number)

    tasks = [asyncio.create_task(hold(n)) for n in range(count)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return tasks, order


def test_slots_are_limited_and_handed_on_in_arrival_order() -> None:
    async def scenario() -> None:
        gate = RouteGate("smtp://x:25", maximum=10, initial=2)
        tasks, order = await _holders(gate, 5)
        assert order == [0, 1] and gate.in_use == 2
        await gate.release()
        await asyncio.sleep(0)
        assert order == [0, 1, 2] and gate.in_use == 2
        for _ in range(4):
            await gate.release()
            await asyncio.sleep(0)
        assert order == [0, 1, 2, 3, 4]
        await asyncio.gather(*tasks)

    asyncio.run(scenario())


def test_a_down_route_allows_one_connection_and_ramps_again_from_the_start() -> None:
    async def scenario() -> None:
        gate = RouteGate("smtp://x:25", maximum=10, initial=3)
        for _ in range(200):
            gate.succeeded(0.01)
        assert gate.allowed == 10
        await gate.set_down(True)
        assert gate.allowed == 1
        tasks, order = await _holders(gate, 3)
        assert order == [0]
        await gate.set_down(False)
        await asyncio.sleep(0)
        assert gate.allowed == 3 and order == [0, 1, 2]
        await asyncio.gather(*tasks)

    asyncio.run(scenario())


def test_backing_off_halves_and_rising_latency_stops_the_growth() -> None:
    gate = RouteGate("smtp://x:25", maximum=20, initial=8)
    gate.backed_off()
    assert gate.allowed == 4
    gate.succeeded(0.010)
    before = gate.limit
    gate.succeeded(0.500)  # far slower than the average: hold the limit
    assert gate.limit == before
    gate.succeeded(0.010)
    assert gate.limit > before


def test_a_cancelled_waiter_gives_its_slot_to_the_next() -> None:
    async def scenario() -> None:
        gate = RouteGate("smtp://x:25", maximum=1, initial=1)
        await gate.acquire()
        first = asyncio.create_task(gate.acquire())
        second = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        await gate.release()
        await asyncio.wait_for(second, 1)
        assert gate.in_use == 1

    asyncio.run(scenario())
