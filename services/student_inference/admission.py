"""Admission control for Score: bounded in-flight work and early load shedding.

Without it, every request goes straight to the backend: under overload Triton's queue
grows, each request waits longer than its caller's deadline, and the scores computed
for callers that have given up are wasted (goodput collapses). The gate lets at most
``max_in_flight`` requests reach the backend; others wait in a queue of at most
``max_queued``, served newest first. A request is refused with RESOURCE_EXHAUSTED, at
once, when the queue is full or when its remaining deadline is shorter than the
backend's recent service time, and after waiting when its turn would come too late to
finish in time. A refused
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
        self.in_flight = 0
        # Waiting requests in arrival order; a freed slot goes to the newest.
        self._waiters: list[asyncio.Future[None]] = []
        # Moving average of how long one admitted request keeps its slot (s).
        self.service_s = 0.0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @asynccontextmanager
    async def admit(self, time_remaining: float | None) -> AsyncIterator[float | None]:
        """Holds a slot for the body; yields the deadline left once admitted (None: none).

        Raises ResourceExhausted instead of letting the request wait past its deadline.
        """
        arrived = time.monotonic()
        if self.in_flight < self.max_in_flight:
            # A free slot admits at once: even a stale (say, outage-inflated) service
            # time estimate turns nobody away when nothing queues.
            self.in_flight += 1
        else:
            await self._wait(time_remaining)
        started = time.monotonic()
        try:
            yield None if time_remaining is None else time_remaining - (started - arrived)
        finally:
            self._release()
            elapsed = time.monotonic() - started
            self.service_s += _EWMA_WEIGHT * (elapsed - self.service_s)

    async def _wait(self, time_remaining: float | None) -> None:
        """Waits for a slot handed over by :meth:`_release`, or sheds the request."""
        if len(self._waiters) >= self.max_queued:
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
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), budget)
        except TimeoutError:
            if not waiter.done():
                raise ResourceExhausted(
                    f"overloaded: no scoring slot within the {budget:.3f} s the deadline leaves"
                ) from None
            # The slot arrived as the time ran out: use it.
        except asyncio.CancelledError:
            if waiter.done():  # handed a slot, but the caller went away: pass it on
                self._release()
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _release(self) -> None:
        """Hands the slot to the newest waiter, else frees it.

        Newest first (LIFO): under overload the newest request has the most deadline
        left, so it is the one that can still finish in time; older ones are shed when
        their own wait runs out, rather than all being served too late.
        """
        while self._waiters:
            waiter = self._waiters.pop()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_flight -= 1
