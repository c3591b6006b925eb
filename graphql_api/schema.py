"""The schema and its protections: depth, tokens, aliases and cost are checked before any resolver runs."""

from __future__ import annotations

from dataclasses import dataclass
from types import GeneratorType
from typing import Any

import strawberry
from graphql import (
    GraphQLEnumType,
    GraphQLError,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    Undefined,
)
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.execution import optimized_is_awaitable
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, ParserCache, ValidationCache
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter

from graphql_api.errors import DomainErrors
from graphql_api.limits import alias_limit_rule, cost_limit_rule, depth_limit_rule
from graphql_api.mutations import Mutation
from graphql_api.queries import Query
from graphql_api.types import RELATIONS, Relation, related


@dataclass(frozen=True)
class Limits:
    """Defaults sized for the web app's heaviest screens with room to spare; every one is configurable
    (PIPECD_GRAPHQL_MAX_* settings). Batched requests (a JSON array of operations) are refused outright."""

    max_depth: int = 10
    max_tokens: int = 2000
    max_aliases: int = 15
    max_cost: int = 10_000
    max_body_bytes: int = 100_000


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
    schema = _Schema(query=Query, mutation=Mutation, extensions=extensions, execution_context_class=_Execution)
    _resolve_directly(schema)
    return schema


def _resolve_directly(schema: strawberry.Schema) -> None:
    """Give graphql-core plain resolvers where Strawberry's wrapper adds nothing: a field that reads an attribute
    reads it, and a relation (`graphql_api.types.relation`) goes straight to its loaders, without the wrapper's
    Info object, argument conversion and extension chain per field (no field here has arguments, permission
    classes or field extensions). The types are never in a union or interface, so no `is_type_of` check per
    object is needed either. A page of 50 records resolves several hundred fields: this is most of their cost."""
    for graphql_type in schema._schema.type_map.values():
        definition = (graphql_type.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
        if not isinstance(graphql_type, GraphQLObjectType) or definition is None or graphql_type.name in (
                "Query", "Mutation"):
            continue
        graphql_type.is_type_of = None
        relations = RELATIONS.get(getattr(definition.origin, "_pydantic_type", None), {})
        for name, graphql_field in graphql_type.fields.items():
            field_definition = next(f for f in definition.fields if f.graphql_name == name or
                                    schema.config.name_converter.get_graphql_name(f) == name)
            if (found := relations.get(name)) is not None:
                graphql_field.resolve = _relation_resolver(found)
            elif field_definition.base_resolver is None and not field_definition.extensions and not graphql_field.args:
                graphql_field.resolve = _Attribute(field_definition.python_name, graphql_field.type)


def _relation_resolver(relation: Relation) -> Any:
    def resolve(source: Any, info: GraphQLResolveInfo) -> Any:
        return related(relation, source, info.context)

    return resolve


class _Attribute:
    """A plain field's resolver: the source's attribute. For a scalar or enum field (`coerce` is then its output
    coercion) `_Execution.execute_field` reads it without the general machinery."""

    __slots__ = ("coerce", "name", "non_null")

    def __init__(self, name: str, graphql_type: Any) -> None:
        self.name = name
        self.non_null = isinstance(graphql_type, GraphQLNonNull)
        leaf = graphql_type.of_type if self.non_null else graphql_type
        self.coerce = (getattr(leaf, "coerce_output_value", None) or getattr(leaf, "serialize", None)
                       if isinstance(leaf, GraphQLScalarType | GraphQLEnumType) else None)

    def __call__(self, source: Any, _info: GraphQLResolveInfo) -> Any:
        return getattr(source, self.name)


class _Execution(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution, asking whether a value is awaitable once per type rather than once per value: the
    check runs for every field's value, and for a pydantic model it probes for `__await__` through the model's
    `__getattr__`, which raises and catches an AttributeError each time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.is_awaitable = _is_awaitable  # type: ignore[method-assign]
        if isinstance(finished := getattr(self.context_value, "finished", None), list):
            finished.append(self._release)

    def _release(self) -> None:
        """graphql-core's executor refers to itself (its async helpers are its own bound methods) and to the
        request's context: cut both once the request has ended."""
        self.async_helpers = None  # type: ignore[assignment]
        self.context_value = None

    def execute_field(self, parent_type: GraphQLObjectType, source: Any, field_details: Any, *args: Any,
                      **kwargs: Any) -> Any:
        """A scalar read from an attribute is read and coerced here, without the resolve info, path bookkeeping
        and awaitable checks graphql-core spends on every field; anything else (and any value the fast path does
        not take as it is: a null for a non-null field, a coercion that fails) goes the general way, which also
        reports errors where they belong."""
        field = parent_type.fields.get(field_details[0].node.name.value)
        resolve = field.resolve if field is not None else None
        if type(resolve) is _Attribute and resolve.coerce is not None:
            try:
                value = getattr(source, resolve.name)
                if value is None:
                    if not resolve.non_null:
                        return None
                elif (coerced := resolve.coerce(value)) is not None and coerced is not Undefined:
                    return coerced
            except Exception:  # the general path below raises it where it belongs
                pass
        return super().execute_field(parent_type, source, field_details, *args, **kwargs)


_NEVER_AWAITABLE: set[type] = set()


def _is_awaitable(value: Any) -> bool:
    kind = type(value)
    if kind in _NEVER_AWAITABLE:
        return False
    if optimized_is_awaitable(value):
        return True
    if kind is not GeneratorType and not hasattr(kind, "__await__"):  # a generator may be a coroutine; others
        _NEVER_AWAITABLE.add(kind)  # are awaitable by their type, which does not change
    return False


class _Schema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        """Strawberry logs every error at ERROR level with its traceback: each NOT_FOUND, FORBIDDEN or typo in a
        query. DomainErrors logs the unexpected ones, with the reference the caller was given; the rest are
        answers, not incidents."""


def sdl() -> str:
    """The schema in SDL, as committed in graphql_api/schema.graphql."""
    return str(build_schema()) + "\n"
