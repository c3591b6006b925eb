"""Reads started together by concurrent tasks go to the database in one round trip (`UnitOfWork.reads_together`),
with the same answers as one at a time; a failing read fails its batch and leaves nothing half-done."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from conftest import counts

from services.contacts import service as contacts
from services.contacts.schemas import OrganizationCreate
from services.kernel.errors import Invalid


class Pipelines:
    """Counts the pipelines (one round trip each) a unit of work's connection enters."""

    def __init__(self, uow: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = 0
        real = uow.conn.pipeline

        @asynccontextmanager
        async def counted() -> Any:
            self.entered += 1
            async with real() as pipeline:
                yield pipeline

        monkeypatch.setattr(uow.conn, "pipeline", counted)


READS = ["select n from generate_series(1, 3) n", "select 'a' as s", "select n from generate_series(5, 4) n"]
ANSWERS = [[{"n": 1}, {"n": 2}, {"n": 3}], [{"s": "a"}], []]


async def test_reads_started_together_are_sent_in_one_round_trip_with_the_same_answers(actors, monkeypatch):
    async with actors.uow("bob") as uow:
        pipelines = Pipelines(uow, monkeypatch)
        alone = [await uow.all(query) for query in READS]
        assert pipelines.entered == 0
        async with uow.reads_together():
            together = await asyncio.gather(*(uow.all(query) for query in READS))
        assert pipelines.entered == 1
        assert alone == together == ANSWERS
        async with uow.reads_together():  # one read alone is sent as it is
            assert await uow.all(READS[0]) == ANSWERS[0]
        assert pipelines.entered == 1


async def test_a_read_that_comes_later_is_sent_after_the_batch(actors, monkeypatch):
    async with actors.uow("bob") as uow:
        pipelines = Pipelines(uow, monkeypatch)

        async def later() -> Any:
            await asyncio.sleep(0.01)
            return await uow.all(READS[1])

        async with uow.reads_together():
            answers = await asyncio.gather(uow.all(READS[0]), later(), uow.all(READS[2]),
                                           uow.one("select 7 as n"))
        assert answers == [ANSWERS[0], ANSWERS[1], ANSWERS[2], {"n": 7}]
        assert pipelines.entered == 1


async def test_a_failing_read_fails_every_read_of_its_batch_and_the_transaction(actors):
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        async with actors.uow("bob") as uow:
            async with uow.reads_together():
                outcomes = await asyncio.gather(uow.all(READS[0]), uow.all("select 1 / 0"), uow.all(READS[1]),
                                                return_exceptions=True)
            assert [type(o) for o in outcomes] == [Invalid, Invalid, Invalid]
            assert str(outcomes[1]) == "division by zero"
            await uow.execute("insert into public.organizations (name) values ('Never')")
    async with actors.uow("bob") as uow:
        assert await uow.all("select 1 from public.organizations where name = 'Never'") == []


async def test_a_reader_cancelled_while_waiting_leaves_the_others_their_answers(actors):
    async with actors.uow("bob") as uow:
        async with uow.reads_together():
            leader = asyncio.ensure_future(uow.all(READS[0]))
            follower = asyncio.ensure_future(uow.all(READS[1]))
            third = asyncio.ensure_future(uow.all(READS[2]))
            await asyncio.sleep(0)  # all three have joined the batch
            follower.cancel()
            assert await leader == ANSWERS[0]
            assert await third == ANSWERS[2]
            assert follower.cancelled()
        assert await uow.all("select 1 as n") == [{"n": 1}]  # the connection is in order


async def test_a_batch_whose_sender_is_cancelled_before_sending_fails_its_readers(actors):
    async with actors.uow("bob") as uow:
        async with uow.reads_together():
            leader = asyncio.ensure_future(uow.all(READS[0]))
            follower = asyncio.ensure_future(uow.all(READS[1]))
            await asyncio.sleep(0)
            leader.cancel()
            await asyncio.gather(leader, follower, return_exceptions=True)
            assert leader.cancelled() and follower.cancelled()
        assert await uow.all("select 2 as n") == [{"n": 2}]


async def test_a_large_change_commits_with_its_bookkeeping(actors, admin):
    """Hundreds of audited creates in one unit of work: their audit rows (about 1 MB) and COMMIT go out together."""
    async with actors.uow("bob") as uow:
        for n in range(1000):
            await contacts.create_organization(uow, OrganizationCreate(name=f"Large {n}", address="x" * 900))
    assert counts(admin, "organizations")["organizations"] >= 1000
    assert admin.execute("select count(*) from public.audit_log where entity_type = 'organization'"
                         " and operation = 'organization.create'").fetchone()[0] >= 1000
