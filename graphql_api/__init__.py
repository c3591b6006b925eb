"""The GraphQL gateway (Strawberry on FastAPI) over the service layer."""
