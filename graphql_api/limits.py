"""The document limits, as validation rules (checked before any resolver or SQL runs): depth, aliases, and a
query cost that counts list sizes. A fragment is measured once, however often it is spread.

Cost: every field costs 1. A field taking `first` multiplies the cost of what it selects by `first` (100, the cap, when
it comes from a variable; the argument's default when it is left out); a list field without `first` (a record's
notes, a pipeline's stages) by LIST_FACTOR; a connection's `edges` adds no factor of its own, its `first` already
counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    get_named_type,
)

LIST_FACTOR = 10
VARIABLE_FIRST = 100


def _is_list(type_: Any) -> bool:
    while isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    return isinstance(type_, GraphQLList)


def _first(node: FieldNode, definition: GraphQLField) -> int | None:
    for argument in node.arguments or ():
        if argument.name.value == "first":
            value = argument.value
            return int(value.value) if isinstance(value, IntValueNode) else VARIABLE_FIRST
    default = definition.args["first"].default_value if "first" in definition.args else None
    return default if isinstance(default, int) else None


def cost_limit_rule(max_cost: int) -> type[ValidationRule]:
    class CostLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self._fragments = FragmentMemo(context, self._fragment_cost)

        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            root = self.context.schema.get_root_type(node.operation)
            if root is None:
                return
            cost = self._selection_cost(node.selection_set, root)
            if cost > max_cost:
                self.report_error(
                    GraphQLError(
                        f"query cost {cost} exceeds the limit of {max_cost}; ask for smaller pages or fewer fields",
                        node,
                        extensions={"code": "QUERY_TOO_COSTLY", "cost": cost, "limit": max_cost},
                    )
                )

        def _selection_cost(self, selection_set: SelectionSetNode | None, parent: Any) -> int:
            if selection_set is None or not isinstance(parent, GraphQLObjectType):
                return 0
            total = 0
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    total += self._field_cost(selection, parent)
                elif isinstance(selection, InlineFragmentNode):
                    condition = (
                        self.context.schema.get_type(selection.type_condition.name.value)
                        if selection.type_condition
                        else parent
                    )
                    total += self._selection_cost(selection.selection_set, condition)
                elif isinstance(selection, FragmentSpreadNode):
                    total += self._fragments[selection.name.value]
            return total

        def _fragment_cost(self, fragment: FragmentDefinitionNode) -> int:
            condition = self.context.schema.get_type(fragment.type_condition.name.value)
            return self._selection_cost(fragment.selection_set, condition)

        def _field_cost(self, node: FieldNode, parent: GraphQLObjectType) -> int:
            definition = parent.fields.get(node.name.value)
            if definition is None:
                return 1
            children = self._selection_cost(node.selection_set, get_named_type(definition.type))
            first = _first(node, definition)
            if first is not None:
                factor = max(first, 1)
            elif _is_list(definition.type) and node.name.value != "edges":
                factor = LIST_FACTOR
            else:
                factor = 1
            return 1 + factor * children

    return CostLimit


def depth_limit_rule(max_depth: int) -> type[ValidationRule]:
    """Refuse an operation nested deeper than `max_depth`: a field with a selection set is one level (so
    `{ me { user { email } } }` has depth 2); introspection fields do not count. One error per operation, with
    its depth, and no crash on unknown or cyclic fragments (the standard rules report those)."""

    class DepthLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self._fragments = FragmentMemo(context, lambda f: self._depth(f.selection_set))

        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            depth = self._depth(node.selection_set)
            if depth > max_depth:
                self.report_error(
                    GraphQLError(
                        f"query depth {depth} exceeds the limit of {max_depth}; ask for fewer nested fields",
                        node,
                        extensions={"code": "QUERY_TOO_DEEP", "depth": depth, "limit": max_depth},
                    )
                )

        def _depth(self, selection_set: SelectionSetNode | None) -> int:
            deepest = 0
            for selection in selection_set.selections if selection_set else ():
                if isinstance(selection, FieldNode):
                    if selection.selection_set and not selection.name.value.startswith("__"):
                        deepest = max(deepest, 1 + self._depth(selection.selection_set))
                elif isinstance(selection, InlineFragmentNode):
                    deepest = max(deepest, self._depth(selection.selection_set))
                elif isinstance(selection, FragmentSpreadNode):
                    deepest = max(deepest, self._fragments[selection.name.value])
            return deepest

    return DepthLimit


def alias_limit_rule(max_aliases: int) -> type[ValidationRule]:
    """Refuse a document with more than `max_aliases` aliased fields, a fragment's counted at each spread:
    aliases are how one request asks for the same expensive field many times."""

    class AliasLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self._fragments = FragmentMemo(context, lambda f: self._aliases(f.selection_set))

        def enter_document(self, node: DocumentNode, *_: Any) -> None:
            aliases = sum(
                self._aliases(d.selection_set) for d in node.definitions if isinstance(d, OperationDefinitionNode)
            )
            if aliases > max_aliases:
                self.report_error(
                    GraphQLError(
                        f"query has {aliases} aliases, more than the limit of {max_aliases}; ask for each field once",
                        extensions={"code": "TOO_MANY_ALIASES", "aliases": aliases, "limit": max_aliases},
                    )
                )

        def _aliases(self, selection_set: SelectionSetNode | None) -> int:
            count = 0
            for selection in selection_set.selections if selection_set else ():
                if isinstance(selection, FieldNode):
                    count += (selection.alias is not None) + self._aliases(selection.selection_set)
                elif isinstance(selection, InlineFragmentNode):
                    count += self._aliases(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    count += self._fragments[selection.name.value]
            return count

    return AliasLimit


class FragmentMemo:
    """A measure of each fragment, computed once: it is the same wherever the fragment is spread. Expanding
    fragments at every spread (as Strawberry's depth and alias limiters do) takes exponential time on fragments
    that each spread the next one twice: a few hundred tokens kept a worker busy for hours."""

    def __init__(self, context: ValidationContext, measure: Callable[[FragmentDefinitionNode], int]) -> None:
        self._context = context
        self._measure = measure
        self._known: dict[str, int] = {}

    def __getitem__(self, name: str) -> int:
        if name not in self._known:
            self._known[name] = 0  # while measuring it: a cycle adds nothing (NoFragmentCycles reports it)
            fragment = self._context.get_fragment(name)  # None if unknown (KnownFragmentNames reports it)
            if fragment is not None:
                self._known[name] = self._measure(fragment)
        return self._known[name]
