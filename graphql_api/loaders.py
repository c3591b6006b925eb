"""Per-request DataLoaders: every relation is fetched in one batch per request level, through the service
layer's batch functions (which apply the same permissions and RLS as single reads)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import cached_property
from typing import Any, TypeVar
from uuid import UUID

from strawberry.dataloader import DataLoader

from services.activities import service as activities
from services.activities.schemas import Activity
from services.contacts import service as contacts
from services.contacts.schemas import Organization, Person
from services.deals import service as deals
from services.deals.schemas import Deal, StageChange
from services.kernel.uow import UnitOfWork
from services.leads import service as leads
from services.leads.schemas import Lead
from services.notes import service as notes
from services.notes.schemas import Note
from services.pipelines import service as pipelines
from services.pipelines.schemas import Pipeline, Stage
from services.summaries import service as summaries
from services.summaries.schemas import Summary, SummarySubject
from services.users import service as users
from services.users.schemas import UserProfile

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


class Loaders:
    """The request's loaders, each made when first used: a request uses a few of them, and one that writes gets a
    fresh set after each mutation."""

    def __init__(self, read: Read) -> None:
        self._read = read
        # Records read ahead for a page or record (graphql_api.types.prefetch), by loader and key: its relation
        # fields take them from here, without a future per key as a loader's cache would need.
        self.read_ahead: dict[DataLoader[Any, Any], dict[Any, Any]] = {}

    @cached_property
    def user(self) -> DataLoader[UUID, UserProfile | None]:
        return _by_id(self._read, users.get_many)

    @cached_property
    def pipeline(self) -> DataLoader[UUID, Pipeline | None]:
        return _by_id(self._read, pipelines.get_many)

    @cached_property
    def stage(self) -> DataLoader[UUID, Stage | None]:
        return _by_id(self._read, pipelines.get_stages)

    @cached_property
    def person(self) -> DataLoader[UUID, Person | None]:
        return _by_id(self._read, contacts.get_persons)

    @cached_property
    def organization(self) -> DataLoader[UUID, Organization | None]:
        return _by_id(self._read, contacts.get_organizations)

    @cached_property
    def deal(self) -> DataLoader[UUID, Deal | None]:
        return _by_id(self._read, deals.get_many)

    @cached_property
    def lead(self) -> DataLoader[UUID, Lead | None]:
        return _by_id(self._read, leads.get_many)

    @cached_property
    def stage_history(self) -> DataLoader[UUID, list[StageChange]]:
        return _grouped(self._read, deals.stage_histories)

    @cached_property
    def activities_of(self) -> dict[str, DataLoader[UUID, list[Activity]]]:
        return {link: _grouped(self._read, lambda uow, ids, link=link: activities.list_for(uow, link, ids))
                for link in ("deal_id", "lead_id", "person_id", "organization_id")}

    @cached_property
    def notes_of(self) -> dict[str, DataLoader[UUID, list[Note]]]:
        return {link: _grouped(self._read, lambda uow, ids, link=link: notes.list_for(uow, link, ids))
                for link in ("deal_id", "lead_id", "person_id", "organization_id")}

    @cached_property
    def latest_summary(self) -> dict[SummarySubject, DataLoader[UUID, Summary | None]]:
        return {kind: _by_subject(self._read, lambda uow, ids, kind=kind: summaries.latest_for(uow, kind, ids))
                for kind in (SummarySubject.DEAL, SummarySubject.PERSON, SummarySubject.ORGANIZATION)}


def _by_subject(
    read: Read, fetch: Callable[[UnitOfWork, list[UUID]], Awaitable[dict[UUID, T]]]
) -> DataLoader[UUID, T | None]:
    async def load(ids: list[UUID]) -> list[T | None]:
        found = await fetch(await read(), list(ids))
        return [found.get(i) for i in ids]

    return DataLoader(load_fn=load)
