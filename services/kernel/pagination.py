"""Keyset pagination with opaque cursors. A list is read in one `Order`: a key column, then id as the tiebreaker,
both in the order's direction. The default, (created_at desc, id desc), is a stable order in which rows inserted
while a client pages land before its position, so pages never repeat or skip a row.

One row comparison, `(key, id) < (cursor key, cursor id)`, continues a page exactly, ties included. The key is a
NOT NULL column of a type whose comparisons are leakproof (under RLS only those reach an index), so an order over
a nullable or numeric value reads a generated column made for it (e.g. NULL as the largest day number).
A cursor names its order and holds the last row's key and id; it continues only the order it came from."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, Field, PrivateAttr

from services.kernel.errors import Invalid
from services.kernel.inputs import utc

DEFAULT_LIMIT = 25
MAX_LIMIT = 100
MAX_CURSOR_LENGTH = 200  # the cursors made here are about 130 characters

T = TypeVar("T")

_SQL_TYPES: dict[type, str] = {datetime: "timestamptz", date: "date", int: "bigint"}
_BIGINT = range(-(2**63), 2**63)
_ORDERS: dict[str, Order] = {}


@dataclass(frozen=True)
class Order:
    """A list order: `column` (of alias `t`, NOT NULL), then id, both descending or both ascending."""

    name: str  # how callers name it; cursors carry it
    column: str
    kind: type  # datetime, date or int: how a cursor holds the key
    descending: bool

    def __post_init__(self) -> None:
        known = _ORDERS.setdefault(self.name, self)
        if known != self:
            raise ValueError(f"two orders named {self.name}")

    def order_by(self, alias: str = "t") -> str:
        direction = "desc" if self.descending else "asc"
        return f"{alias}.{self.column} {direction}, {alias}.id {direction}"

    def after(self, alias: str = "t") -> str:
        """The condition (parameters: key, id) for the rows after a position."""
        comparison = "<" if self.descending else ">"
        return f"({alias}.{self.column}, {alias}.id) {comparison} (%s::{_SQL_TYPES[self.kind]}, %s)"

    def load(self, raw: Any) -> Any:
        """A key as a cursor holds it (text), as the column's type; ValueError if it is not one."""
        if not isinstance(raw, str):
            raise ValueError("cursor key is not text")
        if self.kind is datetime:
            return utc(datetime.fromisoformat(raw))
        if self.kind is date:
            return date.fromisoformat(raw)
        number = int(raw)
        if number not in _BIGINT:
            raise ValueError("cursor key is out of range")
        return number


NEWEST_FIRST = Order("created_desc", "created_at", datetime, descending=True)


class Page(BaseModel, Generic[T]):
    items: list[T] = Field(description="The records on this page, in list order.")
    next_cursor: str | None = Field(description="Pass as `after` to get the next page; null on the last page.")
    has_next: bool = Field(description="Whether another page follows.")
    total: int | None = Field(
        description="How many records match the filter (visible to the caller), counted up to the count limit: "
                    "a lower bound when `total_capped`. Null when the caller did not ask for it.")
    total_capped: bool = Field(False, description="True when more records match than were counted.")
    _position: Callable[[int], str] | None = PrivateAttr(None)

    def positioned(self, position: Callable[[int], str]) -> Page[T]:
        """This page, knowing how to make each item's position (the cursor that continues after it): made when
        asked for, since most callers want only the last."""
        self._position = position
        return self

    def position(self, index: int) -> str:
        """The cursor that continues the list after `items[index]`, in the order the page was read in."""
        if self._position is None or not 0 <= index < len(self.items):
            raise IndexError(index)
        return self._position(index)


class PageRequest(BaseModel):
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size (1-100, default 25).")
    after: str | None = Field(None, description="Cursor from the previous page's `next_cursor`.")
    count: bool = Field(True, description="Whether to count the matches (up to the count limit) as `total`.")


# Counting stops here: an exact count under RLS reads every visible match, which at scale costs far more than the
# page itself. `Database(count_limit=...)` (the PIPECD_COUNT_LIMIT setting) overrides it.
COUNT_LIMIT = 1000


def _dump(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


def encode_cursor(order: Order, key: Any, row_id: UUID) -> str:
    raw = json.dumps([order.name, _dump(key), str(row_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, order: Order = NEWEST_FIRST) -> tuple[Any, UUID]:
    """The key and id a cursor of `order` holds. A cursor is the caller's input: anything but one this module
    made is Invalid, whatever it holds (a deeply nested JSON document, a time out of range, a huge string), and
    a cursor of another order is refused (its position means nothing in this one)."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise Invalid("malformed cursor", field="after")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        name, key, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        made_by = _ORDERS[name]
        if made_by is order:
            return order.load(key), UUID(row_id)
    except (ValueError, TypeError, KeyError, ArithmeticError, binascii.Error, RecursionError) as exc:
        raise Invalid("malformed cursor", field="after") from exc
    raise Invalid(
        f"this cursor continues the {made_by.name} order, not {order.name}: page with the sort it came from,"
        " or leave the cursor out to start again",
        field="after",
    )


def keyset(alias: str, page: PageRequest, order: Order = NEWEST_FIRST) -> tuple[str, list[Any]]:
    """The WHERE fragment (and its params) that starts after the page's cursor."""
    if page.after is None:
        return "true", []
    key, row_id = decode_cursor(page.after, order)
    return order.after(alias), [key, row_id]


@dataclass(frozen=True)
class Count:
    """How many rows match, counted up to a limit: `capped` when there are more (then `n` is the limit)."""

    n: int | None  # None: not counted
    capped: bool = False


def build_page(
    rows: list[dict[str, Any]], page: PageRequest, total: Count, item: Any, order: Order = NEWEST_FIRST
) -> Page[Any]:
    """Rows were fetched with limit+1; the extra one only tells whether a next page exists."""
    has_next = len(rows) > page.limit
    rows = rows[: page.limit]
    keys = [(r[order.column], r["id"]) for r in rows]
    cursor = encode_cursor(order, *keys[-1]) if has_next and rows else None
    result: Page[Any] = Page(items=[item(r) for r in rows], next_cursor=cursor, has_next=has_next, total=total.n,
                             total_capped=total.capped)
    return result.positioned(lambda index: encode_cursor(order, *keys[index]))
