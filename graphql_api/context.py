"""Per-request context: who is calling, one read transaction shared by the request's resolvers, the
request's DataLoaders, and write transactions for mutations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

from starlette.requests import Request

from graphql_api.loaders import Loaders
from services.kernel.errors import Unauthenticated
from services.kernel.principal import Principal
from services.kernel.uow import Database, UnitOfWork

OpenSession = Callable[[str], AbstractAsyncContextManager[UnitOfWork]]


class AuthenticationFailed(Exception):
    """Raised before any resolver runs; answered as a 401 with a GraphQL error body and no data."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Context:
    db: Database
    stack: AsyncExitStack
    principal_or_none: Principal | None = None
    loaders: Loaders = field(init=False)
    _read: UnitOfWork | None = None
    _read_stack: AsyncExitStack | None = None
    _read_untouched: bool = False  # the transaction authentication opened, nothing read in it yet
    _opening_read: asyncio.Lock = field(default_factory=asyncio.Lock)
    finished: list[Callable[[], None]] = field(default_factory=list)  # run as the request ends (see close)

    def __post_init__(self) -> None:
        self.loaders = Loaders(self.read)

    @property
    def principal(self) -> Principal:
        if self.principal_or_none is None:
            raise Unauthenticated("missing bearer token")
        return self.principal_or_none

    def close(self) -> None:
        """Break the request's reference cycles (the loaders refer back to this context through `read`, the
        executor to itself): its objects are then freed as soon as it ends, by reference counting, not by a cyclic
        garbage collection that would pause a later request."""
        for callback in self.finished:
            callback()
        self.finished.clear()
        self.__dict__.pop("loaders", None)

    async def open(self, session: AbstractAsyncContextManager[UnitOfWork]) -> None:
        """Authenticate by opening the request's transaction: the caller's roles are read in the round trip that
        opens it, and the request's resolvers read in it."""
        reading = AsyncExitStack()
        uow = await reading.enter_async_context(session)
        assert isinstance(uow.principal, Principal)
        self._read, self._read_stack, self._read_untouched = uow, reading, True
        self.principal_or_none = uow.principal
        self.stack.push_async_callback(self._end_read)

    async def read(self) -> UnitOfWork:
        """The request's read transaction (opened on first use if a mutation ended it; closed when the request
        ends).

        Root fields resolve concurrently: the lock makes the first one open the transaction and the others wait
        for it, instead of each opening (and holding until the request ends) a pool connection of its own."""
        async with self._opening_read:
            if self._read is None:
                reading = AsyncExitStack()
                self._read = await reading.enter_async_context(self.db.unit_of_work(self.principal))
                self._read_stack = reading
                self.stack.push_async_callback(self._end_read)
            self._read_untouched = False
        return self._read

    async def _end_read(self) -> None:
        reading, self._read, self._read_stack = self._read_stack, None, None
        if reading is not None:
            await reading.aclose()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[UnitOfWork]:
        """A transaction of its own for one mutation: committed when the mutation returns. The request's loaders
        then start afresh, so the fields of this mutation and of later ones in the document see the change.

        The first mutation of a request writes in the transaction authentication opened, if nothing has read in
        it yet. Otherwise the read transaction is ended first: mutations run one after another, so nothing is
        using it, and waiting for the write's connection while holding the read's is how a handful of such
        documents at once would hold every connection of the pool and wait forever. The next field that reads
        opens a fresh one."""
        async with self._opening_read:
            untouched = self._read_stack if self._read_untouched else None
            if untouched is not None:
                uow, self._read, self._read_stack, self._read_untouched = self._read, None, None, False
            else:
                await self._end_read()
        if untouched is not None and uow is not None:
            async with untouched:  # commits on return, rolls back on an error, as a unit of work does
                yield uow
        else:
            async with self.db.unit_of_work(self.principal) as uow:
                yield uow
        self.loaders = Loaders(self.read)


OpenContext = Callable[[Request], AbstractAsyncContextManager[Context]]


def context_getter(db: Database, open_session: OpenSession) -> OpenContext:
    """The request's context, opened by authenticating its token (AuthenticationFailed if it cannot be) and closed
    as the request ends."""

    @asynccontextmanager
    async def get_context(request: Request) -> AsyncIterator[Context]:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if header and (scheme.lower() != "bearer" or not token.strip()):
            raise AuthenticationFailed("the Authorization header must be 'Bearer <token>'")
        if not header and not _is_ide_page(request):
            raise AuthenticationFailed("missing bearer token")
        async with AsyncExitStack() as stack:
            context = Context(db=db, stack=stack)
            if header:
                try:
                    await context.open(open_session(token.strip()))
                except Unauthenticated as exc:
                    raise AuthenticationFailed(exc.message) from exc
            try:
                yield context
            finally:
                context.close()

    return get_context


def _is_ide_page(request: Request) -> bool:
    """A browser asking for GraphiQL (no query yet) needs no token; every operation does."""
    return request.method == "GET" and "query" not in request.query_params and "text/html" in request.headers.get(
        "accept", ""
    )

