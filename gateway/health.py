"""Health routes: `/health` for load balancers, `/health/detailed` for people."""

from __future__ import annotations

import asyncio
import resource
import time

from gateway import __version__
from gateway.base import BaseHandler

STARTED = time.time()


def memory_bytes() -> dict[str, int]:
    """Current resident set size and its peak, in bytes."""
    rss = 0
    try:
        with open("/proc/self/statm") as fh:
            rss = int(fh.read().split()[1]) * resource.getpagesize()
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"rss_bytes": rss, "peak_rss_bytes": peak}


class HealthHandler(BaseHandler):
    """Cheap liveness: the process answers HTTP."""

    authenticates = False  # never looks at the caller: no account lookup

    rate_limit = None

    refused_while_draining = False

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        if self.services.draining:  # the load balancer stops sending requests here
            self.set_status(503)
            self.write({"status": "draining", "version": __version__})
            return
        self.write({"status": "ok", "version": __version__})


class DetailedHealthHandler(BaseHandler):
    """Readiness with reasons: object store writable, MongoDB reachable, memory, uptime."""

    authenticates = False  # never looks at the caller: no account lookup

    rate_limit = None

    async def _check(self, name: str, probe) -> dict:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(probe(), timeout=self.services.settings.mongodb_timeout + 1)
            return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 1)}
        except Exception as exc:  # noqa: BLE001 - any failure makes the dependency unhealthy
            return {"status": "error", "error": type(exc).__name__}

    async def get(self) -> None:
        store, mongo = await asyncio.gather(
            self._check("store", self.services.store.check),
            self._check("mongodb", lambda: self.services.db.command("ping")),
        )
        healthy = store["status"] == "ok" and mongo["status"] == "ok"
        self.set_header("Cache-Control", "no-store")
        self.set_status(200 if healthy else 503)
        self.write({
            "status": "ok" if healthy else "degraded",
            "version": __version__,
            "uptime_seconds": round(time.time() - STARTED, 1),
            "checks": {"store": dict(store, backend=self.services.store.name), "mongodb": mongo},
            "memory": memory_bytes(),
        })
