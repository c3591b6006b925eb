"""Per-user rate limit for tool calls: a moving window, kept in this process's memory.

The limit is a `limits` expression such as "120/minute" or "10/second;500/hour". It is per user, not per
token or connection, so an assistant cannot go faster by opening more sessions against the same process.
"""

from __future__ import annotations

import math
import time
from uuid import UUID

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


class RateLimited(Exception):
    def __init__(self, limit: RateLimitItem, retry_after: int) -> None:
        super().__init__(f"too many calls: at most {limit}; try again in {retry_after} s")
        self.retry_after = retry_after


class ToolRateLimit:
    def __init__(self, expression: str) -> None:
        self.items = parse_many(expression)  # raises ValueError on a malformed expression
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, user_id: UUID) -> None:
        """Count one call by `user_id`, or raise `RateLimited` (the call is not counted) when over a limit."""
        key = str(user_id)
        for item in self.items:
            if not self._limiter.test(item, key):
                reset_at, _ = self._limiter.get_window_stats(item, key)
                raise RateLimited(item, max(1, math.ceil(reset_at - time.time())))
        for item in self.items:
            self._limiter.hit(item, key)
