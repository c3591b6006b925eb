"""The GraphQL gateway (Strawberry on Starlette) over the service layer."""
