"""Score's admission gate: bounded in-flight work, a bounded queue, and shedding with
RESOURCE_EXHAUSTED instead of waiting past the caller's deadline."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.core.grpc_server import ResourceExhausted
from services.student_inference.admission import AdmissionGate


async def hold(gate: AdmissionGate, release: asyncio.Event, deadline: float | None = None) -> None:
    async with gate.admit(deadline):
        await release.wait()


def test_bounded_in_flight_and_queue() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(max_in_flight=2, max_queued=1)
        release = asyncio.Event()
        holders = [asyncio.create_task(hold(gate, release)) for _ in range(2)]
        await asyncio.sleep(0)
        assert gate.in_flight == 2
        queued = asyncio.create_task(hold(gate, release))
        await asyncio.sleep(0)
        assert gate.waiting == 1 and gate.in_flight == 2
        with pytest.raises(ResourceExhausted, match="RELKD_SCORE_MAX_QUEUED") as info:
            async with gate.admit(None):
                pass
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        await asyncio.gather(*holders, queued)
        assert gate.in_flight == 0 and gate.waiting == 0
        # The slots were all given back.
        async with gate.admit(None), gate.admit(None):
            assert gate.in_flight == 2

    asyncio.run(scenario())


def test_sheds_instead_of_waiting_past_the_deadline() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(max_in_flight=1, max_queued=8)
        release = asyncio.Event()
        holder = asyncio.create_task(hold(gate, release))
        await asyncio.sleep(0)
        # Its turn does not come within the deadline: refused, not left to time out.
        with pytest.raises(ResourceExhausted, match="no scoring slot"):
            async with gate.admit(0.05):
                pass
        assert gate.waiting == 0
        # A deadline shorter than the service time is refused without waiting.
        gate.service_s = 1.0
        with pytest.raises(ResourceExhausted, match="shorter than the current service time"):
            async with gate.admit(0.5):
                pass
        release.set()
        await holder

    asyncio.run(scenario())


def test_a_freed_slot_goes_to_the_newest_waiter() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(max_in_flight=1, max_queued=4)
        release = asyncio.Event()
        holder = asyncio.create_task(hold(gate, release))
        await asyncio.sleep(0)
        admitted: list[str] = []

        async def wait(name: str) -> None:
            async with gate.admit(None):
                admitted.append(name)

        older = asyncio.create_task(wait("older"))
        await asyncio.sleep(0)
        newer = asyncio.create_task(wait("newer"))
        await asyncio.sleep(0)
        assert gate.waiting == 2
        release.set()
        await asyncio.gather(holder, older, newer)
        # The newest has the most deadline left; the older one follows when it frees.
        assert admitted == ["newer", "older"]
        assert gate.in_flight == 0 and gate.waiting == 0

    asyncio.run(scenario())


def test_a_cancelled_waiter_gives_up_its_place() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(max_in_flight=1, max_queued=4)
        release = asyncio.Event()
        holder = asyncio.create_task(hold(gate, release))
        await asyncio.sleep(0)
        gone = asyncio.create_task(hold(gate, asyncio.Event()))
        await asyncio.sleep(0)
        assert gate.waiting == 1
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        assert gate.waiting == 0
        release.set()
        await holder
        assert gate.in_flight == 0

    asyncio.run(scenario())


def test_a_free_slot_admits_even_with_a_stale_service_time() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(max_in_flight=1, max_queued=0)
        gate.service_s = 5.0  # e.g. inflated by an outage
        async with gate.admit(0.1) as left:
            assert left is not None and 0 < left <= 0.1

    asyncio.run(scenario())
