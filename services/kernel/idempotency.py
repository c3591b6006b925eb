"""Idempotency keys for create operations: the same key from the same user returns the first result.

`claim` inserts the key before the work; a concurrent twin blocks on that row until the first commits, then
finds it. The key row and the created record commit or roll back together.
"""

from __future__ import annotations

from uuid import UUID

from services.kernel.errors import Conflict
from services.kernel.inputs import text_argument
from services.kernel.uow import UnitOfWork

MAX_KEY_LENGTH = 200  # the database's rule for idempotency_keys.key


def _key(key: str) -> str:
    return text_argument(key, "idempotency_key", min_length=1, max_length=MAX_KEY_LENGTH)


async def claim(uow: UnitOfWork, key: str | None, operation: str) -> UUID | None:
    """None when the caller should do the work; otherwise the id of what the first call created."""
    if key is None:
        return None
    key = _key(key)
    inserted = await uow.one(
        "insert into public.idempotency_keys (user_id, key, operation) values (auth.uid(), %s, %s)"
        " on conflict (user_id, key) do nothing returning key",
        [key, operation],
    )
    if inserted is not None:
        return None
    existing = await uow.one(
        "select operation, entity_id from public.idempotency_keys where user_id = auth.uid() and key = %s",
        [key],
    )
    if existing is None or existing["entity_id"] is None:
        raise Conflict(f"idempotency key {key!r} is in use by a request that has not finished")
    if existing["operation"] != operation:
        raise Conflict(f"idempotency key {key!r} was used for {existing['operation']}, not {operation}")
    return existing["entity_id"]


async def complete(uow: UnitOfWork, key: str | None, entity_id: UUID) -> None:
    if key is None:
        return
    key = _key(key)
    await uow.execute(
        "update public.idempotency_keys set entity_id = %s where user_id = auth.uid() and key = %s",
        [entity_id, key],
    )
