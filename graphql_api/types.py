"""GraphQL object types, generated from the service layer's pydantic models (fields and descriptions), plus
relations resolved through the request's DataLoaders.

No `from __future__ import annotations` here: relation types are resolved when the classes are built, and
`Lazy["X"]` names the types further down that relations point back to."""

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

import strawberry
from pydantic import ValidationError
from strawberry.dataloader import DataLoader
from strawberry.experimental.pydantic import type as from_model
from strawberry.scalars import JSON
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField

from graphql_api.errors import camel
from graphql_api.loaders import Loaders
from services.activities.schemas import Activity
from services.audit.schemas import AuditEntry
from services.contacts.schemas import Organization, Person
from services.deals.schemas import Deal, StageChange
from services.gdpr.schemas import Erasure
from services.kernel.errors import Invalid
from services.kernel.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page, PageRequest
from services.kernel.permissions import Perm
from services.kernel.principal import Principal
from services.leads.schemas import ConversionResult, Lead
from services.notes.schemas import Note
from services.notifications import service as notifications
from services.notifications.schemas import Notification
from services.pipelines.schemas import Pipeline, Stage
from services.search.schemas import SearchHit
from services.summaries.schemas import CitedText, Summary, SummaryContent, SummarySubject
from services.users.schemas import Me, Team, UserProfile

N = TypeVar("N")
Selection = SelectedField | FragmentSpread | InlineFragment


class _LazyType:
    """`Lazy["DealType"]`: a forward reference to a type further down this module (relations are circular)."""

    def __getitem__(self, name: str) -> Any:
        return Annotated[name, strawberry.lazy("graphql_api.types")]


Lazy = _LazyType()


def _loaders(info: strawberry.Info) -> Loaders:
    return info.context.loaders


@dataclass(frozen=True)
class Relation:
    """A field that reads other records through the request's loaders: `loader` picks the loader, `key` names the
    attribute of this record to load by (its `stage_id`, say, or its own `id` for the records attached to it)."""

    loader: Callable[[Loaders], DataLoader[Any, Any]]
    key: str
    many: bool = False  # the loader gives a list per key
    allowed: Callable[[Principal], bool] | None = None  # null (or an empty list) for a caller without the right


# Each model's relations by GraphQL field name: what `prefetch` reads ahead for a page.
RELATIONS: dict[type, dict[str, Relation]] = {}


def relation(model: type, name: str, relation: Relation, graphql_type: Any, description: str) -> Any:
    """The field `name` of `model`'s type, resolved through `relation` (see `related`)."""
    RELATIONS.setdefault(model, {})[camel(name)] = relation

    def resolve(self: Any, info: strawberry.Info) -> Any:
        return related(relation, self, info.context)

    resolve.__name__ = name
    return strawberry.field(resolver=resolve, graphql_type=graphql_type, description=description)


def related(relation: Relation, record: Any, context: Any) -> Any:
    """What `relation` gives for `record`. Synchronous when the records it needs were read ahead (`prefetch`):
    they are returned as they are, with no task, future or await per field. Otherwise the loader's future, which
    batches with the rest of its level as any DataLoader does."""
    if relation.allowed is not None and not relation.allowed(context.principal):
        return [] if relation.many else None
    key = getattr(record, relation.key)
    if key is None:
        return None
    loaders = context.loaders
    loader = relation.loader(loaders)
    if (ahead := loaders.read_ahead.get(loader)) is not None and (found := ahead.get(key, _MISSING)) is not _MISSING:
        return found
    loaded = loader.cache_map.get(key)
    if loaded is not None and loaded.done():
        return loaded.result()
    return loader.load(key)


async def prefetch(info: strawberry.Info, records: Sequence[Any], path: Sequence[str] = ()) -> None:
    """Read, a level at a time, the related records the query selects below `records` (reached from the current
    field through `path`, e.g. edges → node): one batch per relation and level, through the loaders' batch
    functions, the level's batches in one round trip (`UnitOfWork.reads_together`), but before the fields resolve,
    so that every field of the page resolves synchronously. A relation that fails is left to its field, which then
    reports the error where it belongs."""
    loaders, principal = _loaders(info), info.context.principal
    level = [(records, _below(info.selected_fields, path))]
    while level:
        reads: list[tuple[Relation, list[Any], list[Selection]]] = []
        for found, selections in level:
            if not found:
                continue
            relations = RELATIONS.get(type(found[0]), {})
            for name, below in _fields(selections).items():
                relation = relations.get(name)
                if relation is None or (relation.allowed is not None and not relation.allowed(principal)):
                    continue
                keys = list(dict.fromkeys(k for record in found if (k := getattr(record, relation.key)) is not None))
                if keys:
                    reads.append((relation, keys, below))
        if not reads:
            break
        async with (await info.context.read()).reads_together():  # one round trip for the level's batches
            outcomes = await asyncio.gather(*(_read_ahead(loaders, relation.loader(loaders), keys)
                                              for relation, keys, _ in reads), return_exceptions=True)
        level = []
        for (relation, _, below), outcome in zip(reads, outcomes, strict=True):
            if isinstance(outcome, BaseException) or not below:
                continue
            loaded = [r for group in outcome for r in (group if relation.many else [group]) if r is not None]
            level.append((loaded, below))


_MISSING = object()


async def _read_ahead(loaders: Loaders, loader: DataLoader[Any, Any], keys: list[Any]) -> list[Any]:
    """What `loader` gives for `keys`, read in one batch (but for keys read ahead before) and kept for `related`."""
    ahead = loaders.read_ahead.setdefault(loader, {})
    if missing := [key for key in keys if key not in ahead]:
        ahead.update(zip(missing, await loader.load_fn(missing), strict=True))
    return [ahead[key] for key in keys]


def _fields(selections: Sequence[Selection]) -> dict[str, list[Selection]]:
    """The fields selected (through fragments too), each with what is selected below it (merged across aliases)."""
    fields: dict[str, list[Selection]] = {}
    for selection in selections:
        if isinstance(selection, SelectedField):
            fields.setdefault(selection.name, []).extend(selection.selections)
        else:  # a fragment spread or an inline fragment
            for name, below in _fields(selection.selections).items():
                fields.setdefault(name, []).extend(below)
    return fields


def _below(selections: Sequence[Selection], path: Sequence[str]) -> list[Selection]:
    """What is selected at `path` below the current field (whose own selection is `selections`)."""
    found = [s for selection in selections for s in selection.selections]
    for name in path:
        found = _fields(found).get(name, [])
    return found


def selects(info: strawberry.Info, *names: str) -> bool:
    """Whether the query selects any of `names` directly below the current field (fragments included)."""
    return any(name in _fields(_below(info.selected_fields, ())) for name in names)


@from_model(model=UserProfile, all_fields=True, name="User", description="A CRM user (from Supabase Auth).")
class UserType:
    pass


@from_model(model=Team, all_fields=True, name="Team", description="A team of users.")
class TeamType:
    @strawberry.field(description="The team's members.")
    async def members(self, info: strawberry.Info) -> list[UserType]:
        found = await _loaders(info).user.load_many(self.member_ids)
        return [u for u in found if u is not None]


@from_model(model=Stage, all_fields=True, name="Stage", description="A stage of a pipeline.")
class StageType:
    pass


@from_model(model=Pipeline, all_fields=True, name="Pipeline", description="A sales pipeline with ordered stages.")
class PipelineType:
    pass


STAGE = Relation(lambda loaders: loaders.stage, "stage_id")


@from_model(model=StageChange, all_fields=True, name="StageChange", description="One stage change of a deal.")
class StageChangeType:
    from_stage = relation(StageChange, "from_stage", Relation(lambda loaders: loaders.stage, "from_stage_id"),
                          StageType | None, "The stage before (null when created, or if that stage was deleted).")
    to_stage = relation(StageChange, "to_stage", Relation(lambda loaders: loaders.stage, "to_stage_id"),
                        StageType | None, "The stage after.")


def _attachments(model: type, link: str) -> tuple[Any, Any]:
    """`activities` and `notes` relation fields for a record type linked through `link` (e.g. deal_id)."""
    activities = relation(model, "activities", Relation(lambda loaders: loaders.activities_of[link], "id", many=True),
                          list[Lazy["ActivityType"]], "Activities attached to this record, due first.")
    notes = relation(model, "notes", Relation(lambda loaders: loaders.notes_of[link], "id", many=True),
                     list[Lazy["NoteType"]], "Notes attached to this record, newest first.")
    return activities, notes


def _owner(model: type) -> Any:
    return relation(model, "owner", Relation(lambda loaders: loaders.user, "owner_id"), UserType | None, "The owner.")


def _person(model: type, description: str) -> Any:
    return relation(model, "person", Relation(lambda loaders: loaders.person, "person_id"), Lazy["PersonType"] | None,
                    description)


def _organization(model: type, description: str) -> Any:
    return relation(model, "organization", Relation(lambda loaders: loaders.organization, "organization_id"),
                    Lazy["OrganizationType"] | None, description)


@from_model(model=CitedText, all_fields=True, name="CitedText", description="A point with the records it rests on.")
class CitedTextType:
    pass


@from_model(model=SummaryContent, all_fields=True, name="SummaryContent",
            description="What the model wrote: plain text, to be shown as text (never as HTML or Markdown links).")
class SummaryContentType:
    pass


@from_model(model=Summary, all_fields=True, name="Summary",
            description="An AI summary you requested: queued at once, done a moment later (read it again). Made "
                        "from what you could see when it was made.")
class SummaryType:
    pass


def _latest_summary(model: type, subject_type: SummarySubject) -> Any:
    return relation(
        model, "latest_summary",
        Relation(lambda loaders: loaders.latest_summary[subject_type], "id", allowed=lambda p: p.can(Perm.AI_USE)),
        SummaryType | None, "Your newest finished AI summary of it (null without one, or without AI_USE).",
    )


@from_model(model=Organization, all_fields=True, name="Organization", description="A company or institution.")
class OrganizationType:
    owner = _owner(Organization)
    activities, notes = _attachments(Organization, "organization_id")
    latest_summary = _latest_summary(Organization, SummarySubject.ORGANIZATION)


@from_model(model=Person, all_fields=True, name="Person", description="A contact person.")
class PersonType:
    owner = _owner(Person)
    activities, notes = _attachments(Person, "person_id")
    latest_summary = _latest_summary(Person, SummarySubject.PERSON)
    organization = _organization(Person, "The organization the person works for.")


@from_model(model=Deal, all_fields=True, name="Deal", description="A deal moving through a pipeline.")
class DealType:
    owner = _owner(Deal)
    activities, notes = _attachments(Deal, "deal_id")
    latest_summary = _latest_summary(Deal, SummarySubject.DEAL)
    pipeline = relation(Deal, "pipeline", Relation(lambda loaders: loaders.pipeline, "pipeline_id"),
                        PipelineType | None, "The deal's pipeline.")
    stage = relation(Deal, "stage", STAGE, StageType | None, "The deal's current stage.")
    person = _person(Deal, "The contact person.")
    organization = _organization(Deal, "The organization.")
    stage_history = relation(Deal, "stage_history", Relation(lambda loaders: loaders.stage_history, "id", many=True),
                             list[StageChangeType], "Every stage change, oldest first.")


@from_model(model=Lead, all_fields=True, name="Lead", description="A lead in the inbox, before it becomes a deal.")
class LeadType:
    owner = _owner(Lead)
    activities, notes = _attachments(Lead, "lead_id")
    person = _person(Lead, "The linked person.")
    organization = _organization(Lead, "The linked organization.")
    converted_deal = relation(Lead, "converted_deal", Relation(lambda loaders: loaders.deal, "converted_deal_id"),
                              DealType | None, "The deal this lead became.")


def _links(model: type) -> tuple[Any, Any, Any, Any]:
    return (
        relation(model, "deal", Relation(lambda loaders: loaders.deal, "deal_id"), Lazy["DealType"] | None,
                 "The deal it belongs to."),
        relation(model, "lead", Relation(lambda loaders: loaders.lead, "lead_id"), Lazy["LeadType"] | None,
                 "The lead it belongs to."),
        _person(model, "The person it belongs to."),
        _organization(model, "The organization it belongs to."),
    )


@from_model(model=Activity, all_fields=True, name="Activity", description="A task, call, meeting, email or deadline.")
class ActivityType:
    owner = _owner(Activity)
    deal, lead, person, organization = _links(Activity)


@from_model(model=Note, all_fields=True, name="Note", description="A note on a CRM record.")
class NoteType:
    deal, lead, person, organization = _links(Note)
    author = relation(Note, "author", Relation(lambda loaders: loaders.user, "author_id"), UserType | None,
                      "Who wrote it.")


@from_model(model=SearchHit, all_fields=True, name="SearchHit", description="One search result.")
class SearchHitType:
    pass


@from_model(model=AuditEntry, all_fields=False, name="AuditEntry", description="One audited change.")
class AuditEntryType:
    id: strawberry.auto
    actor_id: strawberry.auto
    channel: strawberry.auto
    operation: strawberry.auto
    entity_type: strawberry.auto
    entity_id: strawberry.auto
    occurred_at: strawberry.auto
    diff: JSON = strawberry.field(description="Changed fields: {before: {...}, after: {...}}.")


@from_model(model=Erasure, all_fields=False, name="Erasure",
            description="A GDPR erasure of a person: its progress and what it removed (never the identifiers).")
class ErasureType:
    id: strawberry.auto
    person_id: strawberry.auto
    requested_by: strawberry.auto
    status: strawberry.auto
    counts: JSON
    hits: strawberry.auto
    created_at: strawberry.auto
    completed_at: strawberry.auto
    error: strawberry.auto


@from_model(model=ConversionResult, all_fields=True, name="LeadConversion", description="A converted lead.")
class ConversionType:
    pass


@strawberry.type(description="Where a page ends and whether more follow.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="Whether another page follows.")
    end_cursor: str | None = strawberry.field(description="Pass as `after` for the next page.")


@strawberry.type(description="One record on a page, with its cursor.")
class Edge(Generic[N]):
    cursor: str = strawberry.field(description="This record's position, usable as `after`.")
    node: N = strawberry.field(description="The record.")


class _Edge:
    """An `Edge` as its fields read it: the cursor is made only if the query asks for it."""

    __slots__ = ("index", "node", "page")

    def __init__(self, page: Page[Any], index: int) -> None:
        self.page, self.index, self.node = page, index, page.items[index]

    @property
    def cursor(self) -> str:
        return self.page.position(self.index)


@strawberry.type(description="A page of records.")
class Connection(Generic[N]):
    edges: list[Edge[N]] = strawberry.field(description="The records on this page.")
    page_info: PageInfo = strawberry.field(description="Pagination state.")
    total_count: int = strawberry.field(
        description="How many records match the filter, counted up to a limit (1,000 unless configured): past it, "
                    "this is the limit and `totalCountCapped` is true.")
    total_count_capped: bool = strawberry.field(
        description="True when more records match than were counted: `totalCount` is then a lower bound.")


async def connection(info: strawberry.Info, page: Page[Any]) -> Connection[Any]:
    """A service page as a connection, each edge with its item's position in the order the page was read in; the
    relations the query selects below its nodes are read ahead (`prefetch`)."""
    await prefetch(info, page.items, ("edges", "node"))
    edges = [_Edge(page, i) for i in range(len(page.items))]
    return Connection(
        edges=edges,  # type: ignore[arg-type]
        page_info=PageInfo(has_next_page=page.has_next, end_cursor=page.position(len(edges) - 1) if edges else None),
        total_count=page.total,
        total_count_capped=page.total_capped,
    )


async def loaded(info: strawberry.Info, record: Any) -> Any:
    """One record, with the relations the query selects below it read ahead (`prefetch`)."""
    await prefetch(info, [record])
    return record


def page_request(info: strawberry.Info, first: int, after: str | None) -> PageRequest:
    """The page a connection field asks for; its matches are counted only if the query selects the count."""
    try:
        return PageRequest(limit=first, after=after, count=selects(info, "totalCount", "totalCountCapped"))
    except ValidationError as exc:  # only the page size has bounds to break
        raise Invalid(f"first must be between 1 and {MAX_LIMIT}", field="first") from exc


@from_model(
    model=Notification, all_fields=True, name="Notification",
    description="Something that happened for you, e.g. an activity's reminder is due. What it shows of the record "
                "(subject, due date) is read now, as you may see it: null when the record is gone or hidden.",
)
class NotificationType:
    pass


@from_model(model=Me, all_fields=True, name="Me", description="The caller: profile, token scopes, permissions.")
class MeType:
    @strawberry.field(description="Your notifications, unread first, then newest first.")
    async def notifications(
        self, info: strawberry.Info, first: int = DEFAULT_LIMIT, after: str | None = None, unread_only: bool = False
    ) -> Connection[NotificationType]:
        page = await notifications.list(await info.context.read(), page_request(info, first, after),
                                        unread_only=unread_only)
        return await connection(info, page)

    @strawberry.field(description="How many of your notifications are unread.")
    async def unread_notification_count(self, info: strawberry.Info) -> int:
        return await notifications.unread_count(await info.context.read())
