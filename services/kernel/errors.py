"""The one error taxonomy of the service layer. Front ends map these in one place each; no HTTP codes here."""

from __future__ import annotations

from uuid import UUID


class ServiceError(Exception):
    """Base of every error a service raises on purpose. `message` is safe to show to the caller."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthenticated(ServiceError):
    """No valid identity: missing, malformed, expired or untrusted token."""

    code = "UNAUTHENTICATED"


class Forbidden(ServiceError):
    """The caller is known but lacks the permission for this operation."""

    code = "FORBIDDEN"

    def __init__(self, message: str, *, permission: str | None = None) -> None:
        super().__init__(message)
        self.permission = permission


class NotFound(ServiceError):
    """No such record, or the caller may not see it (the two are never told apart)."""

    code = "NOT_FOUND"

    def __init__(self, entity: str, entity_id: object) -> None:
        super().__init__(f"{entity} {entity_id} not found")
        self.entity = entity
        self.entity_id = entity_id


class Invalid(ServiceError):
    """Bad input; `field` names the offending input field when there is one."""

    code = "INVALID"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Conflict(ServiceError):
    """The request clashes with the current state (stale version, duplicate, wrong status)."""

    code = "CONFLICT"


class DuplicateFound(Conflict):
    """Creating would make a twin of a visible record; `existing_id` is that record."""

    def __init__(self, entity: str, existing_id: UUID, reason: str) -> None:
        super().__init__(
            f"{entity} {existing_id} already exists ({reason}); use it, or pass force=true to create another"
        )
        self.entity = entity
        self.existing_id = existing_id


class Unavailable(ServiceError):
    """A dependency is down or overloaded; the same call may succeed later."""

    code = "UNAVAILABLE"


class RateLimited(ServiceError):
    """The caller used up their budget of requests for now; `retry_after` says in how many seconds to try again."""

    code = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
