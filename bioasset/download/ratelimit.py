"""A shared request-rate limiter that backs off when a server says 429 and recovers gradually.

Unlimited until the first 429. Then the rate drops to half of what was being sent (a multiplicative
decrease), every request waits out ``Retry-After``, and the rate doubles every
``recovery_doubling_s`` seconds after the pause until it is back to ``max_rate`` (or, when unlimited,
to twice the rate that was refused, and then unlimited). Runs on one event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque


class AdaptiveRateLimiter:
    def __init__(
        self,
        *,
        max_rate: float | None = None,
        min_rate: float = 0.5,
        decrease_factor: float = 0.5,
        recovery_doubling_s: float = 10.0,
        clock=time.monotonic,
    ) -> None:
        if max_rate is not None and max_rate <= 0:
            raise ValueError(f"max_rate {max_rate} must be positive requests per second, or None for unlimited")
        self.max_rate = max_rate
        self.min_rate = min_rate
        self.decrease_factor = decrease_factor
        self.recovery_doubling_s = recovery_doubling_s
        self.throttle_count = 0
        self._clock = clock
        self._throttled_rate: float | None = None  # the rate set by the last 429
        self._release_rate = 0.0  # back to unlimited once recovered to this rate
        self._recovery_from = 0.0  # the end of the last 429's pause
        self._paused_until = 0.0
        self._next_slot = 0.0
        self._recent_starts: deque[float] = deque(maxlen=64)

    @property
    def rate(self) -> float | None:
        """Requests per second allowed now; None when unlimited."""
        if self._throttled_rate is None:
            return self.max_rate
        elapsed = max(0.0, self._clock() - self._recovery_from)
        recovered = self._throttled_rate * 2 ** (elapsed / self.recovery_doubling_s)
        if recovered >= self._release_rate:
            self._throttled_rate = None  # fully recovered
            return self.max_rate
        return recovered

    def observed_rate(self) -> float | None:
        """Requests per second over the last few dozen requests, or None if too few were made."""
        if len(self._recent_starts) < 2:
            return None
        span = self._recent_starts[-1] - self._recent_starts[0]
        return (len(self._recent_starts) - 1) / span if span > 0 else None

    async def acquire(self) -> None:
        """Wait until one more request may start."""
        while True:
            now = self._clock()
            rate = self.rate
            start = max(now, self._paused_until)
            if rate is not None:
                start = max(start, self._next_slot)
            if start <= now:
                break
            await asyncio.sleep(start - now)
        if rate is not None:
            self._next_slot = now + 1.0 / rate
        self._recent_starts.append(now)

    def throttled(self, retry_after_s: float | None, fallback_pause_s: float) -> None:
        """A 429 arrived: pause everyone for ``Retry-After`` (or ``fallback_pause_s``) and slow down.

        Requests already in flight when the server started refusing bring their 429s back together;
        only the first of such a burst lowers the rate again.
        """
        now = self._clock()
        self.throttle_count += 1
        pause = retry_after_s if retry_after_s is not None else fallback_pause_s
        self._paused_until = max(self._paused_until, now + pause)
        if self._throttled_rate is not None and now < self._recovery_from:
            return
        current = self.rate or self.observed_rate()
        if current is None:
            return  # too few requests to know the rate to halve: the pause alone must do
        self._throttled_rate = max(self.min_rate, current * self.decrease_factor)
        self._release_rate = self.max_rate if self.max_rate is not None else 2 * current
        self._recovery_from = now + pause
