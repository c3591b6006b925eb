"""The gateway's execution (`graphql_api.execution`) completes fields along a plan made once per selection; the
answer, errors included, is the one graphql-core's general way gives: on a schema made to break every rule a
field can break, and on the real schema with real records."""

from __future__ import annotations

import enum
from typing import Any

import pytest
import strawberry
from test_graphql_speed import deals_with_relations

from graphql_api import execution
from graphql_api.execution import Execution, resolve_directly
from services.activities import service as activities
from services.activities.schemas import ActivityCreate
from services.notes import service as notes
from services.notes.schemas import NoteCreate


@strawberry.enum
class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.type
class Item:
    name: str
    count: int | None
    color: Color | None
    tags: list[str]


@strawberry.type
class Box:
    label: str
    item: Item | None
    required_item: Item
    items: list[Item]
    loose_items: list[Item | None] | None

    @strawberry.field
    async def later(self) -> Item | None:  # a resolver of its own (awaited) among planned fields
        return self.item


def item(name: Any = "apple", count: Any = 1, color: Any = Color.RED, tags: Any = ("a",)) -> Item:
    return Item(name=name, count=count, color=color, tags=list(tags))


def box(label: Any = "box", **changes: Any) -> Box:
    fields: dict[str, Any] = {"item": item(), "required_item": item("pear"), "items": [item("fig"), item("kiwi")],
                              "loose_items": [None, item("plum")], **changes}
    return Box(label=label, **fields)


BOXES = [
    box("fine"),
    box(None),  # a null for a non-null scalar: the box is null
    box("bad count", item=item(count="many")),  # an Int that is not one: that count is null
    box("bad color", item=item(color="green")),  # not a Color
    box("no required item", required_item=None),  # a null for a non-null object: the box is null
    box("bad item in list", items=[item("ok"), item(None)]),  # a non-null item fails: the list, then the box
    box("bad loose item", loose_items=[item(None), None]),  # a nullable item fails: that item is null
    box("no item", item=None, loose_items=None),
    box("no list", items=None),  # a null for a non-null list
]


@strawberry.type
class Query:
    @strawberry.field
    def boxes(self) -> list[Box | None]:
        return BOXES


QUERY = """query ($tags: Boolean!) {
  boxes {
    __typename label again: label
    item { name count color ...Bits }
    requiredItem { name __typename }
    items { name count }
    looseItems { name }
    later { name count }
    ... on Box { item { color } }
    item @include(if: $tags) { tags }
  }
}
fragment Bits on Item { count name }"""


def outcome(result: Any) -> tuple[Any, list[tuple[str, list[Any]]]]:
    return result.data, sorted((e.message, e.path) for e in result.errors or [])


@pytest.mark.parametrize("tags", [True, False])
async def test_a_planned_answer_is_graphql_cores_answer_with_every_kind_of_error(tags, monkeypatch):
    reference = strawberry.Schema(query=Query)
    planned_schema = strawberry.Schema(query=Query, execution_context_class=Execution)
    resolve_directly(planned_schema)
    plans: list[str] = []
    make_plan = execution._plan

    def counted(parent_type: Any, grouped_field_set: Any) -> Any:
        made = make_plan(parent_type, grouped_field_set)
        if made is not None:
            plans.append(parent_type.name)
        return made

    monkeypatch.setattr(execution, "_plan", counted)

    planned = outcome(await planned_schema.execute(QUERY, variable_values={"tags": tags}))

    assert planned == outcome(await reference.execute(QUERY, variable_values={"tags": tags}))
    assert sorted(set(plans)) == ["Box", "Item"]  # the plans did the work
    data, errors = planned
    assert [b and b["label"] for b in data["boxes"]] == [
        "fine", None, "bad count", "bad color", None, None, "bad loose item", "no item", None]
    assert data["boxes"][0] == {
        "__typename": "Box", "label": "fine", "again": "fine",
        "item": {"name": "apple", "count": 1, "color": "RED", **({"tags": ["a"]} if tags else {})},
        "requiredItem": {"name": "pear", "__typename": "Item"},
        "items": [{"name": "fig", "count": 1}, {"name": "kiwi", "count": 1}],
        "looseItems": [None, {"name": "plum"}], "later": {"name": "apple", "count": 1},
    }
    assert data["boxes"][2]["item"]["count"] is None and data["boxes"][2]["later"] == {"name": "apple", "count": None}
    assert data["boxes"][6]["looseItems"] == [None, None]
    assert data["boxes"][7]["item"] is None and data["boxes"][7]["looseItems"] is None
    assert errors == sorted([
        ("Cannot return null for non-nullable field Box.label.", ["boxes", 1, "label"]),
        ("Int cannot represent non-integer value: 'many'", ["boxes", 2, "item", "count"]),
        ("Int cannot represent non-integer value: 'many'", ["boxes", 2, "later", "count"]),
        ("Enum 'Color' cannot represent value: 'green'", ["boxes", 3, "item", "color"]),
        ("Cannot return null for non-nullable field Box.requiredItem.", ["boxes", 4, "requiredItem"]),
        ("Cannot return null for non-nullable field Item.name.", ["boxes", 5, "items", 1, "name"]),
        ("Cannot return null for non-nullable field Item.name.", ["boxes", 6, "looseItems", 0, "name"]),
        ("Cannot return null for non-nullable field Box.items.", ["boxes", 8, "items"]),
    ])


REAL = [
    """{ deals(first: 50) { totalCount totalCountCapped pageInfo { hasNextPage endCursor }
         edges { cursor node { id title value currency status createdAt
           stage { name position } pipeline { name } owner { displayName }
           organization { name owner { displayName } } person { name organization { name } }
           notes { body author { displayName } } activities { subject dueDate done }
           stageHistory { fromStage { name } toStage { name } } } } } }""",
    """{ deals(first: 3) { edges { node { ...D state: status x: stage { n: name } } } } }
       fragment D on Deal { title value person { ... on Person { name } } }""",
    """{ persons(first: 20) { edges { node { name organization { name } deals: notes { body } } } } }""",
    """{ me { user { email } scopes permissions } teams { name members { displayName } } }""",
]


@pytest.mark.parametrize("query", REAL, ids=["deals page", "fragments and aliases", "persons", "teams"])
async def test_the_real_schema_answers_the_same_with_and_without_plans(query, api, actors, monkeypatch):
    await deals_with_relations(actors, 6)
    async with actors.uow("bob") as uow:
        page = await api.query("{ deals(first: 1) { edges { node { id } } } }")
        deal_id = page["data"]["deals"]["edges"][0]["node"]["id"]
        await notes.create(uow, NoteCreate(body="Called them", deal_id=deal_id))
        await activities.create(uow, ActivityCreate(subject="Follow up", deal_id=deal_id))

    planned = await api.query(query)
    monkeypatch.setattr(execution, "_plan", lambda parent_type, grouped_field_set: None)
    general = await api.query(query)

    assert planned == general
    assert "errors" not in planned
    if query is REAL[0]:
        nodes = {e["node"]["title"]: e["node"] for e in planned["data"]["deals"]["edges"]}
        assert sorted(nodes) == [f"Deal {i}" for i in range(6)]
        assert nodes["Deal 5"]["value"] == "5.00" and nodes["Deal 5"]["person"] == {
            "name": "P 5", "organization": {"name": "Org 5"}}
        assert [n["notes"] for n in nodes.values() if n["notes"]] == [[{"body": "Called them", "author": {
            "displayName": "Bob"}}]]
