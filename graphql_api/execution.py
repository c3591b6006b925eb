"""How the gateway executes an operation: graphql-core's executor, with the fields of our record types completed
along a plan made once per selection.

A page of 50 deals with four relations is about 700 fields in 300 objects. graphql-core spends on each field a
resolver call through Strawberry's wrapper, a resolve info, a path, a completion that dispatches on the field's type
and an awaitable check, whatever the field is. Here:

- `resolve_directly` gives the fields that read an attribute, and the relations (`graphql_api.types.relation`), plain
  resolvers: no Strawberry wrapper, Info object, argument conversion or extension chain per field (no such field has
  arguments, permission classes or field extensions).
- `Execution.execute_fields` completes an object's fields along a `_Step` list made once per object type and
  selection in the operation: a scalar read from an attribute is read and coerced in place; an object or a list of
  objects read from an attribute or a relation read ahead (`types.prefetch`) has its fields completed directly.
  Anything else, and any value the plan does not take as it is (a null for a non-null field, a coercion that fails,
  a relation not read ahead yet, an error), goes graphql-core's general way, which also reports errors where they
  belong. The answer is the same either way: the general way is the reference the tests compare against.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from types import GeneratorType
from typing import Any

import strawberry
from graphql import (
    GraphQLEnumType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    Undefined,
)
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.pyutils import Path, gather_with_cancel
from strawberry.execution import optimized_is_awaitable
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter

from graphql_api.types import RELATIONS, Relation, related


def resolve_directly(schema: strawberry.Schema) -> None:
    """Give graphql-core plain resolvers where Strawberry's wrapper adds nothing: a field that reads an attribute
    reads it, and a relation goes straight to its loaders. The types are never in a union or interface, so no
    `is_type_of` check per object is needed either."""
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
                graphql_field.resolve = _Related(found)
            elif field_definition.base_resolver is None and not field_definition.extensions and not graphql_field.args:
                graphql_field.resolve = _Attribute(field_definition.python_name)


class _Attribute:
    """A plain field's resolver: the source's attribute."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, source: Any, _info: GraphQLResolveInfo) -> Any:
        return getattr(source, self.name)


class _Related:
    """A relation's resolver (see `graphql_api.types.related`)."""

    __slots__ = ("relation",)

    def __init__(self, relation: Relation) -> None:
        self.relation = relation

    def __call__(self, source: Any, info: GraphQLResolveInfo) -> Any:
        return related(self.relation, source, info.context)


class _Kind(Enum):
    SCALAR = "a scalar or enum read from an attribute"
    OBJECT = "an object, read from an attribute or a relation"
    LIST = "a list of objects, read from an attribute or a relation"
    GENERAL = "anything else: graphql-core's general way"


@dataclass(frozen=True, slots=True)
class _Step:
    """How to complete one field (by its response name) of an object."""

    kind: _Kind
    name: str
    fields: FieldDetailsList
    return_type: Any = None
    attribute: str = ""  # read from this attribute, unless
    relation: Relation | None = None  # read through this relation
    coerce: Callable[[Any], Any] | None = None  # a scalar's output coercion
    non_null: bool = False
    object_type: GraphQLObjectType | None = None  # the object's type, or each item's in a list
    item_type: Any = None  # a list's item type (non-null or not)


def _plan(parent_type: GraphQLObjectType, grouped_field_set: GroupedFieldSet) -> tuple[_Step, ...] | None:
    """The steps completing `grouped_field_set` on `parent_type`; None when no field can take a short way (root
    types, whose fields all have resolvers of their own)."""
    steps = tuple(_step(parent_type, name, fields) for name, fields in grouped_field_set.items())
    return steps if any(step.kind is not _Kind.GENERAL for step in steps) else None


def _step(parent_type: GraphQLObjectType, name: str, fields: FieldDetailsList) -> _Step:
    general = _Step(_Kind.GENERAL, name, fields)
    field = parent_type.fields.get(fields[0].node.name.value)
    # a field with arguments or directives (@stream, @defer, or @include/@skip on any of its nodes) goes the general
    # way, as does a field whose resolver is not one of ours
    if field is None or field.args or any(f.node.arguments or f.node.directives for f in fields):
        return general
    resolve = field.resolve
    if type(resolve) is _Attribute:
        read: dict[str, Any] = {"attribute": resolve.name}
    elif type(resolve) is _Related:
        read = {"relation": resolve.relation}
    else:
        return general
    non_null = isinstance(field.type, GraphQLNonNull)
    inner = field.type.of_type if non_null else field.type
    if isinstance(inner, GraphQLScalarType | GraphQLEnumType):
        if type(resolve) is not _Attribute:
            return general
        coerce = getattr(inner, "coerce_output_value", None) or getattr(inner, "serialize", None)
        return _Step(_Kind.SCALAR, name, fields, field.type, coerce=coerce, non_null=non_null, **read)
    if isinstance(inner, GraphQLObjectType) and inner.is_type_of is None:
        return _Step(_Kind.OBJECT, name, fields, field.type, non_null=non_null, object_type=inner, **read)
    if isinstance(inner, GraphQLList):
        item = inner.of_type
        item_object = item.of_type if isinstance(item, GraphQLNonNull) else item
        if isinstance(item_object, GraphQLObjectType) and item_object.is_type_of is None:
            return _Step(_Kind.LIST, name, fields, field.type, non_null=non_null, object_type=item_object,
                         item_type=item, **read)
    return general


class Execution(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context, completing our record types' fields along their plans (see the module), and
    asking whether a value is awaitable once per type rather than once per value: for a pydantic model that check
    probes for `__await__` through the model's `__getattr__`, which raises and catches an AttributeError each
    time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.is_awaitable = _is_awaitable  # type: ignore[method-assign]
        # per object type and selection (graphql-core memoizes a selection's fields per execution, by identity;
        # the selection is kept alive beside its plan so that its id is not reused)
        self._plans: dict[tuple[GraphQLObjectType, int], tuple[GroupedFieldSet, tuple[_Step, ...] | None]] = {}
        if isinstance(finished := getattr(self.context_value, "finished", None), list):
            finished.append(self._release)

    def _release(self) -> None:
        """graphql-core's executor refers to itself (its async helpers are its own bound methods) and to the
        request's context: cut both once the request has ended."""
        self.async_helpers = None  # type: ignore[assignment]
        self.context_value = None

    def execute_fields(self, parent_type: GraphQLObjectType, source_value: Any, path: Path | None,
                       grouped_field_set: GroupedFieldSet, position_context: Any) -> Any:
        key = (parent_type, id(grouped_field_set))
        planned = self._plans.get(key)
        if planned is None:
            planned = self._plans[key] = (grouped_field_set, _plan(parent_type, grouped_field_set))
        steps = planned[1]
        if steps is None:
            return super().execute_fields(parent_type, source_value, path, grouped_field_set, position_context)
        general = super().execute_field
        is_awaitable = self.is_awaitable
        results: dict[str, Any] = {}
        pending: list[str] = []
        try:
            for step in steps:
                kind = step.kind
                if kind is _Kind.SCALAR:
                    try:
                        value = getattr(source_value, step.attribute)
                        if value is None:
                            if not step.non_null:
                                results[step.name] = None
                                continue
                        elif (coerced := step.coerce(value)) is not None and coerced is not Undefined:  # type: ignore[misc]
                            results[step.name] = coerced
                            continue
                    except Exception:  # the general way raises it where it belongs
                        pass
                    result = general(parent_type, source_value, step.fields, Path(path, step.name, parent_type.name),
                                     position_context)
                elif kind is _Kind.GENERAL:
                    result = general(parent_type, source_value, step.fields, Path(path, step.name, parent_type.name),
                                     position_context)
                else:
                    result = self._complete_composite(step, parent_type, source_value,
                                                      Path(path, step.name, parent_type.name), position_context)
                if result is not Undefined:
                    results[step.name] = result
                    if is_awaitable(result):
                        pending.append(step.name)
        except Exception:
            if pending:  # settled all the same: they may fail too
                self.settle_in_background([results[name] for name in pending])
            raise
        if not pending:
            return results
        return _gathered(results, pending)

    def _complete_composite(self, step: _Step, parent_type: GraphQLObjectType, source: Any, path: Path,
                            position_context: Any) -> Any:
        """An object or a list of objects, completed directly when it is there as it is; otherwise the general
        way (whose resolvers read it again: an attribute, or the same loader's cached result)."""
        try:
            value = (getattr(source, step.attribute) if step.relation is None
                     else related(step.relation, source, self.context_value))
        except Exception:
            value = Undefined
        if value is None and not step.non_null:
            return None
        object_type = step.object_type
        assert object_type is not None
        if value is None or value is Undefined or self.is_awaitable(value) or isinstance(value, Exception) or (
                step.kind is _Kind.LIST and not self._plain_items(value, step)):
            return super().execute_field(parent_type, source, step.fields, path, position_context)
        grouped_field_set, defers, _ = self.collect_subfields(object_type, step.fields)
        if defers or position_context is not None:  # incremental delivery (@defer) plans its own way
            return super().execute_field(parent_type, source, step.fields, path, position_context)
        try:
            if step.kind is _Kind.OBJECT:
                completed = self.execute_fields(object_type, value, path, grouped_field_set, position_context)
            else:
                completed = self._complete_items(step, value, path, grouped_field_set, position_context)
        except Exception as error:
            self.handle_field_error(error, step.return_type, step.fields, path)  # raises for a non-null field
            return None
        if self.is_awaitable(completed):
            return self._settled(completed, step.return_type, step.fields, path)
        return completed

    def _plain_items(self, value: Any, step: _Step) -> bool:
        """Whether a list's items can be completed directly: a list or tuple of values, none null or awaitable."""
        if not isinstance(value, list | tuple):
            return False
        is_awaitable = self.is_awaitable
        return not any(item is None or is_awaitable(item) for item in value)

    def _complete_items(self, step: _Step, items: list[Any] | tuple[Any, ...], path: Path,
                        grouped_field_set: GroupedFieldSet, position_context: Any) -> Any:
        object_type = step.object_type
        assert object_type is not None
        is_awaitable = self.is_awaitable
        completed: list[Any] = []
        pending: list[int] = []
        try:
            for index, item in enumerate(items):
                item_path = Path(path, index, None)
                try:
                    result = self.execute_fields(object_type, item, item_path, grouped_field_set, position_context)
                except Exception as error:
                    self.handle_field_error(error, step.item_type, step.fields, item_path)  # raises if non-null
                    result = None
                if is_awaitable(result):
                    result = self._settled(result, step.item_type, step.fields, item_path)
                    pending.append(index)
                completed.append(result)
        except Exception:
            if pending:
                self.settle_in_background([completed[index] for index in pending])
            raise
        if not pending:
            return completed
        return _gathered(completed, pending)

    async def _settled(self, completing: Awaitable[Any], return_type: Any, fields: FieldDetailsList,
                       path: Path) -> Any:
        try:
            return await completing
        except Exception as error:
            self.handle_field_error(error, return_type, fields, path)
            return None


async def _gathered(results: Any, keys: list[Any]) -> Any:
    """`results` (a dict or a list) once the awaitables at `keys` have given their values."""
    if len(keys) == 1:
        results[keys[0]] = await results[keys[0]]
    else:
        for key, value in zip(keys, await gather_with_cancel(*(results[key] for key in keys)), strict=True):
            results[key] = value
    return results


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
