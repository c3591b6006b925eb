"""One cleaning function for the CRM's text (services.kernel.text.clean_text): what it drops, what it keeps, and
that both the write path (text comes back clean from GraphQL) and the MCP server (results shown to a model) use
it. Profile fields: display names are cleaned single lines, avatars http(s) URLs."""

from __future__ import annotations

import pytest
from conftest import counts
from test_graphql_mutations import database_state, world  # noqa: F401  (world is a fixture)

from mcp_server import safety
from services.kernel.text import clean_text

# Each invisible or reordering character, by name: dropped wherever it stands.
HIDDEN = {
    "RIGHT-TO-LEFT OVERRIDE": "\u202e",
    "LEFT-TO-RIGHT EMBEDDING": "\u202a",
    "POP DIRECTIONAL FORMATTING": "\u202c",
    "RIGHT-TO-LEFT ISOLATE": "\u2067",
    "POP DIRECTIONAL ISOLATE": "\u2069",
    "ARABIC LETTER MARK": "\u061c",
    "ZERO WIDTH SPACE": "\u200b",
    "ZERO WIDTH JOINER": "\u200d",
    "WORD JOINER": "\u2060",
    "BYTE ORDER MARK": "\ufeff",
    "SOFT HYPHEN": "\u00ad",
    "TAG LATIN SMALL LETTER A": "\U000e0061",
    "CANCEL TAG": "\U000e007f",
    "VARIATION SELECTOR-1": "\ufe00",
    "VARIATION SELECTOR-16": "\ufe0f",
    "VARIATION SELECTOR-17": "\U000e0100",
    "VARIATION SELECTOR-256": "\U000e01ef",
    "COMBINING GRAPHEME JOINER": "\u034f",
    "HANGUL CHOSEONG FILLER": "\u115f",
    "HANGUL JUNGSEONG FILLER": "\u1160",
    "HANGUL FILLER": "\u3164",
    "HALFWIDTH HANGUL FILLER": "\uffa0",
    "NULL": "\x00",
    "BELL": "\x07",
    "ESCAPE": "\x1b",
    "DELETE": "\x7f",
    "PRIVATE USE": "\ue000",
    "LONE SURROGATE": "\ud800",
}
# Line breaks in all their spellings: "\n" in multi-line text, a space in a single line.
LINE_BREAKS = {
    "LINE SEPARATOR": "\u2028",
    "PARAGRAPH SEPARATOR": "\u2029",
    "CARRIAGE RETURN": "\r",
    "CR LF": "\r\n",
    "NEXT LINE": "\x85",
    "VERTICAL TAB": "\x0b",
    "FORM FEED": "\x0c",
}


@pytest.mark.parametrize("char", HIDDEN.values(), ids=HIDDEN.keys())
def test_an_invisible_or_reordering_character_is_dropped(char):
    assert clean_text(f"Ac{char}me{char}") == "Acme"
    assert clean_text(f"Ac{char}me", single_line=True) == "Acme"


@pytest.mark.parametrize("char", LINE_BREAKS.values(), ids=LINE_BREAKS.keys())
def test_a_line_break_is_a_newline_in_multi_line_text_and_a_space_in_a_single_line(char):
    assert clean_text(f"one{char}two") == "one\ntwo"
    assert clean_text(f"one{char}two", single_line=True) == "one two"


def test_multi_line_text_keeps_newlines_tabs_and_its_spacing():
    text = "  Agenda:\n\t1. price\n\n\t2. term  "
    assert clean_text(text) == text


def test_a_single_line_has_single_spaces_and_no_ends():
    assert clean_text("  Ada \t\n Lovelace  ", single_line=True) == "Ada Lovelace"


@pytest.mark.parametrize("other", ["", "é"], ids=["ascii text", "other text"])
def test_every_ascii_character_is_kept_or_dropped_alike_in_ascii_and_in_other_text(other):
    for code in range(128):
        char = chr(code)
        expected = "" if (code < 32 and char not in "\n\t\r\x0b\x0c") or code == 127 else char
        expected = "\n" if char in "\r\x0b\x0c" else expected
        assert clean_text(f"a{char}b{other}") == f"a{expected}b{other}", repr(char)


def test_visible_text_of_every_script_is_kept():
    text = "Zoë Ñandú, 李小龍, Влади́мир, שָׁלוֹם, مرحبا, नमस्ते, 😀 ✓"
    assert clean_text(text) == text
    assert clean_text(text, single_line=True) == text


def test_mcp_cleans_with_the_kernel_function_and_caps_long_text():
    text = "Ac\u202eme\ufe0f\u2028boss\u3164" + "x" * 5000
    assert safety.clean_text(text, 10) == clean_text(text)[:10] + f"… [{len(clean_text(text)) - 10} more characters]"
    assert safety.clean({"title": text[:20], "tags": [text[:20]]}) == {
        "title": clean_text(text[:20]), "tags": [clean_text(text[:20])]}


# The write path ---------------------------------------------------------------------------------------------

SPOOFED = "\u202eAnn\u202c \u2066Lee\u2069\u200b\ufe0f\u3164"


async def test_a_name_with_bidi_overrides_written_through_graphql_comes_back_clean(api, admin):
    body = await api.query(
        "mutation($input: PersonCreateInput!) { createPerson(input: $input) { id name firstName lastName } }",
        {"input": {"firstName": SPOOFED, "lastName": "Ba\u202ek\u2028er\n"}})

    person = body["data"]["createPerson"]
    assert (person["name"], person["firstName"], person["lastName"]) == ("Ann Lee Bak er", "Ann Lee", "Bak er")
    read = await api.query("query($id: UUID!) { person(id: $id) { name } }", {"id": person["id"]})
    assert read == {"data": {"person": {"name": "Ann Lee Bak er"}}}
    stored = admin.execute("select name from public.persons where id = %s", [person["id"]]).fetchone()[0]
    assert stored == "Ann Lee Bak er"


async def test_multi_line_text_keeps_its_lines_through_graphql(api, world):  # noqa: F811
    body = await api.query(
        "mutation($input: NoteCreateInput!) { createNote(input: $input) { body } }",
        {"input": {"body": "Line\u202e one\r\n\tLine two\u2029end", "dealId": world.deal}})

    assert body == {"data": {"createNote": {"body": "Line one\n\tLine two\nend"}}}


async def test_mcp_results_are_cleaned_with_the_same_function(db, company, admin):
    from test_mcp_tools import client_for

    async with client_for(db, company, "bob") as client:
        deal = (await client.call_tool("create_deal", {"title": "Placeholder"})).structured_content
        # Written before text was cleaned on its way in: the MCP server still shows it clean.
        raw = "Acme" + "".join(HIDDEN.values()).replace("\x00", "").replace("\ud800", "") + "\u2028deal"
        admin.execute("update public.deals set title = %s where id = %s", [raw, deal["id"]])
        shown = (await client.call_tool("get_deal", {"deal_id": deal["id"]})).structured_content

    assert shown["deal"]["title"] == clean_text(raw) == "Acme\ndeal"


# Profiles ---------------------------------------------------------------------------------------------------

UPDATE_PROFILE = ("mutation($userId: UUID!, $input: ProfileUpdateInput!) {"
                  " updateProfile(userId: $userId, input: $input) { displayName avatarUrl } }")


async def test_a_display_name_is_trimmed_and_cleaned(api, world):  # noqa: F811
    body = await api.query(UPDATE_PROFILE, {"userId": world.users["bob"],
                                            "input": {"displayName": "  \u202eBob\u202c\n the\u200b Builder  "}})

    assert body == {"data": {"updateProfile": {"displayName": "Bob the Builder", "avatarUrl": None}}}


@pytest.mark.parametrize("name", ["   ", "\u202e\u202c", "\u3164\u200b", "\n\t"], ids=["blanks", "bidi", "fillers",
                                                                                     "breaks"])
async def test_a_display_name_with_nothing_visible_is_refused_and_nothing_is_written(api, world, admin, name):  # noqa: F811
    before = database_state(admin)

    body = await api.query(UPDATE_PROFILE, {"userId": world.users["bob"], "input": {"displayName": name}})

    (error,) = body["errors"]
    assert (error["message"], error["extensions"]["field"]) == (
        "displayName: String should have at least 1 character", "displayName")
    assert database_state(admin) == before


@pytest.mark.parametrize("url", ["javascript:alert(1)", "JavaScript:alert(1)", "data:image/png;base64,AAAA",
                                 "vbscript:msgbox", "//evil.example/a.png", "https://", "ftp://img.example/a.png",
                                 "java\u200bscript:alert(1)"])
async def test_an_avatar_that_is_not_an_http_url_is_refused_and_nothing_is_written(api, world, admin, url):  # noqa: F811
    before = database_state(admin)

    body = await api.query(UPDATE_PROFILE, {"userId": world.users["bob"], "input": {"avatarUrl": url}})

    (error,) = body["errors"]
    assert (error["message"], error["extensions"]["code"], error["extensions"]["field"]) == (
        "avatarUrl: Value error, must be an http or https URL", "BAD_USER_INPUT", "avatarUrl")
    assert database_state(admin) == before


async def test_an_http_avatar_is_kept_and_an_empty_one_clears_it(api, world, admin):  # noqa: F811
    bob = world.users["bob"]
    set_ = await api.query(UPDATE_PROFILE, {"userId": bob, "input": {"avatarUrl": " https://img.example/b.png "}})
    cleared = await api.query(UPDATE_PROFILE, {"userId": bob, "input": {"avatarUrl": ""}})

    assert set_["data"]["updateProfile"]["avatarUrl"] == "https://img.example/b.png"
    assert cleared["data"]["updateProfile"]["avatarUrl"] is None
    assert counts(admin, "user_profiles")["user_profiles"] == 6
