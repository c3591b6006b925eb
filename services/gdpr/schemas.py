"""An erasure as its requester sees it, the identifiers it looks for, and where a scan found them."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

# A phone is looked for by its digits; fewer than this many digits would match unrelated numbers.
MIN_PHONE_DIGITS = 7
# A name shorter than this would match inside ordinary words ("Al" in "total"): it is not looked for.
MIN_NAME_LENGTH = 4


class ErasureStatus(StrEnum):
    QUEUED = "queued"
    ERASING = "erasing"
    VERIFYING = "verifying"
    DONE = "done"
    FAILED = "failed"


class Erasure(BaseModel):
    id: UUID = Field(description="Erasure id.")
    person_id: UUID = Field(description="The person being (or who was) erased; the record itself is gone once "
                                        "the erasure ran.")
    requested_by: UUID | None = Field(description="Who asked for it; null if that user is gone.")
    status: ErasureStatus = Field(description="queued, erasing (erased; work in flight settles before the "
                                              "verification), verifying, done (verified: nothing left) or failed "
                                              "(mentions remain, see error).")
    counts: dict[str, Any] = Field(description="What the erasure removed: {deleted: {table: rows}, redacted: "
                                               "{schema.table: rows}}, and found_when_verifying: mentions that "
                                               "appeared while it settled (redacted too).")
    hits: int | None = Field(description="Mentions of the person the final scan found (0 when done).")
    created_at: datetime = Field(description="When it was requested.")
    completed_at: datetime | None = Field(description="When it ended (done or failed).")
    error: str | None = Field(description="Why it failed; null otherwise.")


class Identifiers(BaseModel):
    """What identifies the person in text: the full name, each email, each phone (copied when the erasure was
    requested; wiped once it is verified)."""

    name: str
    emails: list[str] = []
    phones: list[str] = []

    @property
    def terms(self) -> list[str]:
        """Names and emails, looked for case-insensitively as they are; longest first, so an email is replaced
        before a name inside it."""
        found = [e.strip() for e in self.emails if e.strip()]
        if len(self.name.strip()) >= MIN_NAME_LENGTH:
            found.append(self.name.strip())
        return sorted(set(found), key=lambda t: (-len(t), t))

    @property
    def phone_digits(self) -> list[str]:
        """Each phone as its digits alone, so any formatting of it is found."""
        digits = (re.sub(r"\D", "", phone) for phone in self.phones)
        return sorted({d for d in digits if len(d) >= MIN_PHONE_DIGITS}, key=lambda d: (-len(d), d))

    @property
    def patterns(self) -> list[str]:
        """ILIKE patterns of the terms (`%`, `_` and `\\` taken literally)."""
        return ["%" + re.sub(r"([\\%_])", r"\\\1", term) + "%" for term in self.terms]

    @property
    def digit_patterns(self) -> list[str]:
        return [f"%{digits}%" for digits in self.phone_digits]


class Hit(BaseModel):
    """Rows of one column that still mention the person."""

    table: str = Field(description="schema.table")
    column: str
    rows: int
