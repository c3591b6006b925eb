"""Keyset pagination with opaque cursors. Lists order by (created_at desc, id desc): a stable order in which
rows inserted while a client pages land before its position, so pages never repeat or skip a row."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, Field

from services.kernel.errors import Invalid
from services.kernel.inputs import utc

DEFAULT_LIMIT = 25
MAX_LIMIT = 100
MAX_CURSOR_LENGTH = 200  # the cursors made here are about 100 characters

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T] = Field(description="The records on this page, in list order.")
    next_cursor: str | None = Field(description="Pass as `after` to get the next page; null on the last page.")
    has_next: bool = Field(description="Whether another page follows.")
    total: int = Field(description="How many records match the filter in all (visible to the caller).")


class PageRequest(BaseModel):
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size (1-100, default 25).")
    after: str | None = Field(None, description="Cursor from the previous page's `next_cursor`.")


def encode_cursor(created_at: datetime, row_id: UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """A cursor is the caller's input: anything but one this module made is Invalid, whatever it holds (a
    deeply nested JSON document, a time out of range, a huge string)."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise Invalid("malformed cursor", field="after")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return utc(datetime.fromisoformat(created_at)), UUID(row_id)
    except (ValueError, TypeError, binascii.Error, RecursionError) as exc:
        raise Invalid("malformed cursor", field="after") from exc


def keyset(alias: str, page: PageRequest) -> tuple[str, list[Any]]:
    """The WHERE fragment (and its params) that starts after the page's cursor."""
    if page.after is None:
        return "true", []
    created_at, row_id = decode_cursor(page.after)
    return f"({alias}.created_at, {alias}.id) < (%s, %s)", [created_at, row_id]


def build_page(rows: list[dict[str, Any]], page: PageRequest, total: int, item: Any) -> Page[Any]:
    """Rows were fetched with limit+1; the extra one only tells whether a next page exists."""
    has_next = len(rows) > page.limit
    rows = rows[: page.limit]
    cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if has_next and rows else None
    return Page(items=[item(r) for r in rows], next_cursor=cursor, has_next=has_next, total=total)
