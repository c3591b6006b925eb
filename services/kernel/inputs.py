"""The rules every input value follows, on every surface.

Text holding NUL (which Postgres cannot store) is refused naming the field; other text is cleaned
(services.kernel.text.clean_text) and trimmed, and only then held to the field's length bounds, which match
the database's rules. Times are turned to UTC and must stay within the years 1-9999 there, the range Python
and the database share. Input models get these rules from `services.kernel.schemas.Input`; service
arguments that are plain strings (a search query, a reason, a key) from `text_argument`. So bad input is a
clear Invalid (GraphQL BAD_USER_INPUT, MCP `[invalid]`) naming the field, never a database error."""

from __future__ import annotations

from datetime import UTC, datetime

from services.kernel.errors import Invalid
from services.kernel.text import clean_text


def checked_text(value: str, *, single_line: bool = True) -> str:
    """Input text as the CRM stores it: ValueError if it holds NUL, else cleaned and trimmed."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters (\\x00)")
    return clean_text(value, single_line=single_line).strip()


def text_argument(
    value: str, field: str, *, single_line: bool = True, min_length: int = 0, max_length: int | None = None
) -> str:
    """A service argument that is a plain string (a search query, a reason, a name to look up), held to the
    rules of input text; Invalid naming `field` when it breaks them."""
    try:
        text = checked_text(value, single_line=single_line)
    except ValueError as exc:
        raise Invalid(f"{field} {exc}", field=field) from exc
    if len(text) < min_length:
        raise Invalid(f"{field} must have at least {min_length} character(s)", field=field)
    if max_length is not None and len(text) > max_length:
        raise Invalid(f"{field} must have at most {max_length} characters", field=field)
    return text


def utc(value: datetime) -> datetime:
    """An input time in UTC (a time without an offset is taken as UTC); ValueError outside years 1-9999 there."""
    try:
        return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise ValueError("must be within the years 1 to 9999 in UTC") from None
