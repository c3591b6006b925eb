"""Root mutation fields: one service operation each, in a transaction of its own."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar
from uuid import UUID

import strawberry
from pydantic import BaseModel
from strawberry.experimental.pydantic import input as input_from_model
from strawberry.types.arguments import InputContext
from strawberry.types.base import get_object_definition
from strawberry.types.unset import UNSET

from graphql_api.types import (
    ActivityType,
    ConversionType,
    DealType,
    ErasureType,
    LeadType,
    NoteType,
    NotificationType,
    OrganizationType,
    PersonType,
    PipelineType,
    StageType,
    SummaryType,
    TeamType,
    UserType,
)
from services.activities import service as activities
from services.activities.schemas import ActivityCreate, ActivityUpdate
from services.contacts import service as contacts
from services.contacts.schemas import OrganizationCreate, OrganizationUpdate, PersonCreate, PersonUpdate
from services.deals import service as deals
from services.deals.schemas import DealCreate, DealUpdate
from services.gdpr import service as gdpr
from services.kernel.permissions import Role
from services.leads import service as leads
from services.leads.schemas import LeadConversion, LeadCreate, LeadUpdate
from services.notes import service as notes
from services.notes.schemas import NoteCreate, NoteUpdate
from services.notifications import service as notifications
from services.pipelines import service as pipelines
from services.pipelines.schemas import (
    PipelineCreate,
    PipelineUpdate,
    StageCreate,
    StageInput,
    StageUpdate,
)
from services.summaries import service as summaries
from services.summaries.schemas import SummarySubject
from services.users import service as users
from services.users.schemas import ProfileUpdate, TeamCreate

C = TypeVar("C", bound=type)


def _plain(value: Any) -> Any:
    """A strawberry input (and the inputs nested in it) as plain data for pydantic to validate."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def changes_input_from_model(model: type[BaseModel], *, name: str) -> Callable[[C], C]:
    """An input for a partial update, generated from the pydantic model like every input, except that a field
    the client leaves out stays out of the model (unchanged), while an explicit null is passed on (e.g.
    `personId: null` unlinks the person). The generated input would publish `= null` for every field, so an
    omitted field would arrive as an explicit null and clear the value."""

    def wrap(cls: C) -> C:
        generated = input_from_model(model=model, all_fields=True, name=name)(cls)
        definition = get_object_definition(generated, strict=True)
        for field in definition.fields:
            field.default_value = UNSET  # no default in the schema: an omitted field stays absent

        def from_input(type_: type, value: Mapping[str, Any], context: InputContext) -> Any:
            given: dict[str, Any] = {}
            for field in definition.fields:
                graphql_name = context.config.name_converter.from_field(field)
                if graphql_name in value:
                    given[field.python_name] = context.convert(
                        value[graphql_name], field.resolve_type(type_definition=definition), graphql_name
                    )
            instance = type_(**given)
            instance._given = frozenset(given)
            return instance

        def to_pydantic(self: Any) -> BaseModel:
            return model(**{key: getattr(self, key) for key in self._given})

        definition.from_input = from_input
        generated.to_pydantic = to_pydantic  # type: ignore[attr-defined]
        return generated

    return wrap


# Inputs ----------------------------------------------------------------------------------------------------


@input_from_model(model=DealCreate, all_fields=True, name="DealCreateInput")
class DealCreateInput:
    pass


@changes_input_from_model(DealUpdate, name="DealUpdateInput")
class DealUpdateInput:
    pass


@input_from_model(model=PersonCreate, all_fields=True, name="PersonCreateInput")
class PersonCreateInput:
    pass


@changes_input_from_model(PersonUpdate, name="PersonUpdateInput")
class PersonUpdateInput:
    pass


@input_from_model(model=OrganizationCreate, all_fields=True, name="OrganizationCreateInput")
class OrganizationCreateInput:
    pass


@changes_input_from_model(OrganizationUpdate, name="OrganizationUpdateInput")
class OrganizationUpdateInput:
    pass


@input_from_model(model=LeadCreate, all_fields=True, name="LeadCreateInput")
class LeadCreateInput:
    pass


@changes_input_from_model(LeadUpdate, name="LeadUpdateInput")
class LeadUpdateInput:
    pass


@input_from_model(model=LeadConversion, all_fields=True, name="LeadConversionInput")
class LeadConversionInput:
    pass


@input_from_model(model=ActivityCreate, all_fields=True, name="ActivityCreateInput")
class ActivityCreateInput:
    pass


@changes_input_from_model(ActivityUpdate, name="ActivityUpdateInput")
class ActivityUpdateInput:
    pass


@input_from_model(model=NoteCreate, all_fields=True, name="NoteCreateInput")
class NoteCreateInput:
    pass


@changes_input_from_model(NoteUpdate, name="NoteUpdateInput")
class NoteUpdateInput:
    pass


@input_from_model(model=StageInput, all_fields=True, name="StageInput")
class StageInputInput:
    pass


@input_from_model(model=PipelineCreate, all_fields=True, name="PipelineCreateInput")
class PipelineCreateInput:
    def to_pydantic(self) -> PipelineCreate:
        """Validated as one tree: the default conversion builds each stage's model on its own, so an error in a
        stage would lose its place (`winProbability` instead of `stages.0.winProbability`)."""
        return PipelineCreate.model_validate(_plain(self))


@changes_input_from_model(PipelineUpdate, name="PipelineUpdateInput")
class PipelineUpdateInput:
    pass


@input_from_model(model=StageCreate, all_fields=True, name="StageCreateInput")
class StageCreateInput:
    pass


@changes_input_from_model(StageUpdate, name="StageUpdateInput")
class StageUpdateInput:
    pass


@changes_input_from_model(ProfileUpdate, name="ProfileUpdateInput")
class ProfileUpdateInput:
    pass


@strawberry.type(description="The outcome of a delete.")
class DeleteResult:
    id: UUID = strawberry.field(description="The id of the deleted record.")
    deleted: bool = strawberry.field(description="Always true: a delete that fails is an error instead.")


def _deleted(id: UUID) -> DeleteResult:
    return DeleteResult(id=id, deleted=True)


IdempotencyKey = Annotated[
    str | None,
    strawberry.argument(description="Repeat a create with the same key to get the first result back, not a twin."),
]
ExpectedVersion = Annotated[
    int | None,
    strawberry.argument(
        description="Refuse a change with CONFLICT if the record's version is no longer this. A call that changes "
        "nothing (the record already is as asked) returns the record whatever its version."
    ),
]
Force = Annotated[
    bool,
    strawberry.argument(description="Create it even though a visible record looks the same (else CONFLICT with "
                        "extensions.existingId)."),
]


@strawberry.type
class Mutation:
    # Users and teams (admins) -----------------------------------------------------------------------------

    @strawberry.mutation(description="Create a team (needs USERS_MANAGE).")
    async def create_team(self, info: strawberry.Info, name: str) -> TeamType:
        async with info.context.write() as uow:
            team = await users.create_team(uow, TeamCreate(name=name))
        return team

    @strawberry.mutation(description="Add a user to a team (needs USERS_MANAGE). Adding a member again changes "
                         "nothing.")
    async def add_team_member(self, info: strawberry.Info, team_id: UUID, user_id: UUID) -> TeamType:
        async with info.context.write() as uow:
            team = await users.add_team_member(uow, team_id, user_id)
        return team

    @strawberry.mutation(description="Remove a user from a team (needs USERS_MANAGE).")
    async def remove_team_member(self, info: strawberry.Info, team_id: UUID, user_id: UUID) -> TeamType:
        async with info.context.write() as uow:
            team = await users.remove_team_member(uow, team_id, user_id)
        return team

    @strawberry.mutation(description="Grant a role to a user (needs USERS_MANAGE).")
    async def grant_role(self, info: strawberry.Info, user_id: UUID, role: Role) -> UserType:
        async with info.context.write() as uow:
            user = await users.grant_role(uow, user_id, role)
        return user

    @strawberry.mutation(description="Revoke a role from a user (needs USERS_MANAGE).")
    async def revoke_role(self, info: strawberry.Info, user_id: UUID, role: Role) -> UserType:
        async with info.context.write() as uow:
            user = await users.revoke_role(uow, user_id, role)
        return user

    @strawberry.mutation(description="Change a display name or avatar: your own, or anyone's with USERS_MANAGE.")
    async def update_profile(self, info: strawberry.Info, user_id: UUID, input: ProfileUpdateInput) -> UserType:
        async with info.context.write() as uow:
            user = await users.update_profile(uow, user_id, input.to_pydantic())
        return user

    # Pipelines and stages (admins) ------------------------------------------------------------------------

    @strawberry.mutation(description="Create a pipeline with its stages, in order (needs PIPELINES_MANAGE).")
    async def create_pipeline(self, info: strawberry.Info, input: PipelineCreateInput) -> PipelineType:
        async with info.context.write() as uow:
            pipeline = await pipelines.create(uow, input.to_pydantic())
        return pipeline

    @strawberry.mutation(description="Rename a pipeline or change its display order (needs PIPELINES_MANAGE).")
    async def update_pipeline(
        self, info: strawberry.Info, id: UUID, input: PipelineUpdateInput,
        expected_version: ExpectedVersion = None,
    ) -> PipelineType:
        async with info.context.write() as uow:
            pipeline = await pipelines.update(uow, id, input.to_pydantic(), expected_version=expected_version)
        return pipeline

    @strawberry.mutation(description="Delete a pipeline and its stages; refused while deals are in it.")
    async def delete_pipeline(self, info: strawberry.Info, id: UUID) -> DeleteResult:
        async with info.context.write() as uow:
            await pipelines.delete(uow, id)
        return _deleted(id)

    @strawberry.mutation(description="Add a stage to a pipeline (default: at the end).")
    async def create_stage(self, info: strawberry.Info, pipeline_id: UUID, input: StageCreateInput) -> StageType:
        async with info.context.write() as uow:
            stage = await pipelines.create_stage(uow, pipeline_id, input.to_pydantic())
        return stage

    @strawberry.mutation(description="Rename a stage or change its win probability.")
    async def update_stage(
        self, info: strawberry.Info, id: UUID, input: StageUpdateInput,
        expected_version: ExpectedVersion = None,
    ) -> StageType:
        async with info.context.write() as uow:
            stage = await pipelines.update_stage(uow, id, input.to_pydantic(), expected_version=expected_version)
        return stage

    @strawberry.mutation(description="Delete a stage; its deals stay in the pipeline with no stage.")
    async def delete_stage(self, info: strawberry.Info, id: UUID) -> DeleteResult:
        async with info.context.write() as uow:
            await pipelines.delete_stage(uow, id)
        return _deleted(id)

    @strawberry.mutation(description="Set the order of a pipeline's stages: list every stage exactly once.")
    async def reorder_stages(self, info: strawberry.Info, pipeline_id: UUID, stage_ids: list[UUID]) -> PipelineType:
        async with info.context.write() as uow:
            pipeline = await pipelines.reorder_stages(uow, pipeline_id, stage_ids)
        return pipeline

    # Activities -------------------------------------------------------------------------------------------

    @strawberry.mutation(description="Plan an activity (default: a task owned by you), optionally attached to a "
                         "deal, lead, person or organization.")
    async def create_activity(
        self, info: strawberry.Info, input: ActivityCreateInput, idempotency_key: IdempotencyKey = None
    ) -> ActivityType:
        async with info.context.write() as uow:
            activity = await activities.create(uow, input.to_pydantic(), idempotency_key=idempotency_key)
        return activity

    @strawberry.mutation(description="Change an activity's fields (fields left out stay as they are). "
                       "Values equal to the current ones change nothing: no new version, no audit entry, no event.")
    async def update_activity(
        self, info: strawberry.Info, id: UUID, input: ActivityUpdateInput,
        expected_version: ExpectedVersion = None,
    ) -> ActivityType:
        async with info.context.write() as uow:
            activity = await activities.update(uow, id, input.to_pydantic(), expected_version=expected_version)
        return activity

    @strawberry.mutation(description="Mark an activity done (or, with done: false, not done again). One that "
                       "already is returns unchanged; of concurrent calls exactly one changes it.")
    async def complete_activity(
        self, info: strawberry.Info, id: UUID, done: bool = True, expected_version: ExpectedVersion = None
    ) -> ActivityType:
        async with info.context.write() as uow:
            activity = await activities.complete(uow, id, done=done, expected_version=expected_version)
        return activity

    @strawberry.mutation(description="Delete an activity.")
    async def delete_activity(self, info: strawberry.Info, id: UUID) -> DeleteResult:
        async with info.context.write() as uow:
            await activities.delete(uow, id)
        return _deleted(id)

    # Notes ------------------------------------------------------------------------------------------------

    @strawberry.mutation(description="Write a note as yourself, attached to the records it names.")
    async def create_note(
        self, info: strawberry.Info, input: NoteCreateInput, idempotency_key: IdempotencyKey = None
    ) -> NoteType:
        async with info.context.write() as uow:
            note = await notes.create(uow, input.to_pydantic(), idempotency_key=idempotency_key)
        return note

    @strawberry.mutation(description="Change a note's text or links (fields left out stay as they are). "
                       "Values equal to the current ones change nothing: no new version, no audit entry, no event.")
    async def update_note(
        self, info: strawberry.Info, id: UUID, input: NoteUpdateInput, expected_version: ExpectedVersion = None
    ) -> NoteType:
        async with info.context.write() as uow:
            note = await notes.update(uow, id, input.to_pydantic(), expected_version=expected_version)
        return note

    @strawberry.mutation(description="Delete a note.")
    async def delete_note(self, info: strawberry.Info, id: UUID) -> DeleteResult:
        async with info.context.write() as uow:
            await notes.delete(uow, id)
        return _deleted(id)

    # Leads ------------------------------------------------------------------------------------------------

    @strawberry.mutation(description="Add a lead to the inbox (owned by you unless ownerId says otherwise).")
    async def create_lead(
        self, info: strawberry.Info, input: LeadCreateInput, idempotency_key: IdempotencyKey = None
    ) -> LeadType:
        async with info.context.write() as uow:
            lead = await leads.create(uow, input.to_pydantic(), idempotency_key=idempotency_key)
        return lead

    @strawberry.mutation(description="Change a lead's fields (fields left out stay as they are). "
                       "Values equal to the current ones change nothing: no new version, no audit entry, no event.")
    async def update_lead(
        self, info: strawberry.Info, id: UUID, input: LeadUpdateInput, expected_version: ExpectedVersion = None
    ) -> LeadType:
        async with info.context.write() as uow:
            lead = await leads.update(uow, id, input.to_pydantic(), expected_version=expected_version)
        return lead

    @strawberry.mutation(description="Archive a lead (out of the inbox, not deleted). An archived lead returns "
                       "unchanged; a converted one is a CONFLICT.")
    async def archive_lead(
        self, info: strawberry.Info, id: UUID, expected_version: ExpectedVersion = None
    ) -> LeadType:
        async with info.context.write() as uow:
            lead = await leads.archive(uow, id, expected_version=expected_version)
        return lead

    @strawberry.mutation(description="Bring an archived lead back to the inbox. An open lead returns unchanged; a "
                       "converted one is a CONFLICT.")
    async def unarchive_lead(
        self, info: strawberry.Info, id: UUID, expected_version: ExpectedVersion = None
    ) -> LeadType:
        async with info.context.write() as uow:
            lead = await leads.unarchive(uow, id, expected_version=expected_version)
        return lead

    @strawberry.mutation(description="Turn a lead into a deal, finding or creating its person and organization. "
                         "Converting it again returns the same deal and changes nothing.")
    async def convert_lead(
        self, info: strawberry.Info, id: UUID, input: LeadConversionInput | None = None
    ) -> ConversionType:
        async with info.context.write() as uow:
            result = await leads.convert(uow, id, None if input is None else input.to_pydantic())
        return result

    @strawberry.mutation(description="Delete a lead.")
    async def delete_lead(self, info: strawberry.Info, id: UUID) -> DeleteResult:
        async with info.context.write() as uow:
            await leads.delete(uow, id)
        return _deleted(id)

    # Persons and organizations ----------------------------------------------------------------------------

    @strawberry.mutation(description="Create a person; refused with CONFLICT (extensions.existingId) when a "
                         "visible person has one of the emails, unless force is true.")
    async def create_person(
        self, info: strawberry.Info, input: PersonCreateInput, force: Force = False,
        idempotency_key: IdempotencyKey = None,
    ) -> PersonType:
        async with info.context.write() as uow:
            person = await contacts.create_person(
                uow, input.to_pydantic(), force=force, idempotency_key=idempotency_key
            )
        return person

    @strawberry.mutation(description="Change a person's fields (fields left out stay as they are). "
                       "Values equal to the current ones change nothing: no new version, no audit entry, no event.")
    async def update_person(
        self, info: strawberry.Info, id: UUID, input: PersonUpdateInput, expected_version: ExpectedVersion = None
    ) -> PersonType:
        async with info.context.write() as uow:
            person = await contacts.update_person(uow, id, input.to_pydantic(), expected_version=expected_version)
        return person

    @strawberry.mutation(description="Delete a person; their deals, leads, notes and activities stay, unlinked.")
    async def delete_person(self, info: strawberry.Info, id: UUID) -> DeleteResult:
        async with info.context.write() as uow:
            await contacts.delete_person(uow, id)
        return _deleted(id)

    @strawberry.mutation(description="Create an organization; refused with CONFLICT (extensions.existingId) when "
                         "a visible one has the same name or domain, unless force is true.")
    async def create_organization(
        self, info: strawberry.Info, input: OrganizationCreateInput, force: Force = False,
        idempotency_key: IdempotencyKey = None,
    ) -> OrganizationType:
        async with info.context.write() as uow:
            organization = await contacts.create_organization(
                uow, input.to_pydantic(), force=force, idempotency_key=idempotency_key
            )
        return organization

    @strawberry.mutation(description="Change an organization's fields (fields left out stay as they are). "
                       "Values equal to the current ones change nothing: no new version, no audit entry, no event.")
    async def update_organization(
        self, info: strawberry.Info, id: UUID, input: OrganizationUpdateInput,
        expected_version: ExpectedVersion = None,
    ) -> OrganizationType:
        async with info.context.write() as uow:
            organization = await contacts.update_organization(
                uow, id, input.to_pydantic(), expected_version=expected_version
            )
        return organization

    @strawberry.mutation(description="Delete an organization; its persons, deals and leads stay, unlinked.")
    async def delete_organization(self, info: strawberry.Info, id: UUID) -> DeleteResult:
        async with info.context.write() as uow:
            await contacts.delete_organization(uow, id)
        return _deleted(id)

    # Deals ------------------------------------------------------------------------------------------------

    @strawberry.mutation(description="Create a deal (default: the first pipeline's first stage, owned by you).")
    async def create_deal(
        self, info: strawberry.Info, input: DealCreateInput,
        idempotency_key: IdempotencyKey = None,
    ) -> DealType:
        async with info.context.write() as uow:
            deal = await deals.create(uow, input.to_pydantic(), idempotency_key=idempotency_key)
        return deal

    @strawberry.mutation(description="Change a deal's fields (stage and status have their own mutations; fields "
                         "left out stay as they are). Values equal to the current ones change nothing: no new "
                         "version, no audit entry, no event.")
    async def update_deal(
        self, info: strawberry.Info, id: UUID, input: DealUpdateInput,
        expected_version: ExpectedVersion = None,
    ) -> DealType:
        async with info.context.write() as uow:
            deal = await deals.update(uow, id, input.to_pydantic(), expected_version=expected_version)
        return deal

    @strawberry.mutation(description="Move a deal to a stage (of another pipeline too, when pipelineId names it). "
                       "A deal already in that stage returns unchanged.")
    async def move_deal_to_stage(
        self, info: strawberry.Info, id: UUID, stage_id: UUID, pipeline_id: UUID | None = None,
        expected_version: ExpectedVersion = None,
    ) -> DealType:
        async with info.context.write() as uow:
            deal = await deals.move_stage(
                uow, id, stage_id, pipeline_id=pipeline_id, expected_version=expected_version
            )
        return deal

    @strawberry.mutation(description="Mark a deal won. A won deal returns unchanged (nothing is written); of "
                       "concurrent calls exactly one wins the deal, the others get the won deal.")
    async def mark_deal_won(
        self, info: strawberry.Info, id: UUID, expected_version: ExpectedVersion = None
    ) -> DealType:
        async with info.context.write() as uow:
            deal = await deals.mark_won(uow, id, expected_version=expected_version)
        return deal

    @strawberry.mutation(description="Mark a deal lost; the reason is required. A lost deal returns unchanged, with "
                       "the reason recorded when it was lost (to record another, reopen it and mark it lost again); "
                       "of concurrent calls exactly one loses the deal.")
    async def mark_deal_lost(
        self, info: strawberry.Info, id: UUID, reason: str, expected_version: ExpectedVersion = None
    ) -> DealType:
        async with info.context.write() as uow:
            deal = await deals.mark_lost(uow, id, reason, expected_version=expected_version)
        return deal

    @strawberry.mutation(description="Reopen a won or lost deal. An open deal returns unchanged (nothing is "
                       "written); of concurrent calls exactly one reopens it.")
    async def reopen_deal(
        self, info: strawberry.Info, id: UUID, expected_version: ExpectedVersion = None
    ) -> DealType:
        async with info.context.write() as uow:
            deal = await deals.reopen(uow, id, expected_version=expected_version)
        return deal

    @strawberry.mutation(description="Delete a deal with its stage history; its notes and activities stay, "
                         "unlinked.")
    async def delete_deal(self, info: strawberry.Info, id: UUID) -> DeleteResult:
        async with info.context.write() as uow:
            await deals.delete(uow, id)
        return _deleted(id)

    # GDPR ---------------------------------------------------------------------------------------------------

    @strawberry.mutation(description="Erase a person for good (GDPR; needs GDPR_ERASE): the person, the notes and "
                         "activities about them alone, and every mention of their name, emails and phones, then "
                         "verified. Runs in the background; follow it with `erasure(id)`. While one is pending for "
                         "the person, that one is returned.")
    async def request_erasure(self, info: strawberry.Info, person_id: UUID) -> ErasureType:
        async with info.context.write() as uow:
            erasure = await gdpr.request_erasure(uow, person_id)
        return erasure

    # Your notifications -----------------------------------------------------------------------------------

    @strawberry.mutation(description="Mark one of your notifications read. One already read returns unchanged "
                         "(nothing is written); another user's is NOT_FOUND.")
    async def mark_notification_read(self, info: strawberry.Info, id: UUID) -> NotificationType:
        async with info.context.write() as uow:
            notification = await notifications.mark_read(uow, id)
        return notification

    @strawberry.mutation(description="Mark all your unread notifications read; returns how many were unread.")
    async def mark_all_notifications_read(self, info: strawberry.Info) -> int:
        async with info.context.write() as uow:
            return await notifications.mark_all_read(uow)

    # AI summaries -----------------------------------------------------------------------------------------

    @strawberry.mutation(description="Ask for an AI summary of a deal, person or organization you can see, or of "
                         "your own deals in a pipeline (needs AI_USE). Returns it QUEUED at once; read it with "
                         "`summary(id)` a moment later. Asking again while one is pending returns that one.")
    async def request_summary(
        self, info: strawberry.Info, subject_type: SummarySubject, subject_id: UUID
    ) -> SummaryType:
        async with info.context.write() as uow:
            summary = await summaries.request_summary(uow, subject_type, subject_id)
        return summary
