"""A company at scale, for measuring: N deals and what a real CRM of that size holds around them.

For N deals: about 0.3·N persons, 0.1·N organizations, 0.2·N leads, 2·N activities and N notes, owned by 50
users in 5 teams (a few people own most of the records), with mixed visibility and three pipelines. The same seed
gives the same company.

Users, roles, teams and pipelines are made the way the product makes them (Supabase Auth or the local
`auth.users`, then the service layer). The records themselves are bulk history: they are written with COPY in one
transaction, their derived columns filled by the tables' own triggers and generated columns, and they carry no
audit rows or events (nothing happened to them in this database; a workflow must not act on a million of them).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from uuid import UUID

import psycopg

from pipecd.accounts import create_local_user, create_supabase_user, grant_access
from pipecd.runtime import principal_for
from pipecd.settings import Settings
from services.contacts.schemas import organization_name_key
from services.kernel.permissions import Role
from services.kernel.uow import Database
from services.pipelines import service as pipelines
from services.pipelines.schemas import PipelineCreate, StageInput

EMAIL_DOMAIN = "scale.example"
TEAMS = ["North", "South", "East", "West", "Enterprise"]
PIPELINES = [
    ("Sales", [("Qualified", 10), ("Contact Made", 20), ("Demo Scheduled", 40), ("Proposal", 60),
               ("Negotiation", 80)]),
    ("Enterprise", [("Discovery", 10), ("Security Review", 30), ("Pilot", 50), ("Procurement", 75)]),
    ("Partnerships", [("Intro", 10), ("Evaluation", 35), ("Contract", 70)]),
]

FIRST = ("Aaliyah Adam Aiko Alejandro Amara Anders Ana Arjun Astrid Ben Bianca Carlos Chen Chloe Dara Diego "
         "Elena Emeka Emma Fatima Felix Freya Gabriel Hana Hugo Ines Ivan Jamal Jana Jonas Julia Kai Kenji Lara "
         "Leila Liam Lucia Mateo Maya Mei Mohammed Nadia Nils Noah Nora Olga Omar Paula Pedro Priya Rafael Rosa "
         "Sam Sara Sofia Tariq Theo Uma Victor Wei Yara Yusuf Zoe").split()
LAST = ("Andersen Bauer Becker Bianchi Brown Castro Chen Costa Dubois Eriksen Fischer Garcia Gomez Hansen Hoffmann "
        "Ito Jensen Johansson Kim Kowalski Larsen Lee Lopez Martin Meyer Moreau Muller Nakamura Novak Nowak Okafor "
        "Olsen Patel Perez Petrov Rossi Santos Schmidt Silva Singh Smith Sousa Tanaka Torres Visser Wagner Wang "
        "Weber Williams Wilson Yamamoto Zhang").split()
ORG_HEAD = ("Acme Apex Atlas Aurora Beacon Blue Bright Cedar Cobalt Crest Delta Echo Evergreen Falcon Forge "
            "Granite Harbor Helix Horizon Iron Juniper Keystone Lumen Maple Meridian Nimbus Northwind Nova Oak "
            "Orbit Pacific Peak Pine Polar Quantum Quartz Redwood Ridge River Sage Sierra Silver Solar Sterling "
            "Summit Terra Titan Union Vertex Willow Zenith").split()
ORG_BODY = ("Analytics Bio Capital Cloud Data Dynamics Energy Foods Freight Health Industries Labs Logistics "
            "Media Motors Networks Pharma Retail Robotics Software Solutions Systems Textiles Travel").split()
ORG_TAIL = ["Inc", "GmbH", "Ltd", "SA", "BV", "AB", "LLC", "Group", "", "", ""]
CITIES = ("Amsterdam Austin Barcelona Berlin Boston Chicago Copenhagen Dublin Hamburg Helsinki Lisbon London Lyon "
          "Madrid Milan Munich Oslo Paris Prague Seattle Stockholm Tokyo Toronto Vienna Warsaw Zurich").split()
PRODUCTS = ["CRM rollout", "analytics suite", "support plan", "data platform", "security audit", "cloud migration",
            "API integration", "training package", "renewal", "upsell", "pilot", "hardware refresh",
            "consulting retainer", "onboarding", "license expansion", "managed service"]
JOBS = ["CEO", "CTO", "CFO", "Head of Sales", "VP Engineering", "Procurement Manager", "Operations Director",
        "IT Manager", "Marketing Lead", "Product Manager", "Office Manager", "Buyer", "Account Executive", None]
SOURCES = ["web form", "referral", "trade show", "cold call", "partner", "webinar", "LinkedIn", "newsletter"]
LABELS = ["hot", "warm", "cold", "enterprise", "smb", "follow-up"]
LOST_REASONS = ["Price too high", "Chose a competitor", "No budget this year", "Project cancelled",
                "No response", "Timing"]
SUBJECTS = {
    "call": ["Discovery call", "Follow-up call", "Pricing call", "Check-in call", "Reference call"],
    "meeting": ["Demo", "On-site workshop", "Quarterly review", "Kick-off meeting", "Negotiation meeting"],
    "email": ["Send proposal", "Send contract", "Share case study", "Reply to questions", "Send recap"],
    "task": ["Prepare quote", "Update forecast", "Check references", "Draft statement of work", "Book travel"],
    "deadline": ["Proposal due", "Contract signature", "Budget approval", "Renewal date"],
}
SENTENCES = [
    "Spoke with {p} about the {x}; they want a revised quote by next week.",
    "Budget is approved for Q{q}, pending sign-off from finance.",
    "{p} asked for a reference customer in their industry.",
    "Competitor offered a lower price, but our integration story is stronger.",
    "Legal review of the contract is under way; two clauses are open.",
    "They plan to roll out to {n} users in the first phase.",
    "Decision expected after their board meeting.",
    "{p} prefers email over calls; send the summary in writing.",
    "Security questionnaire returned, no blockers found.",
    "Pilot results were positive: adoption above {n} percent.",
]
VISIBILITY = (("company", 0.5), ("team", 0.35), ("owner", 0.15))
STATUS = (("open", 0.55), ("won", 0.28), ("lost", 0.17))
CURRENCIES = (("USD", 0.55), ("EUR", 0.3), ("GBP", 0.15))


@dataclass(frozen=True)
class Shape:
    """How many of each record a company of `deals` deals has."""

    deals: int

    @property
    def persons(self) -> int:
        return max(1, round(self.deals * 0.3))

    @property
    def organizations(self) -> int:
        return max(1, round(self.deals * 0.1))

    @property
    def leads(self) -> int:
        return round(self.deals * 0.2)

    @property
    def activities(self) -> int:
        return self.deals * 2

    @property
    def notes(self) -> int:
        return self.deals

    def counts(self) -> dict[str, int]:
        return {"deals": self.deals, "persons": self.persons, "organizations": self.organizations,
                "leads": self.leads, "activities": self.activities, "notes": self.notes}


@dataclass(frozen=True)
class ScaleUser:
    email: str
    name: str
    role: Role
    team: str | None


def scale_users() -> list[ScaleUser]:
    """50 people: an admin, a manager and eight members per team, and four viewers."""
    names = (f"{FIRST[i % len(FIRST)]} {LAST[i * 7 % len(LAST)]}" for i in itertools.count())
    people = [ScaleUser(f"admin@{EMAIL_DOMAIN}", "Avery Admin", Role.ADMIN, None)]
    for team in TEAMS:
        name = next(names)
        people.append(ScaleUser(f"manager.{team.lower()}@{EMAIL_DOMAIN}", name, Role.MANAGER, team))
        for i in range(1, 9):
            name = next(names)
            people.append(ScaleUser(f"member{i}.{team.lower()}@{EMAIL_DOMAIN}", name, Role.MEMBER, team))
    for i in range(1, 5):
        people.append(ScaleUser(f"viewer{i}@{EMAIL_DOMAIN}", f"Viewer {LAST[i]}", Role.VIEWER, None))
    return people


class Weighted:
    """Picks from `values` with the given weights, fast (one random number and a bisection)."""

    def __init__(self, rnd: random.Random, pairs: Sequence[tuple[object, float]]) -> None:
        self.rnd = rnd
        self.values = [value for value, _ in pairs]
        self.bounds = list(itertools.accumulate(weight for _, weight in pairs))

    def __call__(self) -> object:
        return self.values[bisect.bisect(self.bounds, self.rnd.random() * self.bounds[-1])]


Progress = Callable[[str, int], None]  # (table, rows written since the last call)


class Company:
    """The generator: draws every row from one seeded random stream, in a fixed order."""

    def __init__(self, shape: Shape, seed: int, owners: list[UUID],
                 stages: dict[UUID, list[tuple[UUID, int]]], now: datetime) -> None:
        self.shape = shape
        self.rnd = random.Random(seed)
        self.now = now
        rnd = self.rnd
        # a few people own most records: weight 1/rank^0.9
        self.owner = Weighted(rnd, [(owner, 1 / (rank + 1) ** 0.9) for rank, owner in enumerate(owners)])
        self.visibility = Weighted(rnd, VISIBILITY)
        self.status = Weighted(rnd, STATUS)
        self.currency = Weighted(rnd, CURRENCIES)
        # the first pipeline carries most deals
        self.pipeline = Weighted(rnd, list(zip(stages, (0.7, 0.2, 0.1), strict=False)))
        self.stages = stages
        self.organization_ids: list[UUID] = []
        self.organization_domains: list[str] = []
        self.organization_names: list[str] = []
        self.person_ids: list[UUID] = []
        self.person_orgs: list[UUID | None] = []
        self.person_org_names: list[str | None] = []
        self.person_names: list[str] = []
        self.deal_ids: list[UUID] = []
        self.deal_people: list[UUID | None] = []
        self.deal_owners: list[UUID] = []
        self.deal_stages: list[UUID] = []
        self.deal_created: list[datetime] = []
        self.deal_contacts: list[str] = []
        self.lead_ids: list[UUID] = []

    def uuid(self) -> UUID:
        return UUID(int=self.rnd.getrandbits(128), version=4)

    def moment(self, days_back: float = 730) -> datetime:
        return self.now - timedelta(seconds=self.rnd.random() * days_back * 86400)

    def organizations(self) -> Iterator[tuple[object, ...]]:
        rnd = self.rnd
        for i in range(self.shape.organizations):
            head, body, tail = rnd.choice(ORG_HEAD), rnd.choice(ORG_BODY), rnd.choice(ORG_TAIL)
            name = " ".join(part for part in (head, body, tail) if part)
            if i >= len(ORG_HEAD) * len(ORG_BODY):  # beyond the distinct combinations, branches by city
                name = f"{name} {rnd.choice(CITIES)}"
            domain = f"{head}{body}{i}.{rnd.choice(('com', 'io', 'de', 'co.uk', 'fr', 'net'))}".lower()
            created = self.moment()
            row_id = self.uuid()
            self.organization_ids.append(row_id)
            self.organization_domains.append(domain)
            self.organization_names.append(name)
            yield (row_id, name, organization_name_key(name), domain,
                   f"{rnd.randint(1, 250)} Main Street, {rnd.choice(CITIES)}", self.owner(), self.visibility(),
                   created, created)

    def persons(self) -> Iterator[tuple[object, ...]]:
        rnd = self.rnd
        for i in range(self.shape.persons):
            first, last = rnd.choice(FIRST), rnd.choice(LAST)
            index = rnd.randrange(len(self.organization_ids))
            linked = rnd.random() < 0.85
            domain = self.organization_domains[index] if linked else "mail.example"
            email = f"{first}.{last}{i}@{domain}".lower().replace(" ", "")
            created = self.moment()
            row_id = self.uuid()
            self.person_ids.append(row_id)
            self.person_orgs.append(self.organization_ids[index] if linked else None)
            self.person_org_names.append(self.organization_names[index] if linked else None)
            self.person_names.append(f"{first} {last}")
            yield (row_id, first, last, [email], [f"+1 555 {rnd.randint(1000000, 9999999)}"], rnd.choice(JOBS),
                   self.person_orgs[-1], self.owner(), self.visibility(), created, created)

    def deals(self) -> Iterator[tuple[object, ...]]:
        rnd = self.rnd
        for _ in range(self.shape.deals):
            index = rnd.randrange(len(self.person_ids))
            person, organization = self.person_ids[index], self.person_orgs[index]
            pipeline = self.pipeline()
            stage, probability = rnd.choice(self.stages[pipeline])  # type: ignore[index]
            status = self.status()
            created = self.moment()
            closed = created + timedelta(days=rnd.randint(5, 120))
            closed = min(closed, self.now)
            value = round(math.exp(rnd.gauss(9.2, 1.1)), -1)  # median ~10k, a long tail of big deals
            owner = self.owner()
            row_id = self.uuid()
            self.deal_ids.append(row_id)
            self.deal_people.append(person)
            self.deal_owners.append(owner)  # type: ignore[arg-type]
            self.deal_stages.append(stage)
            self.deal_created.append(created)
            self.deal_contacts.append(self.person_names[index])
            product = rnd.choice(PRODUCTS)
            buyer = self.person_org_names[index] or self.person_names[index]
            title = f"{buyer}: {product}" if rnd.random() < 0.5 else f"{product.capitalize()} for {buyer}"
            yield (row_id, title, value, self.currency(), owner, person, organization, pipeline, stage, status,
                   closed if status == "won" else None, closed if status == "lost" else None,
                   rnd.choice(LOST_REASONS) if status == "lost" else None,
                   (created + timedelta(days=rnd.randint(14, 180))).date(), probability, self.visibility(),
                   created, closed if status != "open" else created)

    def stage_history(self) -> Iterator[tuple[object, ...]]:
        # one entry per deal: the stage it entered when it was created
        for row in zip(self.deal_ids, self.deal_stages, self.deal_owners, self.deal_created, strict=True):
            row_id, stage, owner, created = row
            yield (row_id, None, stage, owner, created)

    def leads(self) -> Iterator[tuple[object, ...]]:
        rnd = self.rnd
        for _ in range(self.shape.leads):
            created = self.moment(365)
            known = rnd.random() < 0.5
            index = rnd.randrange(len(self.person_ids))
            person = self.person_ids[index] if known else None
            first, last = rnd.choice(FIRST), rnd.choice(LAST)
            row_id = self.uuid()
            self.lead_ids.append(row_id)
            yield (row_id, f"{rnd.choice(PRODUCTS).capitalize()} inquiry", rnd.choice(SOURCES),
                   round(math.exp(rnd.gauss(8.5, 1.0)), -1), self.currency(), person,
                   self.person_orgs[index] if known else None,
                   None if known else f"{first} {last}",
                   None if known else f"{first}.{last}@prospect.example".lower().replace(" ", ""),
                   None if known else f"{rnd.choice(ORG_HEAD)} {rnd.choice(ORG_BODY)}",
                   self.owner(), [rnd.choice(LABELS)], "archived" if rnd.random() < 0.1 else "open",
                   self.visibility(), created, created)

    def activities(self) -> Iterator[tuple[object, ...]]:
        rnd = self.rnd
        types = list(SUBJECTS)
        for _ in range(self.shape.activities):
            kind = rnd.choice(types)
            index = rnd.randrange(len(self.deal_ids))
            due = (self.now + timedelta(days=rnd.randint(-300, 60))).date()
            done = due < self.now.date() and rnd.random() < 0.8
            created = datetime.combine(due - timedelta(days=rnd.randint(1, 30)), time(9), UTC)
            yield (kind, rnd.choice(SUBJECTS[kind]), due, time(rnd.randint(8, 17), rnd.choice((0, 30))),
                   rnd.choice((15, 30, 45, 60)), done,
                   datetime.combine(due, time(18), UTC) if done else None, self.deal_ids[index],
                   self.deal_people[index], self.deal_owners[index], created, created)

    def notes(self) -> Iterator[tuple[object, ...]]:
        rnd = self.rnd
        for _ in range(self.shape.notes):
            index = rnd.randrange(len(self.deal_ids))
            name = self.deal_contacts[index]
            body = " ".join(
                sentence.format(p=name, x=rnd.choice(PRODUCTS), q=rnd.randint(1, 4), n=rnd.randint(5, 95))
                for sentence in rnd.sample(SENTENCES, rnd.randint(1, 4))
            )
            created = self.moment(365)
            yield (body, self.deal_owners[index], self.deal_ids[index], created, created)


# Each table in the order it is written, with the columns its generator yields.
TABLES: list[tuple[str, str, str]] = [
    ("organizations", "organizations",
     "id, name, name_key, domain, address, owner_id, visibility, created_at, updated_at"),
    ("persons", "persons",
     "id, first_name, last_name, emails, phones, job_title, organization_id, owner_id, visibility, created_at,"
     " updated_at"),
    ("deals", "deals",
     "id, title, value, currency, owner_id, person_id, organization_id, pipeline_id, stage_id, status, won_at,"
     " lost_at, lost_reason, expected_close_date, probability, visibility, created_at, updated_at"),
    ("stage_history", "deal_stage_history", "deal_id, from_stage_id, to_stage_id, changed_by, changed_at"),
    ("leads", "leads",
     "id, title, source, value, currency, person_id, organization_id, contact_name, contact_email,"
     " organization_name, owner_id, labels, status, visibility, created_at, updated_at"),
    ("activities", "activities",
     "type, subject, due_date, due_time, duration_minutes, done, done_at, deal_id, person_id, owner_id,"
     " created_at, updated_at"),
    ("notes", "notes", "body, author_id, deal_id, created_at, updated_at"),
]


async def ensure_users(settings: Settings, admin: str, db: Database) -> dict[str, UUID]:
    """The 50 users, made as `pipecd users add` makes them. Returns their ids by email."""
    ids: dict[str, UUID] = {}
    for user in scale_users():
        if settings.supabase_url and settings.supabase_service_key:
            account = create_supabase_user(settings, user.email, user.name)
        else:
            account = create_local_user(admin, user.email, user.name)
        await grant_access(db, account.id, user.role, user.team)
        ids[user.email] = account.id
    return ids


async def ensure_pipelines(db: Database, admin_id: UUID) -> dict[UUID, list[tuple[UUID, int]]]:
    """The three pipelines (found by name if they exist), as the admin: pipeline id → [(stage id, win %)]."""
    principal = await principal_for(db, admin_id)
    stages: dict[UUID, list[tuple[UUID, int]]] = {}
    async with db.unit_of_work(principal) as uow:
        existing = {p.name: p for p in await pipelines.list(uow)}
        for name, steps in PIPELINES:
            pipeline = existing.get(name) or await pipelines.create(
                uow, PipelineCreate(name=name, stages=[StageInput(name=s, win_probability=p) for s, p in steps])
            )
            stages[pipeline.id] = [(stage.id, stage.win_probability) for stage in pipeline.stages]
    return stages


class AlreadySeeded(Exception):
    pass


def check_empty(admin: str) -> None:
    with psycopg.connect(admin) as conn:
        row = conn.execute("select count(*) from public.deals").fetchone()
    if row and row[0]:
        raise AlreadySeeded(f"the database already holds {row[0]} deals; seed a company at scale into an empty one")


async def seed_scale(settings: Settings, admin: str, db: Database, deals: int, *, seed: int = 1,
                     progress: Progress | None = None) -> dict[str, int]:
    """Create the company of `deals` deals. Returns how many rows of each kind were written."""
    if deals < 1:
        raise ValueError("the scale is a number of deals, at least 1")
    check_empty(admin)
    users = await ensure_users(settings, admin, db)
    people = scale_users()
    admin_id = users[people[0].email]
    stages = await ensure_pipelines(db, admin_id)
    owners = [users[u.email] for u in people if u.role is not Role.VIEWER]
    random.Random(seed).shuffle(owners)  # who owns the most does not follow the list's order
    with psycopg.connect(admin) as conn:
        now = conn.execute("select date_trunc('second', now())").fetchone()[0]  # type: ignore[index]
    company = Company(Shape(deals), seed, owners, stages, now)
    written: dict[str, int] = {}
    with psycopg.connect(admin) as conn:
        with conn.cursor() as cursor:
            for key, table, columns in TABLES:
                count = 0
                with cursor.copy(f"copy public.{table} ({columns}) from stdin") as copy:
                    for row in getattr(company, key)():
                        copy.write_row(row)
                        count += 1
                        if progress and count % 5000 == 0:
                            progress(key, 5000)
                if progress:
                    progress(key, count % 5000)
                written[key] = count
        conn.commit()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("analyze")
    return written
