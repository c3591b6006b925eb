"""The demo company: five users in two teams, two pipelines, and a few dozen records of every kind.

Everything after the users is written through the service layer as the record's owner, with idempotency
keys, so seeding twice writes nothing new and the demo data carries real audit rows and events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from uuid import UUID

import psycopg

from pipecd.accounts import create_local_user, create_supabase_user, grant_access
from pipecd.runtime import principal_for
from pipecd.settings import Settings
from services.activities import service as activities
from services.activities.schemas import ActivityCreate, ActivityType
from services.contacts import service as contacts
from services.contacts.schemas import OrganizationCreate, PersonCreate
from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.kernel.permissions import Role
from services.kernel.records import Visibility
from services.kernel.uow import Database
from services.leads import service as leads
from services.leads.schemas import LeadCreate
from services.notes import service as notes
from services.notes.schemas import NoteCreate
from services.pipelines import service as pipelines
from services.pipelines.schemas import PipelineCreate, StageInput


@dataclass(frozen=True)
class DemoUser:
    email: str
    name: str
    role: Role
    team: str | None


USERS = [
    DemoUser("alice@example.com", "Alice Admin", Role.ADMIN, None),
    DemoUser("mia@example.com", "Mia Manager", Role.MANAGER, "East"),
    DemoUser("bob@example.com", "Bob Member", Role.MEMBER, "East"),
    DemoUser("carol@example.com", "Carol Member", Role.MEMBER, "West"),
    DemoUser("vic@example.com", "Vic Viewer", Role.VIEWER, None),
]

PIPELINES = [
    ("Sales", [("Qualified", 10), ("Contact Made", 25), ("Proposal", 50), ("Negotiation", 75)]),
    ("Partnerships", [("Introduction", 20), ("Evaluation", 50), ("Agreement", 80)]),
]

COMPANY, TEAM, OWNER = Visibility.COMPANY, Visibility.TEAM, Visibility.OWNER

# name, domain, owner, visibility
ORGANIZATIONS = [
    ("Acme Corp", "acme.example", "alice", COMPANY),
    ("Globex", "globex.example", "mia", COMPANY),
    ("Initech", "initech.example", "bob", COMPANY),
    ("Umbrella", "umbrella.example", "carol", COMPANY),
    ("Stark Industries", "stark.example", "bob", TEAM),
    ("Wayne Enterprises", "wayne.example", "carol", TEAM),
    ("Hooli", "hooli.example", "bob", OWNER),
    ("Pied Piper", "piedpiper.example", "carol", OWNER),
    ("Soylent", "soylent.example", "mia", COMPANY),
    ("Tyrell", "tyrell.example", "alice", COMPANY),
    ("Cyberdyne", "cyberdyne.example", "carol", COMPANY),
    ("Wonka Industries", "wonka.example", "bob", COMPANY),
]

# first, last, email, organization, owner, visibility
PERSONS = [
    ("Wile", "Coyote", "wile@acme.example", "Acme Corp", "alice", COMPANY),
    ("Hank", "Scorpio", "hank@globex.example", "Globex", "mia", COMPANY),
    ("Bill", "Lumbergh", "bill@initech.example", "Initech", "bob", COMPANY),
    ("Peter", "Gibbons", "peter@initech.example", "Initech", "bob", COMPANY),
    ("Alice", "Abernathy", "alice@umbrella.example", "Umbrella", "carol", COMPANY),
    ("Pepper", "Potts", "pepper@stark.example", "Stark Industries", "bob", TEAM),
    ("Lucius", "Fox", "lucius@wayne.example", "Wayne Enterprises", "carol", TEAM),
    ("Gavin", "Belson", "gavin@hooli.example", "Hooli", "bob", OWNER),
    ("Richard", "Hendricks", "richard@piedpiper.example", "Pied Piper", "carol", OWNER),
    ("Sol", "Roth", "sol@soylent.example", "Soylent", "mia", COMPANY),
    ("Eldon", "Tyrell", "eldon@tyrell.example", "Tyrell", "alice", COMPANY),
    ("Miles", "Dyson", "miles@cyberdyne.example", "Cyberdyne", "carol", COMPANY),
    ("Charlie", "Bucket", "charlie@wonka.example", "Wonka Industries", "bob", COMPANY),
    ("Monica", "Hall", "monica@piedpiper.example", "Pied Piper", "carol", COMPANY),
    ("Jared", "Dunn", "jared@piedpiper.example", "Pied Piper", "carol", TEAM),
    ("Happy", "Hogan", "happy@stark.example", "Stark Industries", "bob", COMPANY),
]

# title, value, organization, person email, owner, visibility, pipeline, stage, outcome
DEALS = [
    ("Acme anvils bulk order", 48000, "Acme Corp", "wile@acme.example", "alice", COMPANY, "Sales", "Proposal", None),
    ("Globex doomsday device", 120000, "Globex", "hank@globex.example", "mia", COMPANY, "Sales", "Negotiation", None),
    ("Initech TPS licences", 15000, "Initech", "bill@initech.example", "bob", COMPANY, "Sales", "Contact Made", None),
    ("Initech printer fleet", 9000, "Initech", "peter@initech.example", "bob", COMPANY, "Sales", "Qualified", "won"),
    (
        "Umbrella lab equipment",
        67000,
        "Umbrella",
        "alice@umbrella.example",
        "carol",
        COMPANY,
        "Sales",
        "Proposal",
        None,
    ),
    ("Stark renewal", 250000, "Stark Industries", "pepper@stark.example", "bob", TEAM, "Sales", "Negotiation", None),
    (
        "Stark suits maintenance",
        42000,
        "Stark Industries",
        "happy@stark.example",
        "bob",
        TEAM,
        "Sales",
        "Qualified",
        None,
    ),
    ("Wayne rollout", 180000, "Wayne Enterprises", "lucius@wayne.example", "carol", TEAM, "Sales", "Proposal", None),
    ("Hooli expansion", 90000, "Hooli", "gavin@hooli.example", "bob", OWNER, "Sales", "Contact Made", None),
    ("Pied Piper pilot", 30000, "Pied Piper", "richard@piedpiper.example", "carol", OWNER, "Sales", "Qualified", None),
    ("Soylent supply contract", 54000, "Soylent", "sol@soylent.example", "mia", COMPANY, "Sales", "Proposal", "lost"),
    (
        "Tyrell replicant audit",
        75000,
        "Tyrell",
        "eldon@tyrell.example",
        "alice",
        COMPANY,
        "Sales",
        "Negotiation",
        "won",
    ),
    (
        "Cyberdyne chip licence",
        110000,
        "Cyberdyne",
        "miles@cyberdyne.example",
        "carol",
        COMPANY,
        "Sales",
        "Contact Made",
        None,
    ),
    (
        "Wonka golden tickets",
        12000,
        "Wonka Industries",
        "charlie@wonka.example",
        "bob",
        COMPANY,
        "Sales",
        "Proposal",
        "lost",
    ),
    (
        "Acme partner programme",
        20000,
        "Acme Corp",
        "wile@acme.example",
        "alice",
        COMPANY,
        "Partnerships",
        "Evaluation",
        None,
    ),
    ("Globex reseller deal", 35000, "Globex", "hank@globex.example", "mia", TEAM, "Partnerships", "Introduction", None),
    (
        "Pied Piper compression OEM",
        60000,
        "Pied Piper",
        "monica@piedpiper.example",
        "carol",
        COMPANY,
        "Partnerships",
        "Agreement",
        None,
    ),
    ("Hooli cloud credits", 25000, "Hooli", "gavin@hooli.example", "bob", COMPANY, "Partnerships", "Evaluation", "won"),
    (
        "Umbrella distribution",
        80000,
        "Umbrella",
        "alice@umbrella.example",
        "carol",
        TEAM,
        "Partnerships",
        "Introduction",
        None,
    ),
    ("Initech consulting", 18000, "Initech", "bill@initech.example", "mia", COMPANY, "Sales", "Qualified", None),
    (
        "Wayne security upgrade",
        140000,
        "Wayne Enterprises",
        "lucius@wayne.example",
        "carol",
        COMPANY,
        "Sales",
        "Negotiation",
        "won",
    ),
    (
        "Stark arc reactor study",
        300000,
        "Stark Industries",
        "pepper@stark.example",
        "bob",
        OWNER,
        "Sales",
        "Proposal",
        None,
    ),
]

# title, source, value, contact name, contact email, organization name, owner, visibility, labels
LEADS = [
    ("Website demo request", "web form", 10000, "Dana Scully", "dana@fbi.example", "FBI", "bob", COMPANY, ["hot"]),
    ("Trade show contact", "event", 5000, "Fox Mulder", "fox@fbi.example", "FBI", "bob", TEAM, ["cold"]),
    (
        "Referral from Globex",
        "referral",
        25000,
        "Sam Carter",
        "sam@sgc.example",
        "Stargate Command",
        "mia",
        COMPANY,
        ["warm"],
    ),
    (
        "Inbound pricing question",
        "email",
        None,
        "Ellen Ripley",
        "ripley@weyland.example",
        "Weyland-Yutani",
        "carol",
        COMPANY,
        ["hot"],
    ),
    (
        "Partner intro",
        "partner",
        40000,
        "Sarah Connor",
        "sarah@resistance.example",
        "Resistance",
        "carol",
        OWNER,
        ["partner"],
    ),
    (
        "Webinar attendee",
        "webinar",
        3000,
        "Marty McFly",
        "marty@hillvalley.example",
        "Hill Valley High",
        "alice",
        COMPANY,
        [],
    ),
    (
        "Cold outreach reply",
        "outbound",
        8000,
        "Doc Brown",
        "doc@hillvalley.example",
        "Hill Valley Labs",
        "bob",
        COMPANY,
        ["follow-up"],
    ),
    ("Conference lead", "event", 12000, "Leia Organa", "leia@alderaan.example", "Alderaan", "mia", TEAM, []),
]

# subject, type, days from today, done, owner, deal title
ACTIVITIES = [
    ("Send anvil quote", ActivityType.EMAIL, 1, False, "alice", "Acme anvils bulk order"),
    ("Negotiation call with Hank", ActivityType.CALL, 2, False, "mia", "Globex doomsday device"),
    ("TPS report demo", ActivityType.MEETING, 3, False, "bob", "Initech TPS licences"),
    ("Lab walkthrough", ActivityType.MEETING, -2, True, "carol", "Umbrella lab equipment"),
    ("Renewal terms review", ActivityType.TASK, 0, False, "bob", "Stark renewal"),
    ("Rollout plan draft", ActivityType.TASK, 5, False, "carol", "Wayne rollout"),
    ("Hooli expansion follow-up", ActivityType.CALL, -1, False, "bob", "Hooli expansion"),
    ("Pilot success criteria", ActivityType.TASK, 4, False, "carol", "Pied Piper pilot"),
    ("Chip licence deadline", ActivityType.DEADLINE, 14, False, "carol", "Cyberdyne chip licence"),
    ("Partner programme kickoff", ActivityType.MEETING, 7, False, "alice", "Acme partner programme"),
    ("Reseller intro email", ActivityType.EMAIL, -3, True, "mia", "Globex reseller deal"),
    ("OEM contract redlines", ActivityType.TASK, 2, False, "carol", "Pied Piper compression OEM"),
    ("Consulting scope call", ActivityType.CALL, 6, False, "mia", "Initech consulting"),
    ("Arc reactor feasibility", ActivityType.TASK, 10, False, "bob", "Stark arc reactor study"),
]

# body, author, deal title
NOTES = [
    ("Wile wants delivery **before** the next roadrunner season.", "alice", "Acme anvils bulk order"),
    ("Hank asked about volume discounts; legal review pending.", "mia", "Globex doomsday device"),
    ("Bill prefers email over calls. Budget approved for Q1.", "bob", "Initech TPS licences"),
    ("Lab needs biosafety level 3 certification paperwork.", "carol", "Umbrella lab equipment"),
    ("Pepper confirmed the renewal is on the board agenda.", "bob", "Stark renewal"),
    ("Lucius wants a phased rollout across three sites.", "carol", "Wayne rollout"),
    ("Gavin is shopping around; keep this quiet.", "bob", "Hooli expansion"),
    ("Richard needs the pilot to prove the compression ratio.", "carol", "Pied Piper pilot"),
    ("Sol's team chose a cheaper supplier.", "mia", "Soylent supply contract"),
    ("Eldon signed; kickoff next month.", "alice", "Tyrell replicant audit"),
    ("Mia: coach Bob on the arc reactor pricing.", "mia", "Stark arc reactor study"),
    ("Monica will champion the OEM deal internally.", "carol", "Pied Piper compression OEM"),
]


def _key(kind: str, name: str) -> str:
    return f"demo:{kind}:{name}"


async def ensure_users(settings: Settings, admin: str, db: Database) -> dict[str, UUID]:
    ids: dict[str, UUID] = {}
    for user in USERS:
        if settings.supabase_url and settings.supabase_service_key:
            account = create_supabase_user(settings, user.email, user.name)
        else:
            account = create_local_user(admin, user.email, user.name)
        await grant_access(db, account.id, user.role, user.team)
        ids[user.email.split("@")[0]] = account.id
    return ids


async def seed_demo(settings: Settings, admin: str, db: Database) -> dict[str, int]:
    """Create (or find) the demo company. Returns how many records of each kind the demo has.

    The demo's own events are history, not news: they are marked dispatched, so the workflows do not act on
    them (e.g. a follow-up task for every demo deal). Events of anything done afterwards flow as usual."""
    with psycopg.connect(admin) as conn:
        started = conn.execute("select clock_timestamp()").fetchone()[0]  # type: ignore[index]
    users = await ensure_users(settings, admin, db)
    if _already_seeded(admin):
        return _counts()
    principals = {name: await principal_for(db, user_id) for name, user_id in users.items()}

    stage_ids: dict[tuple[str, str], UUID] = {}
    async with db.unit_of_work(principals["alice"]) as uow:
        existing = {p.name: p for p in await pipelines.list(uow)}
        for name, stages in PIPELINES:
            pipeline = existing.get(name) or await pipelines.create(
                uow, PipelineCreate(name=name, stages=[StageInput(name=s, win_probability=p) for s, p in stages])
            )
            for stage in pipeline.stages:
                stage_ids[(name, stage.name)] = stage.id

    org_ids: dict[str, UUID] = {}
    for name, domain, owner, visibility in ORGANIZATIONS:
        async with db.unit_of_work(principals[owner]) as uow:
            org = await contacts.create_organization(
                uow,
                OrganizationCreate(name=name, domain=domain, owner_id=users[owner], visibility=visibility),
                idempotency_key=_key("organization", name),
            )
        org_ids[name] = org.id

    person_ids: dict[str, UUID] = {}
    for first, last, email, org_name, owner, visibility in PERSONS:
        async with db.unit_of_work(principals[owner]) as uow:
            person = await contacts.create_person(
                uow,
                PersonCreate(
                    first_name=first,
                    last_name=last,
                    emails=[email],
                    organization_id=org_ids[org_name],
                    owner_id=users[owner],
                    visibility=visibility,
                ),
                idempotency_key=_key("person", email),
            )
        person_ids[email] = person.id

    deal_ids: dict[str, UUID] = {}
    for title, value, org_name, email, owner, visibility, pipeline, stage, outcome in DEALS:
        async with db.unit_of_work(principals[owner]) as uow:
            deal = await deals.create(
                uow,
                DealCreate(
                    title=title,
                    value=Decimal(value),
                    currency="USD",
                    organization_id=org_ids[org_name],
                    person_id=person_ids[email],
                    stage_id=stage_ids[(pipeline, stage)],
                    owner_id=users[owner],
                    visibility=visibility,
                    expected_close_date=date.today() + timedelta(days=30),
                ),
                idempotency_key=_key("deal", title),
            )
            if outcome == "won" and deal.status == "open":
                deal = await deals.mark_won(uow, deal.id)
            elif outcome == "lost" and deal.status == "open":
                deal = await deals.mark_lost(uow, deal.id, "Chose a competitor")
        deal_ids[title] = deal.id

    for title, source, value, name, email, org_name, owner, visibility, labels in LEADS:
        async with db.unit_of_work(principals[owner]) as uow:
            await leads.create(
                uow,
                LeadCreate(
                    title=title,
                    source=source,
                    value=Decimal(value) if value is not None else None,
                    contact_name=name,
                    contact_email=email,
                    organization_name=org_name,
                    owner_id=users[owner],
                    visibility=visibility,
                    labels=labels,
                ),
                idempotency_key=_key("lead", title),
            )

    for subject, kind, days, done, owner, deal_title in ACTIVITIES:
        async with db.unit_of_work(principals[owner]) as uow:
            activity = await activities.create(
                uow,
                ActivityCreate(
                    type=kind,
                    subject=subject,
                    due_date=date.today() + timedelta(days=days),
                    deal_id=deal_ids[deal_title],
                    owner_id=users[owner],
                ),
                idempotency_key=_key("activity", subject),
            )
            if done and not activity.done:
                await activities.complete(uow, activity.id)

    for body, author, deal_title in NOTES:
        async with db.unit_of_work(principals[author]) as uow:
            await notes.create(
                uow, NoteCreate(body=body, deal_id=deal_ids[deal_title]), idempotency_key=_key("note", body[:60])
            )

    with psycopg.connect(admin) as conn:
        conn.execute(
            "update public.outbox set dispatched_at = now()"
            " where dispatched_at is null and occurred_at >= %s and actor_id = any(%s)",
            [started, list(users.values())],
        )
    return _counts()


def _already_seeded(admin: str) -> bool:
    """Whether a previous seed finished (notes come last). Checked on the records themselves: the idempotency keys
    that make a seed interrupted half-way safe to repeat are pruned after their retention."""
    with psycopg.connect(admin) as conn:
        row = conn.execute(
            "select count(distinct body) from public.notes where body = any(%s)", [[body for body, _, _ in NOTES]]
        ).fetchone()
    return row is not None and row[0] == len(NOTES)


def _counts() -> dict[str, int]:
    return {
        "users": len(USERS),
        "pipelines": len(PIPELINES),
        "organizations": len(ORGANIZATIONS),
        "persons": len(PERSONS),
        "deals": len(DEALS),
        "leads": len(LEADS),
        "activities": len(ACTIVITIES),
        "notes": len(NOTES),
    }
