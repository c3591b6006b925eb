"""Root mutation fields: one service operation each, in a transaction of its own."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import strawberry
from strawberry.experimental.pydantic import input as input_from_model

from graphql_api.types import DealType
from services.deals import service as deals
from services.deals.schemas import DealCreate, DealUpdate


@input_from_model(model=DealCreate, all_fields=True, name="DealCreateInput")
class DealCreateInput:
    pass


@input_from_model(model=DealUpdate, all_fields=True, name="DealUpdateInput")
class DealUpdateInput:
    pass


IdempotencyKey = Annotated[
    str | None,
    strawberry.argument(description="Repeat a create with the same key to get the first result back, not a twin."),
]
ExpectedVersion = Annotated[
    int | None, strawberry.argument(description="Refuse with CONFLICT if the record's version is no longer this.")
]


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Create a deal (default: the first pipeline's first stage, owned by you).")
    async def create_deal(
        self, info: strawberry.Info, input: DealCreateInput,
        idempotency_key: IdempotencyKey = None,
    ) -> DealType:
        async with info.context.write() as uow:
            deal = await deals.create(uow, input.to_pydantic(), idempotency_key=idempotency_key)
        return DealType.from_pydantic(deal)

    @strawberry.mutation(description="Change a deal's fields (stage and status have their own mutations).")
    async def update_deal(
        self, info: strawberry.Info, id: UUID, input: DealUpdateInput,
        expected_version: ExpectedVersion = None,
    ) -> DealType:
        async with info.context.write() as uow:
            deal = await deals.update(uow, id, input.to_pydantic(), expected_version=expected_version)
        return DealType.from_pydantic(deal)
