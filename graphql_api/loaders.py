"""Per-request DataLoaders: every relation is fetched in one batch per request level, through the service
layer's batch functions (which apply the same permissions and RLS as single reads)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import cached_property
from typing import Any, TypeVar
from uuid import UUID

from strawberry.dataloader import DataLoader

from services.activities import service as activities
from services.contacts import service as contacts
from services.deals import service as deals
from services.kernel.uow import UnitOfWork
from services.leads import service as leads
from services.notes import service as notes
from services.pipelines import service as pipelines
from services.summaries import service as summaries
from services.summaries.schemas import SummarySubject
from services.users import service as users

T = TypeVar("T")
Read = Callable[[], Awaitable[UnitOfWork]]


def _by_id(read: Read, fetch: Callable[[UnitOfWork, list[UUID]], Awaitable[Sequence[Any]]]) -> DataLoader[UUID, Any]:
    """A loader of records by id; ids the caller may not see load as None."""

    async def load(ids: list[UUID]) -> list[Any]:
        found = {record.id: record for record in await fetch(await read(), list(ids))}
        return [found.get(i) for i in ids]

    return DataLoader(load_fn=load)


def _grouped(
    read: Read, fetch: Callable[[UnitOfWork, list[UUID]], Awaitable[dict[UUID, list[T]]]]
) -> DataLoader[UUID, list[T]]:
    async def load(ids: list[UUID]) -> list[list[T]]:
        found = await fetch(await read(), list(ids))
        return [found.get(i, []) for i in ids]

    return DataLoader(load_fn=load)


LINKS = ("deal_id", "lead_id", "person_id", "organization_id")  # what notes and activities attach to


def _made(make: Callable[[Read], T]) -> cached_property[T]:
    """A `Loaders` attribute: what `make` makes from the request's `read`, made when first used."""

    def get(loaders: Loaders) -> T:
        return make(loaders._read)

    return cached_property(get)


class Loaders:
    """The request's loaders, each made when first used: a request uses a few of them, and one that writes gets a
    fresh set after each mutation."""

    def __init__(self, read: Read) -> None:
        self._read = read
        # Records read ahead for a page or record (graphql_api.types.prefetch), by loader and key: its relation
        # fields take them from here, without a future per key as a loader's cache would need.
        self.read_ahead: dict[DataLoader[Any, Any], dict[Any, Any]] = {}

    user = _made(lambda read: _by_id(read, users.get_many))
    pipeline = _made(lambda read: _by_id(read, pipelines.get_many))
    stage = _made(lambda read: _by_id(read, pipelines.get_stages))
    person = _made(lambda read: _by_id(read, contacts.get_persons))
    organization = _made(lambda read: _by_id(read, contacts.get_organizations))
    deal = _made(lambda read: _by_id(read, deals.get_many))
    lead = _made(lambda read: _by_id(read, leads.get_many))
    stage_history = _made(lambda read: _grouped(read, deals.stage_histories))
    activities_of = _made(lambda read: {
        link: _grouped(read, lambda uow, ids, link=link: activities.list_for(uow, link, ids)) for link in LINKS})
    notes_of = _made(lambda read: {
        link: _grouped(read, lambda uow, ids, link=link: notes.list_for(uow, link, ids)) for link in LINKS})
    latest_summary = _made(lambda read: {
        kind: _by_subject(read, lambda uow, ids, kind=kind: summaries.latest_for(uow, kind, ids))
        for kind in (SummarySubject.DEAL, SummarySubject.PERSON, SummarySubject.ORGANIZATION)})


def _by_subject(
    read: Read, fetch: Callable[[UnitOfWork, list[UUID]], Awaitable[dict[UUID, T]]]
) -> DataLoader[UUID, T | None]:
    async def load(ids: list[UUID]) -> list[T | None]:
        found = await fetch(await read(), list(ids))
        return [found.get(i) for i in ids]

    return DataLoader(load_fn=load)
