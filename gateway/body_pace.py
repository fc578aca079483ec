"""How fast a request body arrives, counting only the time spent waiting for the client.

A slow-loris client holds a connection (and, for uploads, a part buffer) by sending
a byte now and then; an idle timer that every byte resets never fires. `BodyPace`
judges the body by its rate over a window instead, and does not count the time the
gateway itself holds the body back (waiting for the store or for memory), so
backpressure never makes an honest client look slow.
"""

from __future__ import annotations


class BodyPace:
    """Tracks one request body; `verdict` says when it should be cut off."""

    def __init__(self, min_rate: float, window: float, idle_timeout: float, now: float) -> None:
        self.min_rate = min_rate
        self.window = window
        self.idle_timeout = idle_timeout
        self._held_total = 0.0  # seconds the gateway held the body back, before `_held_since`
        self._held_since: float | None = None
        self._window_start = 0.0  # client time at which the current window began
        self._window_bytes = 0
        self._last_byte = 0.0  # client time of the last byte
        self._origin = now

    def _client_time(self, now: float) -> float:
        held = self._held_total + (now - self._held_since if self._held_since is not None else 0.0)
        return now - self._origin - held

    def received(self, count: int, now: float) -> None:
        """`count` body bytes arrived."""
        if count:
            self._window_bytes += count
            self._last_byte = self._client_time(now)

    def hold(self, now: float) -> None:
        """The gateway stops reading the body (until `release`)."""
        if self._held_since is None:
            self._held_since = now

    def release(self, now: float) -> None:
        """The gateway reads the body again."""
        if self._held_since is not None:
            self._held_total += now - self._held_since
            self._held_since = None

    def verdict(self, now: float) -> str | None:
        """"idle" when no byte came for `idle_timeout` seconds of client time, "slow" when a whole
        window of client time brought fewer than `min_rate` bytes per second; else None (a full
        window that kept the rate starts the next one)."""
        if self._held_since is not None:
            return None
        client_now = self._client_time(now)
        if client_now - self._last_byte >= self.idle_timeout:
            return "idle"
        if self.min_rate > 0:
            elapsed = client_now - self._window_start
            if elapsed >= self.window:
                if self._window_bytes < self.min_rate * elapsed:
                    return "slow"
                self._window_start, self._window_bytes = client_now, 0
        return None

    def next_check(self, now: float) -> float:
        """Seconds until `verdict` may change (at least a tenth of a second)."""
        client_now = self._client_time(now)
        until_idle = self.idle_timeout - (client_now - self._last_byte)
        until_window = self.window - (client_now - self._window_start) if self.min_rate > 0 else until_idle
        return max(min(until_idle, until_window), 0.1)
