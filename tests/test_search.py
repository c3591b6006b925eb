"""One search across persons, organizations, deals and leads: matching, ranking, typos, visibility, limits."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

import psycopg
import pytest
from conftest import rls_session
from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH

from services.contacts import service as contacts
from services.contacts.schemas import OrganizationCreate, PersonCreate
from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.kernel.errors import Forbidden, Invalid
from services.kernel.permissions import Scope
from services.kernel.records import Visibility
from services.leads import service as leads
from services.leads.schemas import LeadCreate
from services.search import service as search
from services.search.schemas import SearchType


@dataclass
class Records:
    globex: UUID
    initech: UUID
    initec_labs: UUID
    hank: UUID
    ann: UUID
    lee_chang: UUID
    expansion: UUID
    rollout: UUID
    partnership: UUID
    carols_secret: UUID


@pytest.fixture
async def crm(actors) -> Records:
    """bob's company-visible contacts and deals, his owner-only lead, and carol's owner-only deal."""
    async with actors.uow("bob") as uow:
        globex = await contacts.create_organization(uow, OrganizationCreate(name="Globex Corporation",
                                                                            domain="globex.com"))
        initech = await contacts.create_organization(uow, OrganizationCreate(name="Initech", domain="initech.com"))
        initec_labs = await contacts.create_organization(uow, OrganizationCreate(name="Initec Labs"))
        hank = await contacts.create_person(uow, PersonCreate(
            first_name="Hank", last_name="Scorpio", emails=["hank@globex.com"], job_title="CEO",
            organization_id=globex.id))
        ann = await contacts.create_person(uow, PersonCreate(first_name="Ann", last_name="Lee",
                                                             emails=["ann@initech.com"]))
        lee_chang = await contacts.create_person(uow, PersonCreate(first_name="Lee", last_name="Chang"))
        expansion = await deals.create(uow, DealCreate(title="Globex expansion", value=Decimal(5000)))
        rollout = await deals.create(uow, DealCreate(title="Initech rollout", value=Decimal(1200), currency="EUR"))
        partnership = await leads.create(uow, LeadCreate(
            title="Globex partnership", contact_name="Hank Scorpio", contact_email="hank@globex.com",
            visibility=Visibility.OWNER))
    async with actors.uow("carol") as uow:
        secret = await deals.create(uow, DealCreate(title="Globex secret deal", visibility=Visibility.OWNER))
    return Records(globex.id, initech.id, initec_labs.id, hank.id, ann.id, lee_chang.id, expansion.id, rollout.id,
                   partnership.id, secret.id)


async def find(actors, who: str, query: str, *, scopes=None, **options) -> list[tuple[str, str, str]]:
    async with actors.uow(who, scopes=scopes) as uow:
        hits = await search.search(uow, query, **options)
    return [(h.type.value, h.title, h.context) for h in hits]


GLOBEX_FOR_BOB = [
    ("organization", "Globex Corporation", "globex.com"),
    ("deal", "Globex expansion", "open deal · 5000.00 USD"),
    ("lead", "Globex partnership", "open lead · Hank Scorpio · hank@globex.com"),
    ("person", "Hank Scorpio", "hank@globex.com · CEO"),  # found by email, not by name: ranks last
]


async def test_one_query_finds_every_visible_record_type_with_title_and_context(actors, crm):
    async with actors.uow("bob") as uow:
        hits = await search.search(uow, "globex")

    assert [(h.type.value, h.title, h.context) for h in hits] == GLOBEX_FOR_BOB
    assert [h.id for h in hits] == [crm.globex, crm.expansion, crm.partnership, crm.hank]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Scorpio", [("lead", "Globex partnership", "open lead · Hank Scorpio · hank@globex.com"),
                     ("person", "Hank Scorpio", "hank@globex.com · CEO")]),
        ("hank@globex", [("lead", "Globex partnership", "open lead · Hank Scorpio · hank@globex.com"),
                         ("person", "Hank Scorpio", "hank@globex.com · CEO")]),
        ("initech.com", [("organization", "Initech", "initech.com"), ("person", "Ann Lee", "ann@initech.com"),
                         ("deal", "Initech rollout", "open deal · 1200.00 EUR")]),
        ("  ROLLOUT ", [("deal", "Initech rollout", "open deal · 1200.00 EUR")]),
    ],
    ids=["person-and-lead-contact-name", "email", "domain", "deal-title-any-case"],
)
async def test_search_matches_names_emails_domains_and_titles(actors, crm, query, expected):
    assert sorted(await find(actors, "bob", query)) == sorted(expected)


async def test_prefix_match_of_the_name_ranks_above_a_match_inside_it(actors, crm):
    assert await find(actors, "bob", "lee") == [
        ("person", "Lee Chang", ""),
        ("person", "Ann Lee", "ann@initech.com"),
    ]


async def test_exact_name_ranks_above_a_fuzzy_trigram_match(actors, crm):
    async with actors.uow("bob") as uow:
        hits = await search.search(uow, "initech", types=[SearchType.ORGANIZATION])

    assert [(h.id, h.title) for h in hits] == [(crm.initech, "Initech"), (crm.initec_labs, "Initec Labs")]
    assert hits[0].score > hits[1].score


async def test_a_typo_still_finds_the_record(actors, crm):
    assert sorted(await find(actors, "bob", "Globx")) == sorted(GLOBEX_FOR_BOB)


async def test_like_wildcards_in_the_query_match_only_themselves(actors, crm):
    assert await find(actors, "bob", "%%") == []
    assert await find(actors, "bob", "__") == []


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("bob", {"Globex Corporation", "Globex expansion", "Globex partnership", "Hank Scorpio"}),
        ("carol", {"Globex Corporation", "Globex expansion", "Globex secret deal", "Hank Scorpio"}),
        ("mia", {"Globex Corporation", "Globex expansion", "Globex partnership", "Hank Scorpio"}),
        ("vic", {"Globex Corporation", "Globex expansion", "Hank Scorpio"}),
        ("alice", {"Globex Corporation", "Globex expansion", "Globex partnership", "Globex secret deal",
                   "Hank Scorpio"}),
    ],
)
async def test_search_finds_only_what_the_caller_may_see(actors, crm, who, expected):
    assert {title for _, title, _ in await find(actors, who, "globex")} == expected


async def test_types_filter_limits_the_record_types(actors, crm):
    found = await find(actors, "bob", "globex", types=[SearchType.PERSON, SearchType.ORGANIZATION])

    assert found == [
        ("organization", "Globex Corporation", "globex.com"),
        ("person", "Hank Scorpio", "hank@globex.com · CEO"),
    ]


async def test_limit_keeps_the_best_hits(actors, crm):
    assert await find(actors, "bob", "globex", limit=2) == GLOBEX_FOR_BOB[:2]


@pytest.mark.parametrize("limit", [0, 51])
async def test_limit_out_of_range_is_invalid(actors, crm, limit):
    with pytest.raises(Invalid) as caught:
        await find(actors, "bob", "globex", limit=limit)
    assert caught.value.field == "limit"


@pytest.mark.parametrize("query", ["", "g", "  g  ", "   "])
async def test_query_shorter_than_two_characters_is_invalid(actors, crm, query):
    with pytest.raises(Invalid) as caught:
        await find(actors, "bob", query)
    assert caught.value.field == "query"


async def test_read_only_agent_token_searches_like_its_user(actors, crm):
    assert await find(actors, "bob", "globex", scopes=frozenset({Scope.READ})) == GLOBEX_FOR_BOB


async def test_token_without_any_read_permission_cannot_search(actors, crm):
    with pytest.raises(Forbidden):
        await find(actors, "bob", "globex", scopes=frozenset({Scope.AI}))


# Candidates through the indexes, by the policies' rule ---------------------------------------------------

KINDS = {"deal": "deals", "person": "persons", "organization": "organizations", "lead": "leads"}


def seed_every_visibility(admin, company) -> None:
    """A record of each kind per owner (bob, dan: East; carol: West) and visibility, all matching "quokka"."""
    for key in ("bob", "dan", "carol"):
        owner = company.people[key].id
        for visibility in ("owner", "team", "company"):
            label = f"Quokka {key} {visibility}"
            admin.execute("insert into public.deals (title, owner_id, visibility, pipeline_id, stage_id)"
                          " values (%s, %s, %s, %s, %s)",
                          [label, owner, visibility, company.sales_pipeline_id, company.sales_stage_ids[0]])
            admin.execute("insert into public.persons (first_name, last_name, owner_id, visibility)"
                          " values ('Quokka', %s, %s, %s)", [f"{key} {visibility}", owner, visibility])
            admin.execute("insert into public.organizations (name, name_key, owner_id, visibility)"
                          " values (%s, %s, %s, %s)", [label, label.lower(), owner, visibility])
            admin.execute("insert into public.leads (title, owner_id, visibility) values (%s, %s, %s)",
                          [label, owner, visibility])


@pytest.mark.parametrize("who, scope", [*((key, None) for key in ("alice", "mia", "bob", "dan", "carol", "vic")),
                                        ("bob", "crm.read"), ("bob", "crm.ai")])
def test_index_candidates_are_exactly_what_the_select_policies_show(app_url, company, admin, who, scope):
    seed_every_visibility(admin, company)
    with rls_session(app_url, company.people[who].id, scope=scope) as conn:
        for kind, table in KINDS.items():
            by_policy = {r[0] for r in conn.execute(
                f"select id from public.{table} where search_text like '%%quokka%%'").fetchall()}
            candidates = [r[0] for r in conn.execute(
                "select id from private.search_candidates(%s, 'quokka', '%%quokka%%', 'quokka%%', 100)",
                [kind]).fetchall()]
            assert len(candidates) == len(set(candidates))
            assert set(candidates) == by_policy, (kind, who, scope)
    # the matrix is not empty: some see everything, some part, a token without reads nothing
    expected = {"alice": 9, "mia": 7, "bob": 6, "dan": 6, "carol": 5, "vic": 3}
    if scope is None:
        with rls_session(app_url, company.people[who].id) as conn:
            assert conn.execute("select count(*) from private.search_candidates('deal', 'quokka', '%%quokka%%',"
                                " 'quokka%%', 100)").fetchone()[0] == expected[who]


def test_index_candidates_refuse_an_unknown_kind_and_an_unbounded_limit(app_url, company):
    for kind, rows, message in [("user", 10, "unknown search kind user"), ("deal", 101, "max_rows must be")]:
        with rls_session(app_url, company.people["alice"].id) as conn:
            with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
                conn.execute("select * from private.search_candidates(%s, 'x', '%%x%%', 'x%%', %s)", [kind, rows])


# Bounded work: more matches than one search reads ------------------------------------------------------------


def insert_records(admin, company, kind: str, titles: list[str]) -> None:
    """Records of one kind with these titles (names), owned by bob and visible to the company."""
    owner = company.people["bob"].id
    for title in titles:
        if kind == "deal":
            admin.execute("insert into public.deals (title, owner_id, visibility, pipeline_id, stage_id)"
                          " values (%s, %s, 'company', %s, %s)",
                          [title, owner, company.sales_pipeline_id, company.sales_stage_ids[0]])
        elif kind == "person":
            first, _, last = title.partition(" ")
            admin.execute("insert into public.persons (first_name, last_name, owner_id, visibility)"
                          " values (%s, %s, %s, 'company')", [first, last, owner])
        elif kind == "organization":
            admin.execute("insert into public.organizations (name, name_key, owner_id, visibility)"
                          " values (%s, %s, %s, 'company')", [title, title.lower(), owner])
        else:
            admin.execute("insert into public.leads (title, owner_id, visibility) values (%s, %s, 'company')",
                          [title, owner])


MORE_THAN_A_SEARCH_READS = 120


@pytest.mark.parametrize("kind", list(SearchType))
async def test_the_exact_name_ranks_first_among_more_matches_than_a_search_reads(actors, company, admin, kind):
    insert_records(admin, company, kind.value,
                   [f"Quokka Wombat{i:03}" for i in range(MORE_THAN_A_SEARCH_READS)] + ["Quokka"])

    found = await find(actors, "bob", "quokka", types=[kind], limit=3)

    assert found[0][:2] == (kind.value, "Quokka")
    assert len(found) == 3


@pytest.mark.parametrize("kind", list(SearchType))
async def test_a_typo_finds_the_closest_record_when_few_contain_the_text(actors, company, admin, kind):
    # "quokkaberg" is in no title; each filler shares 7 of its 11 trigrams (enough to match), the closest 9
    insert_records(admin, company, kind.value,
                   [f"Quokkabxyz Wombat{i:02}" for i in range(20)] + ["Quokkabezg Wombat"])

    found = await find(actors, "bob", "quokkaberg", types=[kind], limit=3)

    assert found[0][:2] == (kind.value, "Quokkabezg Wombat")
    assert len(found) == 3


@pytest.mark.parametrize("kind", list(SearchType))
async def test_rows_containing_the_word_rank_above_typos_among_more_matches_than_a_search_reads(
        actors, company, admin, kind):
    insert_records(admin, company, kind.value,
                   [f"Quokko Wombat{i:03}" for i in range(MORE_THAN_A_SEARCH_READS)]  # similar, not containing it
                   + [f"Wombat{i:03} Quokka" for i in range(MORE_THAN_A_SEARCH_READS)])

    found = await find(actors, "bob", "quokka", types=[kind], limit=5)

    assert len(found) == 5
    assert all(title.endswith(" Quokka") for _, title, _ in found), found


# Similar words are read only when they could be shown ----------------------------------------------------


def scored_by_hand(text: str, limit: int) -> tuple[str, list[object]]:
    """The reference answer: every visible row that contains or resembles the text, scored by the formula."""
    branches = []
    for kind, (table, title, context) in search._SOURCES.items():
        branches.append(
            f"select '{kind.value}' as type, t.id, {title} as title, {context} as context,"
            f" extensions.word_similarity(%(text)s, t.search_text)"
            f" + case when t.search_text like %(contains)s then 0.5 else 0 end"
            f" + case when lower({title}) like %(prefix)s then 0.5 else 0 end as score"
            f" from public.{table} t"
            f" where t.search_text like %(contains)s or %(text)s operator(extensions.<%%) t.search_text")
    sql = "select * from (" + " union all ".join(branches) + ") hits order by score desc, title, id limit %(limit)s"
    return sql, {"text": text, "contains": f"%{text}%", "prefix": f"{text}%", "limit": limit}  # type: ignore[return-value]


def similar_word_company(admin, company) -> None:
    for kind in SearchType:
        insert_records(admin, company, kind.value, [f"Quokka Wombat {kind.value}", f"Quokko Wombat {kind.value}",
                                                    f"Bokker Numbat {kind.value}"])
    insert_records(admin, company, "deal", ["Wombat Quokkaberk", "Wombat Quokkaberg Trust",
                                            "Numbat Alpha", "Numbat Beta", "Numbatx Gamma"])


@pytest.mark.parametrize(
    ("text", "limit", "similar_words_read"),
    [
        ("quokka", 4, False),  # 6 rows score above 1 (they contain it): no similar word could rank among them
        ("quokka", 7, True),  # only 6 do ("quokkaberk" too): a similar "quokko" row fills the page
        ("quokkaberg", 2, True),  # one row holds it; the typo "quokkaberk" ranks right after it
        ("ok", 3, True),  # 8 rows contain "ok" inside a word (score 0.5): similar words may rank above them
        ("numbat", 4, False),  # 2 deals start with the word, 4 rows contain it: the page is full above 1
        ("numbat", 2, False),  # deals read only the 2 that start with it (score 2): the rest cannot rank above
        ("numbat", 7, False),  # all 7 rows that contain it
    ],
)
def test_similar_words_are_read_only_when_they_could_be_shown(app_url, admin, company, text, limit,
                                                             similar_words_read):
    similar_word_company(admin, company)
    sql, params = search.search_sql(text, list(SearchType), limit)
    with rls_session(app_url, company.people["bob"].id) as conn:
        answer = conn.execute(sql, params).fetchall()
        reference = conn.execute(*scored_by_hand(text, limit)).fetchall()
        plan = "\n".join(r[0] for r in conn.execute("explain (analyze, costs off) " + sql, params).fetchall())

    assert answer == reference
    assert len(answer) == limit
    # the second phase's four reads run, or are never executed
    second_phase = [line for line in plan.splitlines()
                    if "Function Scan on search_candidates" in line and "never executed" in line]
    assert len(second_phase) == (0 if similar_words_read else 4)


def candidate_plans(admin, company, who: str, kind: str, text: str, limit: int) -> str:
    """The plans of private.search_candidates' statements for one record type, as run (auto_explain)."""
    plans: list[str] = []
    admin.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
    with admin.transaction():
        for setting in ("log_min_duration = 0", "log_nested_statements = on", "log_analyze = on",
                        "log_level = notice"):
            admin.execute(f"set local auto_explain.{setting}")
        admin.execute("select set_config('request.jwt.claims', %s, true), set_config('role', 'authenticated', true)",
                      [json.dumps({"sub": str(company.people[who].id), "role": "authenticated"})])
        admin.execute("select * from private.search_candidates(%s, %s, %s, %s, %s)",
                      [kind, text, f"%{text}%", f"{text}%", limit]).fetchall()
    return "\n".join(plans)


@pytest.mark.parametrize(("limit", "containing_read"), [(2, False), (3, True)])
def test_rows_containing_the_text_are_read_only_when_too_few_titles_start_with_it(admin, company, limit,
                                                                                 containing_read):
    # "Numbat Alpha" and "Numbat Beta" score 2 (the title starts with the word); a row that only contains it,
    # like "Bokker Numbat", at most 1.5
    insert_records(admin, company, "deal", ["Numbat Alpha", "Numbat Beta", "Bokker Numbat", "Bokker Numbatx"])
    admin.execute("load 'auto_explain'")

    plan = candidate_plans(admin, company, "bob", "deal", "numbat", limit)

    containing = plan[plan.index("CTE containing"):plan.index("CTE resembling")]
    scans = [line for line in containing.splitlines() if "Scan on deals" in line]
    assert scans, containing
    assert all(("never executed" in line) != containing_read for line in scans), containing


def test_the_search_statement_stays_within_what_the_driver_keeps_converted():
    # psycopg converts a statement's placeholders once and keeps it, if it is short enough and has few enough
    # parameters; a longer one is converted again on every search
    sql, params = search.search_sql("acme", list(SearchType), 10)
    assert len(sql) <= MAX_CACHED_STATEMENT_LENGTH
    assert sorted(params) == ["contains", "limit", "prefix", "text"]
