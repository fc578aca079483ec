"""Delivering outbox rows to their sinks, from any instance, at least once.

The loop claims due rows (a lease in the row: no other instance takes a row while its
holder may still be sending it), sends each to its sink with at most HOOK_CONCURRENCY in
flight, and settles it: `delivered` (kept for HOOK_RETENTION, then removed by a TTL
index), back to `pending` after an exponential backoff with jitter, or `dead` after
HOOK_MAX_ATTEMPTS failed attempts. A `prepared` row (its writer died before confirming
the commit) is first checked against the committed state: sent if the change happened,
dropped if it did not.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from gateway.hooks.sinks import DeliveryFailed, Sink
from metadata.outbox import DEAD, DELIVERED, PENDING, PREPARED, WAITING, OutboxRepository, OutboxRow

log = logging.getLogger("mediaserver.hooks")

COUNT_LIMIT = 1_000_000  # rows counted at most for the backlog gauges
GAUGE_INTERVAL = 5.0  # seconds between counts of the backlog


def describe(row: OutboxRow) -> dict[str, object]:
    """A row as logged."""
    return {"event_id": row.event_id, "event": row.type, "sink": row.sink, "attempts": row.attempts}


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base: float
    ceiling: float

    def delay(self, attempts: int) -> float:
        """Seconds before attempt `attempts` + 1: base * 2^(attempts-1), at most `ceiling`, the upper
        half of it jittered (so instances retrying together spread out)."""
        span = min(self.ceiling, self.base * 2 ** max(attempts - 1, 0))
        return span / 2 + random.uniform(0, span / 2)


class Deliverer:
    """The delivery loop of one instance."""

    def __init__(self, outbox: OutboxRepository, sinks: Mapping[str, Sink], policy: RetryPolicy, *,
                 concurrency: int, lease: float, poll_interval: float, confirm_grace: float,
                 observe: Callable[[str, str, str], None], gauges: Callable[[int, int], None]) -> None:
        self._outbox = outbox
        self._sinks = dict(sinks)
        self._policy = policy
        self._slots = asyncio.Semaphore(concurrency)
        self._lease = lease
        self._poll = poll_interval
        self._grace = confirm_grace
        self._observe = observe  # (sink, event, outcome)
        self._gauges = gauges  # (waiting rows, dead rows)
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task] = set()
        self._counted_at = 0.0

    def wake(self) -> None:
        """New rows are due: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            try:
                await self._count()
                while await self._claim_one():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the metadata store may be away; look again later
                log.warning("webhook delivery loop failed; retrying", exc_info=True)
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def _claim_one(self) -> bool:
        await self._slots.acquire()
        try:
            row = await self._outbox.claim(tuple(self._sinks), self._lease)
        except BaseException:
            self._slots.release()
            raise
        if row is None:
            self._slots.release()
            return False
        task = asyncio.ensure_future(self._deliver(row))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        return True

    async def _count(self) -> None:
        now = time.monotonic()
        if now - self._counted_at < GAUGE_INTERVAL:
            return
        self._counted_at = now
        waiting = await self._outbox.count(WAITING, COUNT_LIMIT)
        dead = await self._outbox.count((DEAD,), COUNT_LIMIT)
        self._gauges(waiting, dead)

    async def _deliver(self, row: OutboxRow) -> None:
        try:
            if row.state == PREPARED and not await self._settled_unconfirmed(row):
                return
            sink = self._sinks[row.sink]
            try:
                await sink.send(row.event_id, row.type, row.body, row.subject)
            except DeliveryFailed as exc:
                await self._failed(row, str(exc))
                return
            await self._outbox.settle(row, state=DELIVERED, attempts=row.attempts + 1, keep=self._outbox.retention)
            self._observe(row.sink, row.type, "delivered")
            log.info("webhook event delivered", extra=describe(row))
        except asyncio.CancelledError:
            raise  # the claim runs out; another instance (or this one, restarted) sends it again
        except Exception:  # noqa: BLE001 - the row's lease runs out and it is tried again
            log.warning("webhook delivery failed unexpectedly", exc_info=True, extra=describe(row))
        finally:
            self._slots.release()

    async def _settled_unconfirmed(self, row: OutboxRow) -> bool:
        """Whether a prepared row (its writer stopped before confirming) is to be sent now:
        its change was committed. Otherwise it is dropped or looked at again later."""
        committed = await self._outbox.committed(row)
        if committed:
            log.info("unconfirmed webhook event found committed", extra=describe(row))
            return True
        if committed is False and time.time() - row.created_at > self._grace:
            await self._outbox.drop(row)
            log.info("unconfirmed webhook event dropped: its change was not committed", extra=describe(row))
        else:
            await self._outbox.settle(row, state=PREPARED, due=time.time() + self._grace)
        return False

    async def _failed(self, row: OutboxRow, reason: str) -> None:
        attempts = row.attempts + 1
        self._observe(row.sink, row.type, "failed")
        if attempts >= self._policy.max_attempts:
            await self._outbox.settle(row, state=DEAD, attempts=attempts, error=reason, keep=self._outbox.retention)
            self._observe(row.sink, row.type, "dead")
            log.error("webhook event dead after its last attempt", extra={**describe(row), "error": reason})
            return
        delay = self._policy.delay(attempts)
        await self._outbox.settle(row, state=PENDING, due=time.time() + delay, attempts=attempts, error=reason)
        log.warning("webhook delivery failed; will retry",
                    extra={**describe(row), "attempts": attempts, "error": reason, "retry_in": round(delay, 3)})

    async def close(self, timeout: float = 5.0) -> None:
        """Let deliveries in flight end (at most `timeout` seconds), then cancel the rest."""
        if self._sending:
            _, pending = await asyncio.wait(set(self._sending), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
