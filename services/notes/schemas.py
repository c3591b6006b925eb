from __future__ import annotations

import html
import re
from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import AfterValidator, Field

from services.kernel.attachments import Links
from services.kernel.schemas import Input, RecordFilter

# Raw HTML as CommonMark reads it: `<` then a letter, `/`, `!` or `?`, up to the next `>`, across lines.
# Stripped until none is left, so removing one tag cannot join the text around it into another.
_TAG = re.compile(r"<[A-Za-z/!?][^>]*>")
# The destination of an inline link or image (`](target`, parentheses balanced one level deep as in
# `alert(1)`, or `<target>`), and of a link reference definition (`[label]: target`).
_DESTINATION = r"(<[^>\n]*>|(?:[^()\s<>]|\([^()\s<>]*\))*)"
_LINK_TARGET = re.compile(r"(\]\(\s*)" + _DESTINATION)
_LINK_DEFINITION = re.compile(r"^( {0,3}\[[^\]\n]+\]:\s*)" + _DESTINATION, re.MULTILINE)
_SAFE_SCHEMES = ("http:", "https:", "mailto:", "tel:")


def _safe_target(match: re.Match[str]) -> str:
    # Judge the target as a renderer and a browser will read it: backslash escapes and character
    # references resolved, whitespace and control characters dropped.
    target = re.sub(r"[\x00-\x20\x7f]", "", html.unescape(match.group(2).strip("<>").replace("\\", "")))
    scheme = re.match(r"^([a-z][a-z0-9+.-]*):", target, re.IGNORECASE)
    if scheme and not target.lower().startswith(_SAFE_SCHEMES):
        return match.group(1) + "#"
    return match.group(0)


def sanitize_markdown(body: str) -> str:
    """Plain text or a safe subset of Markdown: no raw HTML, and links only to http(s), mailto and tel."""
    text = body.replace("\r\n", "\n")
    while (stripped := _TAG.sub("", text)) != text:
        text = stripped
    text = _LINK_TARGET.sub(_safe_target, text)
    text = _LINK_DEFINITION.sub(_safe_target, text).strip()
    if not text:
        raise ValueError("a note needs some text")
    return text


NoteBody = Annotated[str, AfterValidator(sanitize_markdown)]


class Note(Links):
    id: UUID = Field(description="Note id.")
    body: str = Field(description="Plain text or a safe subset of Markdown (no HTML).")
    author_id: UUID = Field(description="Who wrote it.")
    version: int = Field(description="Increments on every change (optimistic concurrency).")
    created_at: datetime = Field(description="When it was written.")
    updated_at: datetime = Field(description="When it last changed.")


class NoteCreate(Links, Input):
    multiline_fields = frozenset({"body"})

    body: NoteBody = Field(min_length=1, max_length=100000, description="Plain text or safe Markdown.")


class NoteUpdate(Input):
    multiline_fields = frozenset({"body"})

    body: NoteBody | None = Field(None, min_length=1, max_length=100000, description="New text.")
    deal_id: UUID | None = Field(None, description="New deal link.")
    lead_id: UUID | None = Field(None, description="New lead link.")
    person_id: UUID | None = Field(None, description="New person link.")
    organization_id: UUID | None = Field(None, description="New organization link.")


class NoteFilter(RecordFilter):
    owner_id: UUID | None = Field(None, description="Only notes by this author.")
    created_since: datetime | None = Field(None, description="Written at or after.")
    created_before: datetime | None = Field(None, description="Written before.")
    deal_id: UUID | None = Field(None, description="Only notes of this deal.")
    lead_id: UUID | None = Field(None, description="Only notes of this lead.")
    person_id: UUID | None = Field(None, description="Only notes of this person.")
    organization_id: UUID | None = Field(None, description="Only notes of this organization.")
