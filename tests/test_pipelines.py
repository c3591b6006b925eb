"""Pipelines and their stages, through the service layer: dense stage order, deletes, names, permissions."""

from __future__ import annotations

from uuid import UUID

import pytest
from conftest import counts, events
from pydantic import ValidationError

from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.kernel.errors import Conflict, Forbidden, Invalid
from services.kernel.permissions import Scope
from services.pipelines import service as pipelines
from services.pipelines.schemas import (
    PipelineCreate,
    PipelineUpdate,
    StageCreate,
    StageInput,
    StageUpdate,
)

WRITTEN = ("pipelines", "stages", "audit_log", "outbox")


def stage_rows(admin, pipeline_id: UUID) -> list[tuple[str, int]]:
    """(name, position) of a pipeline's stages as stored, in position order."""
    return admin.execute(
        "select name, position from public.stages where pipeline_id = %s order by position", [pipeline_id]
    ).fetchall()




async def make_pipeline(actors, name: str, *stages: str):
    async with actors.uow("alice") as uow:
        return await pipelines.create(
            uow, PipelineCreate(name=name, stages=[StageInput(name=s, win_probability=10) for s in stages])
        )


# Creating pipelines


async def test_create_pipeline_numbers_stages_from_zero_in_the_given_order(actors, admin):
    async with actors.uow("alice") as uow:
        created = await pipelines.create(
            uow,
            PipelineCreate(
                name="Hiring",
                stages=[
                    StageInput(name="Applied", win_probability=5),
                    StageInput(name="Interview"),
                    StageInput(name="Offer", win_probability=80),
                ],
            ),
        )

    assert [(s.name, s.position, s.win_probability) for s in created.stages] == [
        ("Applied", 0, 5),
        ("Interview", 1, 0),
        ("Offer", 2, 80),
    ]
    assert created.position == 1  # after "Sales"
    assert stage_rows(admin, created.id) == [("Applied", 0), ("Interview", 1), ("Offer", 2)]
    assert admin.execute(
        "select actor_id, channel, operation, entity_type, entity_id from public.audit_log"
    ).fetchall() == [(actors.id("alice"), "graphql", "pipeline.create", "pipeline", created.id)]
    assert events(admin) == [("crm/pipeline.created", {"pipeline_id": str(created.id)})]


@pytest.mark.parametrize("name", ["Sales", "sales", "  SALES  "])
async def test_pipeline_names_are_unique_ignoring_case(actors, admin, name):
    with pytest.raises(Conflict):
        async with actors.uow("alice") as uow:
            await pipelines.create(uow, PipelineCreate(name=name))

    assert counts(admin, *WRITTEN) == {"pipelines": 1, "stages": 4, "audit_log": 0, "outbox": 0}


async def test_renaming_a_pipeline_to_a_taken_name_is_a_conflict(actors, admin):
    hiring = await make_pipeline(actors, "Hiring")

    with pytest.raises(Conflict):
        async with actors.uow("alice") as uow:
            await pipelines.update(uow, hiring.id, PipelineUpdate(name="SALES"))

    assert admin.execute("select name from public.pipelines order by name").fetchall() == [("Hiring",), ("Sales",)]


@pytest.mark.parametrize("probability", [101, -1])
def test_win_probability_outside_0_to_100_is_rejected_by_every_input_model(probability):
    for model, extra in ((StageInput, {"name": "X"}), (StageCreate, {"name": "X"}), (StageUpdate, {})):
        with pytest.raises(ValidationError) as info:
            model(win_probability=probability, **extra)
        assert [e["loc"] for e in info.value.errors()] == [("win_probability",)]


@pytest.mark.parametrize("probability", [0, 100])
def test_win_probability_bounds_are_inclusive(probability):
    assert StageInput(name="X", win_probability=probability).win_probability == probability


# Stage order


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        (0, ["New", "Qualified", "Contact Made", "Proposal", "Negotiation"]),
        (2, ["Qualified", "Contact Made", "New", "Proposal", "Negotiation"]),
        (4, ["Qualified", "Contact Made", "Proposal", "Negotiation", "New"]),
        (None, ["Qualified", "Contact Made", "Proposal", "Negotiation", "New"]),
    ],
)
async def test_create_stage_inserts_at_the_position_and_keeps_order_dense(actors, company, admin, position, expected):
    async with actors.uow("alice") as uow:
        stage = await pipelines.create_stage(
            uow, company.sales_pipeline_id, StageCreate(name="New", win_probability=5, position=position)
        )

    assert stage.position == expected.index("New")
    assert stage_rows(admin, company.sales_pipeline_id) == [(name, i) for i, name in enumerate(expected)]
    assert events(admin) == [
        ("crm/stage.created", {"stage_id": str(stage.id), "pipeline_id": str(company.sales_pipeline_id)})
    ]


async def test_create_stage_beyond_the_end_is_invalid_position(actors, company, admin):
    with pytest.raises(Invalid) as info:
        async with actors.uow("alice") as uow:
            await pipelines.create_stage(uow, company.sales_pipeline_id, StageCreate(name="Far", position=5))

    assert info.value.field == "position"
    assert counts(admin, *WRITTEN) == {"pipelines": 1, "stages": 4, "audit_log": 0, "outbox": 0}


async def test_reorder_stages_sets_exactly_the_given_order(actors, company, admin):
    qualified, contact, proposal, negotiation = company.sales_stage_ids
    new_order = [negotiation, qualified, proposal, contact]

    async with actors.uow("alice") as uow:
        reordered = await pipelines.reorder_stages(uow, company.sales_pipeline_id, new_order)

    assert [(s.id, s.position) for s in reordered.stages] == [(sid, i) for i, sid in enumerate(new_order)]
    assert stage_rows(admin, company.sales_pipeline_id) == [
        ("Negotiation", 0),
        ("Qualified", 1),
        ("Proposal", 2),
        ("Contact Made", 3),
    ]
    assert admin.execute("select operation, diff from public.audit_log").fetchall() == [
        (
            "pipeline.reorder_stages",
            {
                "before": {"stage_ids": [str(s) for s in company.sales_stage_ids]},
                "after": {"stage_ids": [str(s) for s in new_order]},
            },
        )
    ]
    assert events(admin) == [
        (
            "crm/pipeline.stages_reordered",
            {"pipeline_id": str(company.sales_pipeline_id), "stage_ids": [str(s) for s in new_order]},
        )
    ]


@pytest.mark.parametrize(
    "pick",
    [
        pytest.param(lambda s: [s[3], s[2], s[1]], id="missing-a-stage"),
        pytest.param(lambda s: [s[3], s[2], s[1], s[0], s[0]], id="repeating-a-stage"),
        pytest.param(lambda s: [s[3], s[2], s[1], s[1]], id="repeating-instead-of-one"),
        pytest.param(lambda s: [], id="empty"),
    ],
)
async def test_reorder_stages_refuses_a_list_that_is_not_every_stage_once(actors, company, admin, pick):
    with pytest.raises(Invalid) as info:
        async with actors.uow("alice") as uow:
            await pipelines.reorder_stages(uow, company.sales_pipeline_id, pick(company.sales_stage_ids))

    assert info.value.field == "stage_ids"
    assert stage_rows(admin, company.sales_pipeline_id) == [
        ("Qualified", 0),
        ("Contact Made", 1),
        ("Proposal", 2),
        ("Negotiation", 3),
    ]
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


async def test_reorder_stages_refuses_a_stage_of_another_pipeline(actors, company, admin):
    hiring = await make_pipeline(actors, "Hiring", "Applied")
    ids = [*company.sales_stage_ids[:3], hiring.stages[0].id]

    with pytest.raises(Invalid) as info:
        async with actors.uow("alice") as uow:
            await pipelines.reorder_stages(uow, company.sales_pipeline_id, ids)

    assert info.value.field == "stage_ids"
    assert stage_rows(admin, hiring.id) == [("Applied", 0)]


# Deleting stages and pipelines


async def test_delete_stage_unstages_its_deals_and_closes_up_the_order(actors, company, admin):
    contact_made = company.sales_stage_ids[1]
    async with actors.uow("bob") as uow:
        in_stage = await deals.create(uow, DealCreate(title="In Contact Made", stage_id=contact_made))
        elsewhere = await deals.create(uow, DealCreate(title="In Proposal", stage_id=company.sales_stage_ids[2]))
    admin.execute("truncate public.audit_log, public.outbox")

    async with actors.uow("alice") as uow:
        await pipelines.delete_stage(uow, contact_made)

    assert admin.execute("select id, pipeline_id, stage_id from public.deals order by title").fetchall() == [
        (in_stage.id, company.sales_pipeline_id, None),
        (elsewhere.id, company.sales_pipeline_id, company.sales_stage_ids[2]),
    ]
    assert stage_rows(admin, company.sales_pipeline_id) == [("Qualified", 0), ("Proposal", 1), ("Negotiation", 2)]
    assert admin.execute("select operation, entity_id from public.audit_log").fetchall() == [
        ("stage.delete", contact_made)
    ]
    assert events(admin) == [
        (
            "crm/stage.deleted",
            {"stage_id": str(contact_made), "pipeline_id": str(company.sales_pipeline_id), "deals_unstaged": 1},
        )
    ]


async def test_a_deal_without_a_stage_can_be_moved_back_into_one(actors, company, admin):
    async with actors.uow("bob") as uow:
        deal = await deals.create(uow, DealCreate(title="Orphan", stage_id=company.sales_stage_ids[1]))
    async with actors.uow("alice") as uow:
        await pipelines.delete_stage(uow, company.sales_stage_ids[1])

    async with actors.uow("bob") as uow:
        unstaged = await deals.get(uow, deal.id)
        moved = await deals.move_stage(uow, deal.id, company.sales_stage_ids[3])

    assert (unstaged.stage_id, str(unstaged.weighted_value)) == (None, "0.00")
    assert (moved.pipeline_id, moved.stage_id) == (company.sales_pipeline_id, company.sales_stage_ids[3])


async def test_delete_pipeline_removes_its_stages(actors, company, admin):
    hiring = await make_pipeline(actors, "Hiring", "Applied", "Offer")
    admin.execute("truncate public.audit_log, public.outbox")

    async with actors.uow("alice") as uow:
        await pipelines.delete(uow, hiring.id)

    assert admin.execute("select count(*) from public.stages where pipeline_id = %s", [hiring.id]).fetchone() == (0,)
    assert admin.execute("select id from public.pipelines").fetchall() == [(company.sales_pipeline_id,)]
    assert counts(admin, "stages", "audit_log") == {"stages": 4, "audit_log": 1}
    assert events(admin) == [("crm/pipeline.deleted", {"pipeline_id": str(hiring.id)})]


async def test_delete_pipeline_with_deals_is_a_conflict_and_deletes_nothing(actors, company, admin):
    async with actors.uow("carol") as uow:
        await deals.create(uow, DealCreate(title="Keeps Sales alive", visibility="owner"))
    admin.execute("truncate public.audit_log, public.outbox")

    with pytest.raises(Conflict):
        async with actors.uow("alice") as uow:
            await pipelines.delete(uow, company.sales_pipeline_id)

    assert counts(admin, "deals", *WRITTEN) == {
        "deals": 1,
        "pipelines": 1,
        "stages": 4,
        "audit_log": 0,
        "outbox": 0,
    }


async def test_a_pipeline_whose_deals_moved_away_can_be_deleted(actors, company, admin):
    hiring = await make_pipeline(actors, "Hiring", "Applied")
    async with actors.uow("bob") as uow:
        deal = await deals.create(uow, DealCreate(title="Moves on", pipeline_id=hiring.id))
        await deals.move_stage(uow, deal.id, company.sales_stage_ids[0], pipeline_id=company.sales_pipeline_id)

    async with actors.uow("alice") as uow:
        await pipelines.delete(uow, hiring.id)

    assert admin.execute("select id from public.pipelines").fetchall() == [(company.sales_pipeline_id,)]
    assert admin.execute(
        "select from_stage_id, to_stage_id from public.deal_stage_history where deal_id = %s order by id", [deal.id]
    ).fetchall() == [(None, None), (None, company.sales_stage_ids[0])]


# Who may manage pipelines


async def _create_pipeline(uow, company):
    await pipelines.create(uow, PipelineCreate(name="Shadow", stages=[StageInput(name="One")]))


async def _update_pipeline(uow, company):
    await pipelines.update(uow, company.sales_pipeline_id, PipelineUpdate(name="Renamed"))


async def _delete_pipeline(uow, company):
    await pipelines.delete(uow, company.sales_pipeline_id)


async def _create_stage(uow, company):
    await pipelines.create_stage(uow, company.sales_pipeline_id, StageCreate(name="Extra", position=0))


async def _update_stage(uow, company):
    await pipelines.update_stage(uow, company.sales_stage_ids[0], StageUpdate(win_probability=99))


async def _delete_stage(uow, company):
    await pipelines.delete_stage(uow, company.sales_stage_ids[0])


async def _reorder_stages(uow, company):
    await pipelines.reorder_stages(uow, company.sales_pipeline_id, company.sales_stage_ids[::-1])


MANAGE_OPERATIONS = [
    _create_pipeline,
    _update_pipeline,
    _delete_pipeline,
    _create_stage,
    _update_stage,
    _delete_stage,
    _reorder_stages,
]


@pytest.mark.parametrize("operation", MANAGE_OPERATIONS, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize(
    ("who", "scopes"),
    [("bob", None), ("mia", None), ("vic", None), ("alice", frozenset({Scope.READ}))],
    ids=["member", "manager", "viewer", "admin-with-read-only-token"],
)
async def test_only_admins_with_pipelines_manage_may_change_pipelines(actors, company, admin, operation, who, scopes):
    pipelines_before = admin.execute("select name, version from public.pipelines").fetchall()
    stages_before = admin.execute("select id, name, position, win_probability from public.stages order by id")
    stages_before = stages_before.fetchall()

    with pytest.raises(Forbidden) as info:
        async with actors.uow(who, scopes=scopes) as uow:
            await operation(uow, company)

    assert info.value.permission == "pipelines:manage"
    assert admin.execute("select name, version from public.pipelines").fetchall() == pipelines_before
    assert (
        admin.execute("select id, name, position, win_probability from public.stages order by id").fetchall()
        == stages_before
    )
    assert counts(admin, *WRITTEN) == {"pipelines": 1, "stages": 4, "audit_log": 0, "outbox": 0}


@pytest.mark.parametrize("who", ["bob", "mia", "vic"])
async def test_everyone_reads_pipelines_in_display_order(actors, company, who):
    await make_pipeline(actors, "Hiring", "Applied")

    async with actors.uow(who) as uow:
        listed = await pipelines.list(uow)
        default = await pipelines.default_pipeline(uow)

    assert [(p.name, p.position, [s.name for s in p.stages]) for p in listed] == [
        ("Sales", 0, ["Qualified", "Contact Made", "Proposal", "Negotiation"]),
        ("Hiring", 1, ["Applied"]),
    ]
    assert default.id == company.sales_pipeline_id


async def test_update_stage_changes_probability_and_audits_only_changed_fields(actors, company, admin):
    proposal = company.sales_stage_ids[2]

    async with actors.uow("alice") as uow:
        before = await pipelines.get_stage(uow, proposal)
        after = await pipelines.update_stage(uow, proposal, StageUpdate(win_probability=60))

    assert (after.win_probability, after.version) == (60, before.version + 1)
    assert admin.execute("select operation, diff from public.audit_log").fetchall() == [
        (
            "stage.update",
            {"before": {"win_probability": 50, "version": 1}, "after": {"win_probability": 60, "version": 2}},
        )
    ]
    assert events(admin) == [
        (
            "crm/stage.updated",
            {"stage_id": str(proposal), "pipeline_id": str(company.sales_pipeline_id), "fields": ["win_probability"]},
        )
    ]
