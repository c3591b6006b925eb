"""The schema and its protections: depth, tokens, aliases and cost are checked before any resolver runs."""

from __future__ import annotations

from dataclasses import dataclass

import strawberry
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)

from graphql_api.cost import cost_limit_rule
from graphql_api.errors import DomainErrors
from graphql_api.mutations import Mutation
from graphql_api.queries import Query


@dataclass(frozen=True)
class Limits:
    """Defaults sized for the web app's heaviest screens with room to spare; every one is configurable."""

    max_depth: int = 10
    max_tokens: int = 2000
    max_aliases: int = 15
    max_cost: int = 10_000
    max_body_bytes: int = 100_000


def build_schema(limits: Limits | None = None, *, introspection: bool = True) -> strawberry.Schema:
    limits = limits or Limits()
    extensions: list = [
        DomainErrors,
        lambda: ParserCache(maxsize=256),
        lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
        lambda: QueryDepthLimiter(max_depth=limits.max_depth),
        lambda: MaxAliasesLimiter(max_alias_count=limits.max_aliases),
        lambda: AddValidationRules([cost_limit_rule(limits.max_cost)]),
        lambda: ValidationCache(maxsize=256),
    ]
    if not introspection:
        extensions.append(lambda: AddValidationRules([NoSchemaIntrospectionCustomRule]))
    return strawberry.Schema(query=Query, mutation=Mutation, extensions=extensions)


def sdl() -> str:
    """The schema in SDL, as committed in graphql_api/schema.graphql."""
    return str(build_schema()) + "\n"
