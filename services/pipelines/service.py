"""Pipelines and their ordered stages. Stage order is always dense (0..n-1) and unique per pipeline."""

from __future__ import annotations

import builtins
from typing import Any
from uuid import UUID

from services.kernel import records
from services.kernel.errors import Conflict, Invalid, NotFound
from services.kernel.permissions import Perm, requires
from services.kernel.uow import Row, UnitOfWork
from services.pipelines.schemas import (
    Pipeline,
    PipelineCreate,
    PipelineUpdate,
    Stage,
    StageCreate,
    StageUpdate,
)


def _stage(row: Row) -> Stage:
    return Stage.model_validate(row)


async def _stages_of(uow: UnitOfWork, pipeline_ids: builtins.list[UUID]) -> dict[UUID, builtins.list[Stage]]:
    condition, keys = records.among("pipeline_id", pipeline_ids)
    rows = await uow.all(f"select * from public.stages where {condition} order by pipeline_id, position", [keys])
    grouped: dict[UUID, builtins.list[Stage]] = {pid: [] for pid in pipeline_ids}
    for row in rows:
        grouped[row["pipeline_id"]].append(_stage(row))
    return grouped


async def _fetch(uow: UnitOfWork, pipeline_id: UUID) -> Pipeline:
    row = await records.fetch(uow, "pipelines", "pipeline", pipeline_id)
    stages = await _stages_of(uow, [pipeline_id])
    return Pipeline.model_validate({**row, "stages": stages[pipeline_id]})


@requires(Perm.PIPELINES_READ)
async def get(uow: UnitOfWork, pipeline_id: UUID) -> Pipeline:
    return await _fetch(uow, pipeline_id)


@requires(Perm.PIPELINES_READ)
async def list(uow: UnitOfWork) -> builtins.list[Pipeline]:
    """All pipelines with their stages, in display order."""
    rows = await uow.all("select * from public.pipelines order by position, lower(name), id")
    stages = await _stages_of(uow, [r["id"] for r in rows])
    return [Pipeline.model_validate({**r, "stages": stages[r["id"]]}) for r in rows]


@requires(Perm.PIPELINES_READ)
async def get_many(uow: UnitOfWork, pipeline_ids: builtins.list[UUID]) -> builtins.list[Pipeline]:
    """Pipelines (with stages) by id (batch loader); missing ids are left out."""
    rows = await records.fetch_many(uow, "pipelines", pipeline_ids)
    stages = await _stages_of(uow, [r["id"] for r in rows])
    return [Pipeline.model_validate({**r, "stages": stages[r["id"]]}) for r in rows]


@requires(Perm.PIPELINES_READ)
async def get_stage(uow: UnitOfWork, stage_id: UUID) -> Stage:
    return _stage(await records.fetch(uow, "stages", "stage", stage_id))


@requires(Perm.PIPELINES_READ)
async def get_stages(uow: UnitOfWork, stage_ids: builtins.list[UUID]) -> builtins.list[Stage]:
    """Stages by id (batch loader); missing ids are left out."""
    return [_stage(r) for r in await records.fetch_many(uow, "stages", stage_ids)]


@requires(Perm.PIPELINES_READ)
async def default_pipeline(uow: UnitOfWork) -> Pipeline:
    """The first pipeline in display order: where deals and converted leads go when none is named."""
    row = await uow.one("select id from public.pipelines order by position, lower(name), id limit 1")
    if row is None:
        raise NotFound("pipeline", "default")
    return await _fetch(uow, row["id"])


async def _ensure_unique_name(uow: UnitOfWork, name: str, except_id: UUID | None = None) -> None:
    row = await uow.one(
        "select id from public.pipelines where lower(name) = lower(%s) and id is distinct from %s",
        [name.strip(), except_id],
    )
    if row is not None:
        raise Conflict(f"a pipeline named {name!r} already exists ({row['id']})")


@requires(Perm.PIPELINES_MANAGE)
async def create(uow: UnitOfWork, data: PipelineCreate) -> Pipeline:
    await _ensure_unique_name(uow, data.name)
    position = await uow.one("select coalesce(max(position) + 1, 0) as next from public.pipelines")
    row = await records.insert(
        uow, "pipelines", {"name": data.name.strip(), "position": position["next"] if position else 0}
    )
    for index, stage in enumerate(data.stages):
        await records.insert(
            uow,
            "stages",
            {
                "pipeline_id": row["id"],
                "name": stage.name.strip(),
                "position": index,
                "win_probability": stage.win_probability,
            },
        )
    pipeline = await _fetch(uow, row["id"])
    await uow.audit("pipeline.create", "pipeline", pipeline.id, after=pipeline.model_dump())
    uow.emit("crm/pipeline.created", pipeline_id=pipeline.id)
    return pipeline


@requires(Perm.PIPELINES_MANAGE)
async def update(
    uow: UnitOfWork, pipeline_id: UUID, data: PipelineUpdate, *, expected_version: int | None = None
) -> Pipeline:
    before = await _fetch(uow, pipeline_id)
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    if "name" in changes:
        changes["name"] = changes["name"].strip()
        await _ensure_unique_name(uow, changes["name"], pipeline_id)
    if await records.update(
        uow, "pipelines", "pipeline", pipeline_id, changes, expected_version=expected_version
    ) is None:
        return before
    after = await _fetch(uow, pipeline_id)
    await uow.audit("pipeline.update", "pipeline", pipeline_id, before=_plain(before), after=_plain(after))
    uow.emit("crm/pipeline.updated", pipeline_id=pipeline_id, fields=sorted(changes))
    return after


@requires(Perm.PIPELINES_MANAGE)
async def delete(uow: UnitOfWork, pipeline_id: UUID) -> None:
    """Delete a pipeline and its stages. Refused while deals are in it: move or delete them first."""
    before = await _fetch(uow, pipeline_id)
    deals = await uow.one("select count(*) as n from public.deals where pipeline_id = %s", [pipeline_id])
    if deals and deals["n"]:
        raise Conflict(f"pipeline {pipeline_id} still has {deals['n']} deal(s); move or delete them first")
    await records.delete(uow, "pipelines", "pipeline", pipeline_id)
    await uow.audit("pipeline.delete", "pipeline", pipeline_id, before=_plain(before))
    uow.emit("crm/pipeline.deleted", pipeline_id=pipeline_id)


async def _renumber(uow: UnitOfWork, pipeline_id: UUID, ordered_ids: builtins.list[UUID]) -> None:
    """Write positions 0..n-1 in the given order (the unique constraint is deferred to commit)."""
    await uow.execute(
        """
        update public.stages s set position = o.ordinality - 1
        from unnest(%s::uuid[]) with ordinality as o(id, ordinality)
        where s.id = o.id and s.pipeline_id = %s and s.position <> o.ordinality - 1
        """,
        [ordered_ids, pipeline_id],
    )


@requires(Perm.PIPELINES_MANAGE)
async def create_stage(uow: UnitOfWork, pipeline_id: UUID, data: StageCreate) -> Stage:
    pipeline = await _fetch(uow, pipeline_id)
    count = len(pipeline.stages)
    position = count if data.position is None else data.position
    if position > count:
        raise Invalid(f"position must be between 0 and {count}", field="position")
    row = await records.insert(
        uow,
        "stages",
        {
            "pipeline_id": pipeline_id,
            "name": data.name.strip(),
            "position": count,
            "win_probability": data.win_probability,
        },
    )
    order = [s.id for s in pipeline.stages]
    order.insert(position, row["id"])
    await _renumber(uow, pipeline_id, order)
    stage = _stage(await records.fetch(uow, "stages", "stage", row["id"]))
    await uow.audit("stage.create", "stage", stage.id, after=stage.model_dump())
    uow.emit("crm/stage.created", stage_id=stage.id, pipeline_id=pipeline_id)
    return stage


@requires(Perm.PIPELINES_MANAGE)
async def update_stage(
    uow: UnitOfWork, stage_id: UUID, data: StageUpdate, *, expected_version: int | None = None
) -> Stage:
    before = _stage(await records.fetch(uow, "stages", "stage", stage_id))
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    row = await records.update(uow, "stages", "stage", stage_id, changes, expected_version=expected_version)
    if row is None:
        return before
    after = _stage(row)
    await uow.audit("stage.update", "stage", stage_id, before=before.model_dump(), after=after.model_dump())
    uow.emit("crm/stage.updated", stage_id=stage_id, pipeline_id=after.pipeline_id, fields=sorted(changes))
    return after


@requires(Perm.PIPELINES_MANAGE)
async def delete_stage(uow: UnitOfWork, stage_id: UUID) -> None:
    """Delete a stage; its deals stay in the pipeline with no stage. The remaining order closes up."""
    before = _stage(await records.fetch(uow, "stages", "stage", stage_id))
    affected = await uow.one("select count(*) as n from public.deals where stage_id = %s", [stage_id])
    await records.delete(uow, "stages", "stage", stage_id)
    remaining = await uow.all(
        "select id from public.stages where pipeline_id = %s order by position", [before.pipeline_id]
    )
    await _renumber(uow, before.pipeline_id, [r["id"] for r in remaining])
    await uow.audit("stage.delete", "stage", stage_id, before=before.model_dump())
    uow.emit(
        "crm/stage.deleted",
        stage_id=stage_id,
        pipeline_id=before.pipeline_id,
        deals_unstaged=affected["n"] if affected else 0,
    )


@requires(Perm.PIPELINES_MANAGE)
async def reorder_stages(uow: UnitOfWork, pipeline_id: UUID, stage_ids: builtins.list[UUID]) -> Pipeline:
    """Set the stage order: `stage_ids` must list every stage of the pipeline exactly once."""
    before = await _fetch(uow, pipeline_id)
    current = [s.id for s in before.stages]
    if len(stage_ids) != len(set(stage_ids)) or set(stage_ids) != set(current):
        raise Invalid("stage_ids must list every stage of the pipeline exactly once", field="stage_ids")
    await _renumber(uow, pipeline_id, stage_ids)
    after = await _fetch(uow, pipeline_id)
    await uow.audit(
        "pipeline.reorder_stages", "pipeline", pipeline_id,
        before={"stage_ids": current}, after={"stage_ids": stage_ids},
    )
    uow.emit("crm/pipeline.stages_reordered", pipeline_id=pipeline_id, stage_ids=stage_ids)
    return after


def _plain(pipeline: Pipeline) -> dict[str, Any]:
    return pipeline.model_dump(exclude={"stages"})
