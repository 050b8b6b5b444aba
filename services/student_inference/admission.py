"""Admission control for Score: bounded in-flight work and early load shedding.

Without it, every request goes straight to the backend: under overload Triton's queue
grows, each request waits longer than its caller's deadline, and the scores computed
for callers that have given up are wasted (goodput collapses). The gate lets at most
``max_in_flight`` requests reach the backend; others wait in a FIFO of at most
``max_queued``. A request is refused with RESOURCE_EXHAUSTED, at once, when the queue
is full or when its remaining deadline is shorter than the backend's recent service
time, and after waiting when its turn would come too late to finish in time. A refused
caller can retry elsewhere right away instead of timing out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.core.grpc_server import ResourceExhausted

# Weight of the newest backend latency in the moving average of the service time.
_EWMA_WEIGHT = 0.2


class AdmissionGate:
    def __init__(self, max_in_flight: int, max_queued: int) -> None:
        if max_in_flight < 1:
            raise ValueError(f"score_max_in_flight: must be >= 1, got {max_in_flight}")
        if max_queued < 0:
            raise ValueError(f"score_max_queued: must be >= 0, got {max_queued}")
        self.max_in_flight = max_in_flight
        self.max_queued = max_queued
        self._slots = asyncio.Semaphore(max_in_flight)
        self.waiting = 0
        self.in_flight = 0
        # Moving average of how long one admitted request keeps its slot (s).
        self.service_s = 0.0

    @asynccontextmanager
    async def admit(self, time_remaining: float | None) -> AsyncIterator[float | None]:
        """Holds a slot for the body; yields the deadline left once admitted (None: none).

        Raises ResourceExhausted instead of letting the request wait past its deadline.
        """
        waited_from = time.monotonic()
        if self._slots.locked() or self.waiting:
            # Only a request that would queue is shed: with a free slot even a stale
            # (say, outage-inflated) service time estimate turns nobody away.
            if self.waiting >= self.max_queued:
                raise ResourceExhausted(
                    f"overloaded: {self.in_flight} requests scoring and {self.waiting} queued "
                    "(RELKD_SCORE_MAX_IN_FLIGHT, RELKD_SCORE_MAX_QUEUED); retry with backoff"
                )
            budget = None if time_remaining is None else time_remaining - self.service_s
            if budget is not None and budget <= 0:
                raise ResourceExhausted(
                    f"overloaded: the deadline ({time_remaining:.3f} s left) is shorter than "
                    f"the current service time ({self.service_s:.3f} s)"
                )
            self.waiting += 1
            try:
                await asyncio.wait_for(self._slots.acquire(), budget)
            except TimeoutError:
                raise ResourceExhausted(
                    f"overloaded: no scoring slot within the {budget:.3f} s the deadline leaves"
                ) from None
            finally:
                self.waiting -= 1
        else:
            await self._slots.acquire()
        self.in_flight += 1
        started = time.monotonic()
        try:
            left = None if time_remaining is None else time_remaining - (started - waited_from)
            yield left
        finally:
            self.in_flight -= 1
            self._slots.release()
            elapsed = time.monotonic() - started
            self.service_s += _EWMA_WEIGHT * (elapsed - self.service_s)
