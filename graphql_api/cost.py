"""A query cost limit that counts list sizes, checked during validation (before any resolver or SQL runs).

Every field costs 1. A field taking `first` multiplies the cost of what it selects by `first` (100, the cap, when
it comes from a variable); a list field without `first` (a record's notes, a pipeline's stages) by
LIST_FACTOR; a connection's `edges` adds no factor of its own, its `first` already counted.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
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


def _first(node: FieldNode) -> int | None:
    for argument in node.arguments or ():
        if argument.name.value == "first":
            value = argument.value
            return int(value.value) if isinstance(value, IntValueNode) else VARIABLE_FIRST
    return None


def cost_limit_rule(max_cost: int) -> type[ValidationRule]:
    class CostLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)

        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            root = self.context.schema.get_root_type(node.operation)
            if root is None:
                return
            cost = self._selection_cost(node.selection_set, root, set())
            if cost > max_cost:
                self.report_error(
                    GraphQLError(
                        f"query cost {cost} exceeds the limit of {max_cost}; ask for smaller pages or fewer fields",
                        node,
                        extensions={"code": "QUERY_TOO_COSTLY", "cost": cost, "limit": max_cost},
                    )
                )

        def _selection_cost(self, selection_set: SelectionSetNode | None, parent: Any, seen: set[str]) -> int:
            if selection_set is None or not isinstance(parent, GraphQLObjectType):
                return 0
            total = 0
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    total += self._field_cost(selection, parent, seen)
                elif isinstance(selection, InlineFragmentNode):
                    condition = (
                        self.context.schema.get_type(selection.type_condition.name.value)
                        if selection.type_condition
                        else parent
                    )
                    total += self._selection_cost(selection.selection_set, condition, seen)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    fragment = self.context.get_fragment(name)
                    if fragment is None or name in seen:  # unknown or cyclic: other rules report it
                        continue
                    condition = self.context.schema.get_type(fragment.type_condition.name.value)
                    total += self._selection_cost(fragment.selection_set, condition, seen | {name})
            return total

        def _field_cost(self, node: FieldNode, parent: GraphQLObjectType, seen: set[str]) -> int:
            definition = parent.fields.get(node.name.value)
            if definition is None:
                return 1
            children = self._selection_cost(node.selection_set, get_named_type(definition.type), seen)
            first = _first(node)
            if first is not None:
                factor = max(first, 1)
            elif _is_list(definition.type) and node.name.value != "edges":
                factor = LIST_FACTOR
            else:
                factor = 1
            return 1 + factor * children

    return CostLimit
