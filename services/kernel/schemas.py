"""Input pieces shared by the domains' schemas, above all `Input`, the base of every input model: its text and
times follow the rules of services.kernel.inputs before each field's own checks run."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from services.kernel.inputs import checked_text, utc
from services.kernel.records import Visibility

# The longest free text a search or a text filter takes, on every surface. Matching costs grow with the
# length of the text (trigram similarity against every candidate row), so this bounds the work of one request.
MAX_SEARCH_TEXT = 200


class Input(BaseModel):
    """The base of every input model. Its text fields are single lines (names, titles, subjects: line breaks
    become spaces) unless listed in `multiline_fields` (notes, addresses: line breaks and tabs kept)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    multiline_fields: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _clean_text(cls, value: Any, info: ValidationInfo) -> Any:
        """Before the field's own checks, so its length bounds and format rules see the cleaned text."""
        single_line = info.field_name not in cls.multiline_fields
        if isinstance(value, str):
            return checked_text(value, single_line=single_line)
        if isinstance(value, list):
            return [checked_text(item, single_line=single_line) if isinstance(item, str) else item for item in value]
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _utc(cls, value: Any) -> Any:
        return utc(value) if isinstance(value, datetime) else value


class OwnedInput(Input):
    owner_id: UUID | None = Field(None, description="Default: you.")
    visibility: Visibility | None = Field(None, description="Who sees it; default: the CRM's.")


class RecordFilter(Input):
    owner_id: UUID | None = Field(None, description="Only records owned by this user.")
    team_id: UUID | None = Field(None, description="Owner's team.")
    updated_since: datetime | None = Field(None, description="Changed since.")
    text: str | None = Field(
        None, min_length=1, max_length=MAX_SEARCH_TEXT, description="Text match."
    )


def filter_conditions(f: RecordFilter, *, owner_column: str = "owner_id") -> tuple[list[str], list[Any]]:
    """SQL conditions (alias `t`) for the filters every list shares."""
    where: list[str] = []
    params: list[Any] = []
    if f.owner_id is not None:
        where.append(f"t.{owner_column} = %s")
        params.append(f.owner_id)
    if f.team_id is not None:
        where.append(f"t.{owner_column} in (select user_id from public.team_members where team_id = %s)")
        params.append(f.team_id)
    if f.updated_since is not None:
        where.append("t.updated_at >= %s")
        params.append(f.updated_since)
    return where, params


def text_condition(f: RecordFilter, column: str = "t.search_text") -> tuple[list[str], list[Any]]:
    if not f.text:
        return [], []
    return [f"{column} like %s"], ["%" + escape_like(f.text.lower()) + "%"]


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
