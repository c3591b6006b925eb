"""`pipecd seed --scale N`: a company of N deals for measuring — its shape, its users, its reproducibility (times
are drawn relative to the moment of seeding, so the fingerprint compares durations), and that it reads under the
same rules as any other data."""

from __future__ import annotations

import psycopg
from conftest import as_app_login, with_database
from test_cli import cli, rows  # noqa: F401  (the CLI fixture)

from pipecd.scale import PIPELINES, Shape, scale_users

SEEDED = ("organizations", "persons", "deals", "deal_stage_history", "leads", "activities", "notes")
FINGERPRINT = """
    select d.id, d.title, d.value, d.currency, d.status, u.email, s.name, d.visibility, d.won_at - d.created_at,
           d.lost_reason, p.first_name, p.last_name, p.emails
    from public.deals d join public.user_profiles u on u.id = d.owner_id
    left join public.stages s on s.id = d.stage_id left join public.persons p on p.id = d.person_id
    order by d.id
"""


def table_counts(admin: psycopg.Connection) -> dict[str, int]:
    return {t: admin.execute(f"select count(*) from public.{t}").fetchone()[0] for t in SEEDED}


def test_the_company_has_the_promised_shape_and_users(cli, admin):  # noqa: F811
    result = cli("seed", "--scale", "200")
    assert result.exit_code == 0, result.output
    assert table_counts(admin) == {"organizations": 20, "persons": 60, "deals": 200, "deal_stage_history": 200,
                                   "leads": 40, "activities": 400, "notes": 200}
    assert Shape(200).counts() == {"deals": 200, "persons": 60, "organizations": 20, "leads": 40,
                                   "activities": 400, "notes": 200}
    assert result.stderr.startswith("company at scale ready in ")
    assert result.stderr.endswith(": 20 organizations, 60 persons, 200 deals, 200 stage_history, 40 leads, "
                                  "400 activities, 200 notes\n")
    # 50 users made the way the product makes them: an auth user, a profile, a role, a team
    users = rows(admin, "select u.email, r.role, coalesce(t.name, '') from auth.users u"
                        " join public.user_roles r on r.user_id = u.id"
                        " left join public.team_members m on m.user_id = u.id"
                        " left join public.teams t on t.id = m.team_id"
                        " where u.email like %s order by u.email", "%@scale.example")
    assert users == sorted((u.email, u.role.value, u.team or "") for u in scale_users())
    assert len(users) == 50
    assert rows(admin, "select count(*) from public.user_profiles where email like %s", "%@scale.example") == [(50,)]
    assert sorted(rows(admin, "select name from public.pipelines where name <> 'Sales'")) == sorted(
        (name,) for name, _ in PIPELINES if name != "Sales")
    # every deal's stage belongs to its pipeline; every note is linked; activities hang off deals
    assert rows(admin, "select count(*) from public.deals d join public.stages s on s.id = d.stage_id"
                       " where s.pipeline_id <> d.pipeline_id") == [(0,)]
    assert rows(admin, "select count(*) from public.notes where deal_id is null") == [(0,)]
    # mixed visibility and status; skewed owners; derived columns filled by the tables themselves
    assert {v for (v,) in rows(admin, "select distinct visibility from public.deals")} == {"owner", "team", "company"}
    assert {s for (s,) in rows(admin, "select distinct status from public.deals")} == {"open", "won", "lost"}
    (top, median), = rows(admin, "select max(n), percentile_disc(0.5) within group (order by n) from"
                                 " (select count(*) n from public.deals group by owner_id) c")
    assert top >= 3 * median
    assert rows(admin, "select count(*) from public.persons where search_text is null or name is null") == [(0,)]
    # bulk history: no event or audit row for the records themselves
    assert rows(admin, "select count(*) from public.outbox where name like %s", "crm/deal%") == [(0,)]
    assert rows(admin, "select count(*) from public.audit_log where entity_type = 'deal'") == [(0,)]


def test_the_same_seed_gives_the_same_company_and_another_seed_another(cli, admin, server_url,  # noqa: F811
                                                                        fresh_databases, tmp_path):
    from typer.testing import CliRunner

    from pipecd.cli import app

    assert cli("seed", "--scale", "50", "--seed", "7").exit_code == 0
    first = rows(admin, FINGERPRINT)
    fingerprints = []
    for random_seed in ("7", "8"):
        name = fresh_databases.take()
        url = with_database(server_url, name)
        env = {"DATABASE_URL": url, "PIPECD_STATE_DIR": str(tmp_path), "PIPECD_ENV": "development"}
        result = CliRunner().invoke(app, ["seed", "--scale", "50", "--seed", random_seed], env=env)
        assert result.exit_code == 0, result.output
        with psycopg.connect(url) as other:
            fingerprints.append(other.execute(FINGERPRINT).fetchall())
        fresh_databases.give_back(name)
    assert fingerprints[0] == first
    assert len(first) == 50
    assert {row[0] for row in fingerprints[1]}.isdisjoint({row[0] for row in first})


def test_a_member_reads_the_company_under_the_same_rules(cli, admin, admin_url):  # noqa: F811
    assert cli("seed", "--scale", "300").exit_code == 0
    member = "member1.north@scale.example"
    (member_id,), = rows(admin, "select id from auth.users where email = %s", member)
    with psycopg.connect(as_app_login(admin_url)) as app:
        app.execute("set role authenticated")
        app.execute("select set_config('request.jwt.claims', %s, false)",
                    [f'{{"sub": "{member_id}", "role": "authenticated"}}'])
        (visible,), = app.execute("select count(*) from public.deals").fetchall()
    (expected,), = rows(admin, """
        select count(*) from public.deals d where d.visibility = 'company' or d.owner_id = %s
           or (d.visibility = 'team' and exists (select 1 from public.team_members a join public.team_members b
               on a.team_id = b.team_id where a.user_id = %s and b.user_id = d.owner_id))""", member_id, member_id)
    assert visible == expected
    assert 0 < visible < 300


def test_seed_takes_the_demo_or_a_scale_not_both(cli, admin):  # noqa: F811
    result = cli("seed", "--demo", "--scale", "5")
    message = "error: pass either --demo (the demo company) or --scale N (a company of N deals)\n"
    assert (result.exit_code, result.stderr) == (1, message)
    assert table_counts(admin)["deals"] == 0


def test_a_company_at_scale_goes_into_an_empty_database_only(cli, admin):  # noqa: F811
    assert cli("seed", "--scale", "20").exit_code == 0
    before = table_counts(admin)
    again = cli("seed", "--scale", "20")
    assert (again.exit_code, again.stderr) == (
        1, "error: the database already holds 20 deals; seed a company at scale into an empty one\n")
    assert table_counts(admin) == before
