from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import AfterValidator, BaseModel, Field

from services.kernel.records import Visibility
from services.kernel.schemas import Input, OwnedInput, RecordFilter

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_LEGAL_SUFFIXES = {"inc", "incorporated", "llc", "ltd", "limited", "gmbh", "corp", "corporation", "co",
                   "company", "sa", "ag", "bv", "plc", "oy", "ab", "srl", "spa", "pty"}


def normalize_email(value: str) -> str:
    email = value.strip().lower()
    if not _EMAIL.match(email):
        raise ValueError(f"{value!r} is not an email address")
    return email


def normalize_domain(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    domain = value.strip().lower()
    domain = re.sub(r"^[a-z]+://", "", domain).split("/")[0].split(":")[0]
    domain = domain.removeprefix("www.")
    if not re.fullmatch(r"[a-z0-9.-]+\.[a-z]{2,}", domain):
        raise ValueError(f"{value!r} is not a domain name")
    return domain


def organization_name_key(name: str) -> str:
    """Name for duplicate detection: case, punctuation, spacing and legal suffixes do not count."""
    words = re.sub(r"[^\w\s]", " ", name.lower()).split()
    while len(words) > 1 and words[-1] in _LEGAL_SUFFIXES:
        words.pop()
    return " ".join(words)


# The length bound comes before normalizing, which may turn the text into None (an empty string clears a domain).
Domain = Annotated[str, Field(max_length=253), AfterValidator(normalize_domain)]


class Organization(BaseModel):
    id: UUID = Field(description="Organization id.")
    name: str = Field(description="Organization name.")
    domain: str | None = Field(description="Web domain, normalized (e.g. acme.com).")
    address: str | None = Field(description="Postal address.")
    owner_id: UUID = Field(description="Owner (a user id).")
    visibility: Visibility = Field(description="Who sees it: owner, team or company.")
    version: int = Field(description="Increments on every change (optimistic concurrency).")
    created_at: datetime = Field(description="When it was created.")
    updated_at: datetime = Field(description="When it last changed.")


class OrganizationCreate(OwnedInput):
    multiline_fields = frozenset({"address"})

    name: str = Field(min_length=1, max_length=300, description="Organization name.")
    domain: Domain | None = Field(None, description="Web domain or URL (normalized to a domain).")
    address: str | None = Field(None, max_length=1000, description="Postal address.")



class OrganizationUpdate(Input):
    multiline_fields = frozenset({"address"})

    name: str | None = Field(None, min_length=1, max_length=300, description="New name.")
    domain: Domain | None = Field(None, description="New domain; empty string clears it.")
    address: str | None = Field(None, max_length=1000, description="New address.")
    owner_id: UUID | None = Field(None, description="New owner.")
    visibility: Visibility | None = Field(None, description="New visibility.")



class OrganizationFilter(RecordFilter):
    pass


class Person(BaseModel):
    id: UUID = Field(description="Person id.")
    name: str = Field(description="Full name.")
    first_name: str = Field(description="First name.")
    last_name: str = Field(description="Last name.")
    emails: list[str] = Field(description="Email addresses, lowercase; the first is the primary one.")
    phones: list[str] = Field(description="Phone numbers; the first is the primary one.")
    job_title: str | None = Field(description="Job title.")
    organization_id: UUID | None = Field(description="The organization the person works for.")
    owner_id: UUID = Field(description="Owner (a user id).")
    visibility: Visibility = Field(description="Who sees it: owner, team or company.")
    version: int = Field(description="Increments on every change (optimistic concurrency).")
    created_at: datetime = Field(description="When it was created.")
    updated_at: datetime = Field(description="When it last changed.")


def normalize_emails(values: list[str]) -> list[str]:
    seen: list[str] = []
    for value in values:
        email = normalize_email(value)
        if email not in seen:
            seen.append(email)
    return seen


def check_phones(values: list[str]) -> list[str]:
    phones = [v.strip() for v in values if v.strip()]
    for phone in phones:
        if not re.fullmatch(r"\+?[0-9 ().\-/]{3,40}", phone):
            raise ValueError(f"{phone!r} is not a phone number")
    return phones


Emails = Annotated[list[str], AfterValidator(normalize_emails)]
Phones = Annotated[list[str], AfterValidator(check_phones)]


class PersonCreate(OwnedInput):
    first_name: str = Field("", max_length=150, description="First name.")
    last_name: str = Field("", max_length=150, description="Last name.")
    emails: Emails = Field(default_factory=list, max_length=20, description="Email addresses.")
    phones: Phones = Field(default_factory=list, max_length=20, description="Phone numbers.")
    job_title: str | None = Field(None, max_length=200, description="Job title.")
    organization_id: UUID | None = Field(None, description="Their organization.")



class PersonUpdate(Input):
    first_name: str | None = Field(None, max_length=150, description="New first name.")
    last_name: str | None = Field(None, max_length=150, description="New last name.")
    emails: Emails | None = Field(None, max_length=20, description="Replaces all email addresses.")
    phones: Phones | None = Field(None, max_length=20, description="Replaces all phone numbers.")
    job_title: str | None = Field(None, max_length=200, description="New job title.")
    organization_id: UUID | None = Field(None, description="New organization.")
    owner_id: UUID | None = Field(None, description="New owner.")
    visibility: Visibility | None = Field(None, description="New visibility.")



class PersonFilter(RecordFilter):
    organization_id: UUID | None = Field(None, description="Only persons of this organization.")
