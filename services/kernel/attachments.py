"""Links from activities and notes to the records they belong to (deal, lead, person, organization)."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, Field

from services.kernel.errors import Invalid
from services.kernel.uow import UnitOfWork

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


async def check_links(uow: UnitOfWork, links: dict[str, UUID | None]) -> None:
    """Each linked record must exist and be visible to the caller (else Invalid naming the field)."""
    for column, target in links.items():
        if target is None or column not in LINK_TABLES:
            continue
        table, entity = LINK_TABLES[column]
        if await uow.one(f"select 1 from public.{table} where id = %s", [target]) is None:
            raise Invalid(f"{entity} {target} not found", field=column)
