"""Resource links: a tool result about a record points at the record's `crm://` resource, so a client can
show it, subscribe to it or read it again later without another tool call."""

from __future__ import annotations

from typing import Any

from mcp.types import ResourceLink

from mcp_server.records import Detail
from mcp_server.safety import clean_text
from services.contacts.schemas import Organization, Person
from services.deals.schemas import Deal
from services.leads.schemas import ConversionResult, Lead

# The record types with a resource template, and the template's collection name.
COLLECTIONS: dict[type[Any], str] = {Deal: "deals", Person: "persons", Organization: "organizations", Lead: "leads"}


def record_uri(record: Deal | Person | Organization | Lead) -> str:
    return f"crm://{COLLECTIONS[type(record)]}/{record.id}"


def links_for(result: Any) -> list[ResourceLink]:
    """Links to the records a tool result is about (none for lists: their items are many)."""
    if isinstance(result, ConversionResult):
        records: list[Any] = [result.deal, result.lead]
    elif isinstance(result, Detail):
        records = [result.primary]
    else:
        records = [result]
    return [
        ResourceLink(
            type="resource_link",
            uri=record_uri(record),
            name=f"{COLLECTIONS[type(record)][:-1]} {record.id}",
            title=clean_text(str(getattr(record, "title", None) or getattr(record, "name", "")), 200),
            mime_type="application/json",
        )
        for record in records
        if type(record) in COLLECTIONS
    ]
