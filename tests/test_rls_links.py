"""RLS checks every link a writer sets, not only the one that decides a note's or an activity's visibility.

Raw SQL as `authenticated`: dan (member, East) can see bob's company deal but not carol's owner-only person,
organization, lead or deal. Every link of a note, an activity, a deal or a lead must be a record the writer
can see, on insert and on update; deleting a linked record still clears the links of rows others own.
"""

from __future__ import annotations

from uuid import UUID

import pytest
from conftest import rls_session
from matrix import seed_record
from psycopg.errors import InsufficientPrivilege

from services.contacts.schemas import organization_name_key


def carols_hidden(admin, company, entity: str) -> UUID:
    """A record of carol's (member, West) with visibility owner: hidden from dan."""
    carol = company.people["carol"].id
    if entity == "person":
        query = "insert into public.persons (first_name, owner_id, visibility) values ('Hidden', %s, 'owner')"
        params: list = [carol]
    elif entity == "organization":
        query = ("insert into public.organizations (name, name_key, owner_id, visibility)"
                 " values ('Hidden', %s, %s, 'owner')")
        params = [organization_name_key("Hidden"), carol]
    elif entity == "lead":
        query = "insert into public.leads (title, owner_id, visibility) values ('Hidden', %s, 'owner')"
        params = [carol]
    else:
        query = ("insert into public.deals (title, owner_id, visibility, pipeline_id, stage_id)"
                 " values ('Hidden', %s, 'owner', %s, %s)")
        params = [carol, company.sales_pipeline_id, company.sales_stage_ids[0]]
    return admin.execute(f"{query} returning id", params).fetchone()[0]


def dans(admin, company, kind: str, deal_id: UUID) -> UUID:
    """A note dan wrote, or an activity he owns, on the given (visible) deal."""
    dan = company.people["dan"].id
    if kind == "note":
        query = "insert into public.notes (body, author_id, deal_id) values ('Mine', %s, %s) returning id"
    else:
        query = ("insert into public.activities (type, subject, owner_id, deal_id)"
                 " values ('call', 'Mine', %s, %s) returning id")
    return admin.execute(query, [dan, deal_id]).fetchone()[0]


TABLE = {"note": "notes", "activity": "activities"}
INSERT_ATTACHED = {
    "note": "insert into public.notes (body, author_id, deal_id, {column}) values ('Planted', %s, %s, %s)",
    "activity": ("insert into public.activities (type, subject, owner_id, deal_id, {column})"
                 " values ('call', 'Planted', %s, %s, %s)"),
}
SECOND_LINKS = ["person", "organization", "lead"]


@pytest.mark.parametrize("target", SECOND_LINKS)
@pytest.mark.parametrize("kind", ["note", "activity"])
def test_insert_linking_a_visible_deal_and_a_hidden_record_is_refused(app_url, company, admin, kind, target):
    deal_id = seed_record(admin, company, "deal", "company")
    hidden = carols_hidden(admin, company, target)

    with pytest.raises(InsufficientPrivilege, match="row-level security"):
        with rls_session(app_url, company.people["dan"].id) as conn:
            conn.execute(INSERT_ATTACHED[kind].format(column=f"{target}_id"),
                         [company.people["dan"].id, deal_id, hidden])

    assert admin.execute(f"select count(*) from public.{TABLE[kind]}").fetchone() == (0,)


@pytest.mark.parametrize("target", SECOND_LINKS)
@pytest.mark.parametrize("kind", ["note", "activity"])
def test_update_adding_a_hidden_second_link_is_refused(app_url, company, admin, kind, target):
    deal_id = seed_record(admin, company, "deal", "company")
    hidden = carols_hidden(admin, company, target)
    row_id = dans(admin, company, kind, deal_id)
    before = admin.execute(f"select * from public.{TABLE[kind]} where id = %s", [row_id]).fetchone()

    with pytest.raises(InsufficientPrivilege, match="row-level security"):
        with rls_session(app_url, company.people["dan"].id) as conn:
            conn.execute(f"update public.{TABLE[kind]} set {target}_id = %s where id = %s", [hidden, row_id])

    assert admin.execute(f"select * from public.{TABLE[kind]} where id = %s", [row_id]).fetchone() == before


@pytest.mark.parametrize("kind", ["note", "activity"])
def test_insert_linking_visible_records_only_is_allowed(app_url, company, admin, kind):
    deal_id = seed_record(admin, company, "deal", "company")
    person_id = seed_record(admin, company, "person", "team")

    with rls_session(app_url, company.people["dan"].id) as conn:
        conn.execute(INSERT_ATTACHED[kind].format(column="person_id"), [company.people["dan"].id, deal_id, person_id])

    stored = admin.execute(f"select deal_id, person_id from public.{TABLE[kind]}").fetchall()
    assert stored == [(deal_id, person_id)]


@pytest.mark.parametrize("column", ["person_id", "organization_id"])
def test_deal_insert_linking_a_hidden_contact_is_refused(app_url, company, admin, column):
    hidden = carols_hidden(admin, company, column.removesuffix("_id"))

    with pytest.raises(InsufficientPrivilege, match="row-level security"):
        with rls_session(app_url, company.people["dan"].id) as conn:
            conn.execute(f"insert into public.deals (title, pipeline_id, {column}) values ('Planted', %s, %s)",
                         [company.sales_pipeline_id, hidden])

    assert admin.execute("select count(*) from public.deals").fetchone() == (0,)


@pytest.mark.parametrize("column", ["person_id", "organization_id"])
def test_deal_update_linking_a_hidden_contact_is_refused(app_url, company, admin, column):
    hidden = carols_hidden(admin, company, column.removesuffix("_id"))
    dan = company.people["dan"].id
    deal_id = admin.execute("insert into public.deals (title, owner_id, pipeline_id) values ('Dans', %s, %s)"
                            " returning id", [dan, company.sales_pipeline_id]).fetchone()[0]
    before = admin.execute("select * from public.deals where id = %s", [deal_id]).fetchone()

    with pytest.raises(InsufficientPrivilege, match="row-level security"):
        with rls_session(app_url, dan) as conn:
            conn.execute(f"update public.deals set {column} = %s where id = %s", [hidden, deal_id])

    assert admin.execute("select * from public.deals where id = %s", [deal_id]).fetchone() == before


@pytest.mark.parametrize(("column", "target"), [("person_id", "person"), ("organization_id", "organization"),
                                                ("converted_deal_id", "deal")])
def test_lead_insert_linking_a_hidden_record_is_refused(app_url, company, admin, column, target):
    hidden = carols_hidden(admin, company, target)
    before = admin.execute("select count(*) from public.leads").fetchone()

    with pytest.raises(InsufficientPrivilege):
        with rls_session(app_url, company.people["dan"].id) as conn:
            conn.execute(f"insert into public.leads (title, {column}) values ('Planted', %s)", [hidden])

    assert admin.execute("select count(*) from public.leads").fetchone() == before


@pytest.mark.parametrize("column", ["person_id", "organization_id"])
def test_lead_update_linking_a_hidden_contact_is_refused(app_url, company, admin, column):
    hidden = carols_hidden(admin, company, column.removesuffix("_id"))
    dan = company.people["dan"].id
    lead_id = admin.execute("insert into public.leads (title, owner_id) values ('Dans', %s) returning id",
                            [dan]).fetchone()[0]
    before = admin.execute("select * from public.leads where id = %s", [lead_id]).fetchone()

    with pytest.raises(InsufficientPrivilege, match="row-level security"):
        with rls_session(app_url, dan) as conn:
            conn.execute(f"update public.leads set {column} = %s where id = %s", [hidden, lead_id])

    assert admin.execute("select * from public.leads where id = %s", [lead_id]).fetchone() == before


def test_deleting_a_person_clears_links_from_rows_its_deleter_cannot_see(app_url, company, admin):
    """The foreign keys' `on delete set null` runs whatever the deleter may see of the rows linking to it."""
    carol = company.people["carol"].id
    person_id = admin.execute("insert into public.persons (first_name, owner_id, visibility)"
                              " values ('Shared', %s, 'company') returning id", [carol]).fetchone()[0]
    carols_deal = admin.execute(
        "insert into public.deals (title, owner_id, visibility, pipeline_id, person_id)"
        " values ('Hers', %s, 'owner', %s, %s) returning id", [carol, company.sales_pipeline_id, person_id]
    ).fetchone()[0]
    note_id = admin.execute("insert into public.notes (body, author_id, deal_id, person_id)"
                            " values ('Hers', %s, %s, %s) returning id", [carol, carols_deal, person_id]).fetchone()[0]
    lead_id = admin.execute("insert into public.leads (title, owner_id, visibility, person_id)"
                            " values ('Hers', %s, 'owner', %s) returning id", [carol, person_id]).fetchone()[0]
    mia = company.people["mia"].id  # manager of East: cannot see carol's owner-only rows, may delete contacts
    admin.execute("update public.persons set owner_id = %s where id = %s", [mia, person_id])

    with rls_session(app_url, mia) as conn:
        assert conn.execute("delete from public.persons where id = %s", [person_id]).rowcount == 1

    assert admin.execute("select person_id from public.deals where id = %s", [carols_deal]).fetchone() == (None,)
    assert admin.execute("select person_id from public.notes where id = %s", [note_id]).fetchone() == (None,)
    assert admin.execute("select person_id from public.leads where id = %s", [lead_id]).fetchone() == (None,)
