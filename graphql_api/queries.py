"""Root query fields: each authenticates (through the context), calls one service function, maps the result."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import strawberry
from strawberry.experimental.pydantic import input as input_from_model

from graphql_api.types import (
    ActivityType,
    AuditEntryType,
    Connection,
    DealType,
    ErasureType,
    LeadType,
    MeType,
    NoteType,
    OrganizationType,
    PersonType,
    PipelineType,
    SearchHitType,
    SummaryType,
    TeamType,
    UserType,
    connection,
    loaded,
    page_request,
)
from services.activities import service as activities
from services.activities.schemas import ActivityFilter
from services.audit import service as audit
from services.contacts import service as contacts
from services.contacts.schemas import OrganizationFilter, PersonFilter
from services.deals import service as deals
from services.deals.schemas import DealFilter, DealSort
from services.gdpr import service as gdpr
from services.kernel.errors import Invalid
from services.kernel.pagination import DEFAULT_LIMIT
from services.leads import service as leads
from services.leads.schemas import LeadFilter
from services.notes import service as notes
from services.notes.schemas import NoteFilter
from services.pipelines import service as pipelines
from services.search import service as search_service
from services.search.schemas import SearchType
from services.summaries import service as summaries
from services.summaries.schemas import SummarySubject
from services.users import service as users


@input_from_model(model=DealFilter, all_fields=True, name="DealFilter")
class DealFilterInput:
    pass


@input_from_model(model=PersonFilter, all_fields=True, name="PersonFilter")
class PersonFilterInput:
    pass


@input_from_model(model=OrganizationFilter, all_fields=True, name="OrganizationFilter")
class OrganizationFilterInput:
    pass


@input_from_model(model=LeadFilter, all_fields=True, name="LeadFilter")
class LeadFilterInput:
    pass


@input_from_model(model=ActivityFilter, all_fields=True, name="ActivityFilter")
class ActivityFilterInput:
    pass


@input_from_model(model=NoteFilter, all_fields=True, name="NoteFilter")
class NoteFilterInput:
    pass


@contextmanager
def _limit_is_first() -> Iterator[None]:
    """The services call the page size `limit`; GraphQL callers know it as the argument `first`."""
    try:
        yield
    except Invalid as exc:
        if exc.field != "limit":
            raise
        raise Invalid(exc.message.replace("limit", "first", 1), field="first") from exc


def _filter(value: Any) -> Any:
    return None if value is None else value.to_pydantic()


@strawberry.type
class Query:
    @strawberry.field(description="The caller: profile, roles, teams, token scopes and effective permissions.")
    async def me(self, info: strawberry.Info) -> MeType:
        return await users.whoami(await info.context.read())

    @strawberry.field(description="All users.")
    async def users(self, info: strawberry.Info) -> list[UserType]:
        return await users.list(await info.context.read())

    @strawberry.field(description="All teams.")
    async def teams(self, info: strawberry.Info) -> list[TeamType]:
        return await users.list_teams(await info.context.read())

    @strawberry.field(description="All pipelines with their stages, in display order.")
    async def pipelines(self, info: strawberry.Info) -> list[PipelineType]:
        return await pipelines.list(await info.context.read())

    @strawberry.field(description="One pipeline; null, with a NOT_FOUND error, if it is missing or hidden.")
    async def pipeline(self, info: strawberry.Info, id: UUID) -> PipelineType | None:
        return await pipelines.get(await info.context.read(), id)

    @strawberry.field(description="Deals visible to the caller, in `sort` order (default: newest first). A cursor"
                                  " continues only the sort it came from.")
    async def deals(
        self, info: strawberry.Info, first: int = DEFAULT_LIMIT, after: str | None = None,
        filter: DealFilterInput | None = None, sort: DealSort = DealSort.CREATED_DESC,
    ) -> Connection[DealType]:
        page = await deals.list(await info.context.read(), _filter(filter), page_request(info, first, after), sort=sort)
        return await connection(info, page)

    @strawberry.field(description="One deal; null, with a NOT_FOUND error, if it is missing or hidden.")
    async def deal(self, info: strawberry.Info, id: UUID) -> DealType | None:
        return await loaded(info, await deals.get(await info.context.read(), id))

    @strawberry.field(description="One of your AI summaries (poll it after requestSummary until it is DONE).")
    async def summary(self, info: strawberry.Info, id: UUID) -> SummaryType:
        return await summaries.get(await info.context.read(), id)

    @strawberry.field(description="Your AI summaries of a record or pipeline, newest first.")
    async def summaries(
        self, info: strawberry.Info, subject_type: SummarySubject, subject_id: UUID, first: int = DEFAULT_LIMIT,
        after: str | None = None,
    ) -> Connection[SummaryType]:
        page = await summaries.list_for(await info.context.read(), subject_type, subject_id,
                                        page_request(info, first, after))
        return await connection(info, page)

    @strawberry.field(description="Persons visible to the caller, newest first.")
    async def persons(
        self, info: strawberry.Info, first: int = DEFAULT_LIMIT, after: str | None = None,
        filter: PersonFilterInput | None = None,
    ) -> Connection[PersonType]:
        page = await contacts.list_persons(await info.context.read(), _filter(filter), page_request(info, first, after))
        return await connection(info, page)

    @strawberry.field(description="One person; null, with a NOT_FOUND error, if it is missing or hidden.")
    async def person(self, info: strawberry.Info, id: UUID) -> PersonType | None:
        return await loaded(info, await contacts.get_person(await info.context.read(), id))

    @strawberry.field(description="Organizations visible to the caller, newest first.")
    async def organizations(
        self, info: strawberry.Info, first: int = DEFAULT_LIMIT, after: str | None = None,
        filter: OrganizationFilterInput | None = None,
    ) -> Connection[OrganizationType]:
        page = await contacts.list_organizations(await info.context.read(), _filter(filter),
                                                 page_request(info, first, after))
        return await connection(info, page)

    @strawberry.field(description="One organization; null, with a NOT_FOUND error, if it is missing or hidden.")
    async def organization(self, info: strawberry.Info, id: UUID) -> OrganizationType | None:
        return await loaded(info, await contacts.get_organization(await info.context.read(), id))

    @strawberry.field(description="Leads visible to the caller, newest first.")
    async def leads(
        self, info: strawberry.Info, first: int = DEFAULT_LIMIT, after: str | None = None,
        filter: LeadFilterInput | None = None,
    ) -> Connection[LeadType]:
        page = await leads.list(await info.context.read(), _filter(filter), page_request(info, first, after))
        return await connection(info, page)

    @strawberry.field(description="One lead; null, with a NOT_FOUND error, if it is missing or hidden.")
    async def lead(self, info: strawberry.Info, id: UUID) -> LeadType | None:
        return await loaded(info, await leads.get(await info.context.read(), id))

    @strawberry.field(description="Activities visible to the caller, newest first.")
    async def activities(
        self, info: strawberry.Info, first: int = DEFAULT_LIMIT, after: str | None = None,
        filter: ActivityFilterInput | None = None,
    ) -> Connection[ActivityType]:
        page = await activities.list(await info.context.read(), _filter(filter), page_request(info, first, after))
        return await connection(info, page)

    @strawberry.field(description="One activity; null, with a NOT_FOUND error, if it is missing or hidden.")
    async def activity(self, info: strawberry.Info, id: UUID) -> ActivityType | None:
        return await loaded(info, await activities.get(await info.context.read(), id))

    @strawberry.field(description="Notes visible to the caller, newest first.")
    async def notes(
        self, info: strawberry.Info, first: int = DEFAULT_LIMIT, after: str | None = None,
        filter: NoteFilterInput | None = None,
    ) -> Connection[NoteType]:
        page = await notes.list(await info.context.read(), _filter(filter), page_request(info, first, after))
        return await connection(info, page)

    @strawberry.field(description="Find persons, organizations, deals and leads by name, email, domain or title.")
    async def search(
        self, info: strawberry.Info, query: str, types: list[SearchType] | None = None, first: int = 10
    ) -> list[SearchHitType]:
        with _limit_is_first():
            hits = await search_service.search(await info.context.read(), query, types=types, limit=first)
        return hits

    @strawberry.field(description="The audit trail of one record, newest first (needs AUDIT_READ).")
    async def audit_log(
        self, info: strawberry.Info, entity_type: str, entity_id: UUID, first: int = 100
    ) -> list[AuditEntryType]:
        with _limit_is_first():
            entries = await audit.for_entity(await info.context.read(), entity_type, entity_id, limit=first)
        return entries

    @strawberry.field(description="One GDPR erasure's progress (needs GDPR_ERASE); null, with a NOT_FOUND error, "
                      "if it is missing.")
    async def erasure(self, info: strawberry.Info, id: UUID) -> ErasureType | None:
        return await gdpr.get(await info.context.read(), id)
