"""Per-request context: who is calling, one read transaction shared by the request's resolvers, the
request's DataLoaders, and write transactions for mutations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

from fastapi import Request
from strawberry.fastapi import BaseContext

from graphql_api.loaders import Loaders
from services.kernel.errors import Unauthenticated
from services.kernel.principal import Principal
from services.kernel.uow import Database, UnitOfWork

Authenticate = Callable[[str], Awaitable[Principal]]


class AuthenticationFailed(Exception):
    """Raised before any resolver runs; answered as a 401 with a GraphQL error body and no data."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Context(BaseContext):
    db: Database
    principal_or_none: Principal | None
    stack: AsyncExitStack
    loaders: Loaders = field(init=False)
    _read: UnitOfWork | None = None
    _read_stack: AsyncExitStack | None = None
    _opening_read: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        super().__init__()
        self.loaders = Loaders(self.read)

    @property
    def principal(self) -> Principal:
        if self.principal_or_none is None:
            raise Unauthenticated("missing bearer token")
        return self.principal_or_none

    async def read(self) -> UnitOfWork:
        """The request's read transaction (opened on first use, closed when the request ends).

        Root fields resolve concurrently: the lock makes the first one open the transaction and the others wait
        for it, instead of each opening (and holding until the request ends) a pool connection of its own."""
        async with self._opening_read:
            if self._read is None:
                reading = AsyncExitStack()
                self._read = await reading.enter_async_context(self.db.unit_of_work(self.principal))
                self._read_stack = reading
                self.stack.push_async_callback(self._end_read)
        return self._read

    async def _end_read(self) -> None:
        reading, self._read, self._read_stack = self._read_stack, None, None
        if reading is not None:
            await reading.aclose()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[UnitOfWork]:
        """A transaction of its own for one mutation: committed when the mutation returns. The request's loaders
        then start afresh, so the fields of this mutation and of later ones in the document see the change.

        The read transaction (opened by an earlier mutation's fields) is ended first: mutations run one after
        another, so nothing is using it, and waiting for the write's connection while holding the read's is
        how a handful of such documents at once would hold every connection of the pool and wait forever.
        The next field that reads opens a fresh one."""
        async with self._opening_read:
            await self._end_read()
        async with self.db.unit_of_work(self.principal) as uow:
            yield uow
        self.loaders = Loaders(self.read)


def context_getter(db: Database, authenticate: Authenticate) -> Callable[[Request], AsyncIterator[Context]]:
    async def get_context(request: Request) -> AsyncIterator[Context]:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        principal: Principal | None = None
        if header:
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthenticationFailed("the Authorization header must be 'Bearer <token>'")
            try:
                principal = await authenticate(token.strip())
            except Unauthenticated as exc:
                raise AuthenticationFailed(exc.message) from exc
        elif not _is_ide_page(request):
            raise AuthenticationFailed("missing bearer token")
        async with AsyncExitStack() as stack:
            yield Context(db=db, principal_or_none=principal, stack=stack)

    return get_context


def _is_ide_page(request: Request) -> bool:
    """A browser asking for GraphiQL (no query yet) needs no token; every operation does."""
    return request.method == "GET" and "query" not in request.query_params and "text/html" in request.headers.get(
        "accept", ""
    )

