"""Per-user rate limits: a sliding window per user and surface, in this process's memory or in a shared store.

The window is `limits`' sliding window counter: the current fixed window's count plus the previous one's,
weighted by how much of the previous window the sliding window still covers. It approximates a moving window
(which remembers every request) in constant memory and time per user; `limits`' in-memory moving window expired
its entries through a worker thread on every request.

A limit is a `limits` expression such as "120/minute" or "10/second;500/hour", counted per user (the token's
verified subject), never per token, session or connection, so a caller cannot go faster by opening more of them.
With a shared store (`redis://host:6379/0`) every process and replica of a deployment draws on one budget; the
default (`memory://`) counts in each process. The store is reached through `limits`' asyncio API, so a Redis
round trip never blocks the event loop.

Callers check the limit before they touch the database: a refused request costs no read and no write.
"""

from __future__ import annotations

import math
import time
from uuid import UUID

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from services.kernel.errors import RateLimited, Unavailable

MEMORY = "memory://"
NAMESPACE = "pipecd"
# A shared store that does not answer within this many seconds fails the request (Unavailable), never hangs it.
STORE_TIMEOUT = 2.0


def storage(uri: str = MEMORY) -> Storage:
    """The store behind rate limits: `memory://` (each process counts alone) or `redis://...` (shared).

    Raises ValueError for a store `limits` does not know or cannot use (e.g. its client library is missing)."""
    scheme = uri if uri.startswith("async+") else f"async+{uri}"
    options: dict[str, float | str | bool] = {}
    if scheme.startswith(("async+redis", "async+valkey")):
        options = {"connect_timeout": STORE_TIMEOUT, "stream_timeout": STORE_TIMEOUT}
    try:
        found = storage_from_string(scheme, wrap_exceptions=True, **options)
    except Exception as exc:  # limits' ConfigurationError names the problem
        raise ValueError(f"unusable rate limit storage {uri!r}: {exc}") from exc
    if not isinstance(found, Storage):
        raise ValueError(f"rate limit storage {uri!r} has no asyncio support")
    return found


class RateLimit:
    """One surface's budget per user, e.g. `RateLimit("mcp", "120/minute", shared_storage)`."""

    def __init__(self, surface: str, expression: str, store: Storage | None = None) -> None:
        self.surface = surface
        self.items: list[RateLimitItem] = parse_many(expression)  # ValueError on a malformed expression
        self._limiter = SlidingWindowCounterRateLimiter(store if store is not None else storage())

    async def hit(self, user: UUID | str) -> None:
        """Count one request by `user`, or raise `RateLimited` (saying when to retry) when it would go over.

        With several limits (per second and per hour), a request refused by one is counted by none. A shared store
        that cannot be reached refuses the request as `Unavailable`: without it, no budget could be enforced."""
        try:
            await self._hit((NAMESPACE, self.surface, str(user)))
        except StorageError as exc:
            raise Unavailable("the rate limit store cannot be reached") from exc

    async def _hit(self, key: tuple[str, ...]) -> None:
        if len(self.items) > 1:
            for item in self.items:
                if not await self._limiter.test(item, *key):
                    raise await self._refusal(item, key)
        for item in self.items:
            if not await self._limiter.hit(item, *key):
                raise await self._refusal(item, key)

    async def reset(self, user: UUID | str) -> None:
        """Forget what `user` has used (an operator lifting a block; tests)."""
        for item in self.items:
            await self._limiter.clear(item, NAMESPACE, self.surface, str(user))

    async def _refusal(self, item: RateLimitItem, key: tuple[str, ...]) -> RateLimited:
        reset_at, _ = await self._limiter.get_window_stats(item, *key)
        retry_after = max(1, math.ceil(reset_at - time.time()))
        return RateLimited(f"too many requests: at most {item}; try again in {retry_after} s", retry_after=retry_after)
