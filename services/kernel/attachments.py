"""Links from activities and notes to the records they belong to (deal, lead, person, organization)."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, Field

from services.kernel.errors import Invalid
from services.kernel.uow import Row, UnitOfWork

LINK_TABLES = {
    "deal_id": ("deals", "deal"),
    "lead_id": ("leads", "lead"),
    "person_id": ("persons", "person"),
    "organization_id": ("organizations", "organization"),
}


class Links(BaseModel):
    deal_id: UUID | None = Field(None, description="Deal it belongs to.")
    lead_id: UUID | None = Field(None, description="Lead it belongs to.")
    person_id: UUID | None = Field(None, description="Person it belongs to.")
    organization_id: UUID | None = Field(None, description="Organization it belongs to.")


def link_checks(links: dict[str, UUID | None]) -> tuple[list[str], list[UUID]]:
    """Select-list items, one per given link (named by its column): whether the caller sees the linked record.
    They go into one select, alone (check_links) or beside a caller's own checks."""
    items: list[str] = []
    params: list[UUID] = []
    for column, target in links.items():
        if target is None or column not in LINK_TABLES:
            continue
        items.append(f"exists (select 1 from public.{LINK_TABLES[column][0]} where id = %s) as {column}")
        params.append(target)
    return items, params


def raise_missing_link(found: Row, links: dict[str, UUID | None]) -> None:
    """Invalid naming the first given link that `found` (a row holding `link_checks`' items) did not see."""
    for column, target in links.items():
        if target is None or column not in LINK_TABLES:
            continue
        if not found[column]:
            raise Invalid(f"{LINK_TABLES[column][1]} {target} not found", field=column)


async def check_links(uow: UnitOfWork, links: dict[str, UUID | None]) -> None:
    """Each linked record must exist and be visible to the caller (else Invalid naming the field)."""
    items, params = link_checks(links)
    if items:
        found = await uow.one(f"select {', '.join(items)}", params)
        assert found is not None
        raise_missing_link(found, links)
