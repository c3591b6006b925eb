"""The schema and its protections: depth, tokens, aliases and cost are checked before any resolver runs."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, ParserCache, ValidationCache

from graphql_api.errors import DomainErrors
from graphql_api.execution import Execution, resolve_directly
from graphql_api.limits import alias_limit_rule, cost_limit_rule, depth_limit_rule
from graphql_api.mutations import Mutation
from graphql_api.options import Limits
from graphql_api.queries import Query


def build_schema(limits: Limits | None = None, *, introspection: bool = True) -> strawberry.Schema:
    limits = limits or Limits()
    # The rule classes are made once per schema, not per request: ValidationCache keys on them, so rules made
    # afresh for every request (as QueryDepthLimiter and MaxAliasesLimiter factories do) would never hit.
    # Depth and aliases are our own rules rather than Strawberry's: theirs give no error code (nor the depth
    # found), take exponential time on nested fragment spreads, and its depth rule crashed on an unknown
    # fragment, answering "'Name'" instead of a validation error.
    rules: list = [
        depth_limit_rule(limits.max_depth),
        alias_limit_rule(limits.max_aliases),
        cost_limit_rule(limits.max_cost),
    ]
    if not introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    extensions: list = [
        lambda: DomainErrors(hide_suggestions=not introspection),
        lambda: ParserCache(maxsize=256),
        lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
        lambda: AddValidationRules(rules),
        lambda: ValidationCache(maxsize=256),
    ]
    schema = _Schema(query=Query, mutation=Mutation, extensions=extensions, execution_context_class=Execution)
    resolve_directly(schema)
    return schema


class _Schema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        """Strawberry logs every error at ERROR level with its traceback: each NOT_FOUND, FORBIDDEN or typo in a
        query. DomainErrors logs the unexpected ones, with the reference the caller was given; the rest are
        answers, not incidents."""


def sdl() -> str:
    """The schema in SDL, as committed in graphql_api/schema.graphql."""
    return str(build_schema()) + "\n"
