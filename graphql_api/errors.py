"""The one place where errors become GraphQL errors: domain errors get `extensions.code` (and the offending
field for bad input); anything unexpected is masked as "Unexpected error" with a reference id that is also
logged with the full traceback.

Messages are worded as a GraphQL client reads the schema: the service layer's snake_case field names become the
schema's camelCase ones ("pass pipelineId"), and permissions are named as `me.permissions` lists them
(`DEALS_WRITE`, not the service layer's `deals:write`), in the message and in `extensions.permission`."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from graphql import (
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSyntaxError,
)
from pydantic import ValidationError
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from services.kernel.errors import (
    Conflict,
    DuplicateFound,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from services.kernel.permissions import Perm

log = logging.getLogger("pipecd.graphql")

CODES: dict[type[ServiceError], str] = {
    Unauthenticated: "UNAUTHENTICATED",
    Forbidden: "FORBIDDEN",
    NotFound: "NOT_FOUND",
    Invalid: "BAD_USER_INPUT",
    Conflict: "CONFLICT",
    Unavailable: "UNAVAILABLE",
    RateLimited: "RATE_LIMITED",
}


def _code(error: ServiceError) -> str:
    for kind, code in CODES.items():
        if isinstance(error, kind):
            return code
    return "INTERNAL_SERVER_ERROR"


def camel(name: str) -> str:
    """A service-layer snake_case name as the schema spells it (`pipeline_id` → `pipelineId`)."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def graphql_permission(value: str) -> str:
    """A permission as GraphQL names it: its `Perm` enum name (DEALS_WRITE for deals:write)."""
    try:
        return Perm(value).name
    except ValueError:
        return value


_SNAKE_WORD = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])([A-Z])")
_PERMISSION_WORD = re.compile(r"\b[a-z]+:[a-z]+\b")


@lru_cache(maxsize=8)
def field_names(schema: GraphQLSchema) -> dict[str, str]:
    """The schema's camelCase field and argument names, keyed by their snake_case spelling in the services."""
    names: set[str] = set()
    for graphql_type in schema.type_map.values():
        if graphql_type.name.startswith("__"):  # introspection's own
            continue
        if isinstance(graphql_type, GraphQLObjectType | GraphQLInterfaceType):
            for name, graphql_field in graphql_type.fields.items():
                names.add(name)
                names.update(graphql_field.args)
        elif isinstance(graphql_type, GraphQLInputObjectType):
            names.update(graphql_type.fields)
    return {_CAMEL_HUMP.sub(r"_\1", name).lower(): name for name in names if _CAMEL_HUMP.search(name)}


def graphql_words(message: str, fields: dict[str, str]) -> str:
    """`message` in the schema's words: snake_case words that are field names (in `fields`, from `field_names`)
    in camelCase, permissions by their enum name. Other words (a constraint's name, say) stay as they are."""
    message = _SNAKE_WORD.sub(lambda word: fields.get(word[0], word[0]), message)
    return _PERMISSION_WORD.sub(lambda word: graphql_permission(word[0]), message)


def extensions_for(error: Exception) -> dict[str, Any] | None:
    """The extensions for a deliberate error; None for anything unexpected."""
    if isinstance(error, ServiceError):
        extensions: dict[str, Any] = {"code": _code(error)}
        if isinstance(error, Invalid) and error.field:
            extensions["field"] = camel(error.field)
        if isinstance(error, DuplicateFound):
            extensions["existingId"] = str(error.existing_id)
        if isinstance(error, Forbidden) and error.permission:
            extensions["permission"] = graphql_permission(error.permission)
        if isinstance(error, RateLimited):
            extensions["retryAfter"] = error.retry_after
        return extensions
    if isinstance(error, ValidationError):
        problems = error.errors()
        first = problems[0] if problems else {}
        location = [str(p) for p in first.get("loc", ()) if not isinstance(p, int)]
        return {
            "code": "BAD_USER_INPUT",
            "field": camel(location[-1]) if location else None,
            "problems": [
                {"field": ".".join(camel(str(p)) for p in e.get("loc", ())), "message": e.get("msg", "")}
                for e in problems
            ],
        }
    return None


def _validation_message(extensions: dict[str, Any]) -> str:
    """The problems of a pydantic ValidationError, one `field: message` each (their fields already camelCase)."""
    problems = extensions.get("problems") or [{"field": "input", "message": "invalid"}]
    return "; ".join(f"{p['field']}: {p['message']}" for p in problems)


# graphql-core stops parsing at the token limit with a syntax error; the document may well be valid.
_TOKEN_LIMIT = re.compile(r"Document contains more than (\d+) tokens")

# graphql-core's " Did you mean 'notes'?" endings: with introspection off they would still spell out the schema.
_SUGGESTION = re.compile(r" Did you mean .*\?$")

# Raised inside the operation on purpose: Strawberry answers them as HTTP 400s.
_HTTP_REFUSALS = (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError)


def _with_code(error: GraphQLError, *, hide_suggestions: bool = False, code: str | None = None) -> GraphQLError:
    """Parse, validation and variable errors are already safe and precise; they only need a code (and, in
    production, no suggestions of names from the schema)."""
    if hide_suggestions:
        error.message = _SUGGESTION.sub("", error.message)
    if isinstance(error, GraphQLSyntaxError) and (too_long := _TOKEN_LIMIT.search(error.message)):
        limit = int(too_long[1])
        error.message = f"query exceeds the limit of {limit} tokens; ask for fewer fields"
        error.extensions = {"code": "QUERY_TOO_LARGE", "limit": limit}
        return error
    if code is None:
        code = "GRAPHQL_PARSE_FAILED" if isinstance(error, GraphQLSyntaxError) else "GRAPHQL_VALIDATION_FAILED"
    error.extensions = {"code": code, **(error.extensions or {})}
    return error


class DomainErrors(SchemaExtension):
    def __init__(self, *, hide_suggestions: bool = False, execution_context: Any = None) -> None:
        super().__init__(execution_context=execution_context)
        self.hide_suggestions = hide_suggestions

    def on_operation(self) -> Iterator[None]:
        try:
            yield
        except GraphQLError as error:  # a parse error (e.g. too many tokens) raised by ParserCache's parse hook
            _with_code(error, hide_suggestions=self.hide_suggestions)
            raise
        except _HTTP_REFUSALS:
            raise
        except Exception as error:
            # Outside a resolver (a validation rule, an extension): Strawberry would answer str(error) as is.
            raise _unexpected(error, nodes=None, path=None) from error
        result = self.execution_context.result
        if result is None or not getattr(result, "errors", None):
            return
        result.errors = [self._map(error) for error in result.errors]

    def _map(self, error: GraphQLError) -> GraphQLError:
        original = error.original_error
        if original is None:
            return _with_code(error, hide_suggestions=self.hide_suggestions)
        if isinstance(original, GraphQLError):
            # graphql-core's own, not a resolver's: a variable value that does not coerce to its type
            # ("Variable '$id' has invalid value: ..."). The caller's mistake, not ours to mask.
            return _with_code(error, hide_suggestions=self.hide_suggestions, code="BAD_USER_INPUT")
        extensions = extensions_for(original)
        if extensions is not None:
            fields = field_names(self.execution_context.schema._schema)
            for problem in extensions.get("problems", ()):
                problem["message"] = graphql_words(problem["message"], fields)
            message = original.message if isinstance(original, ServiceError) else _validation_message(extensions)
            return GraphQLError(graphql_words(message, fields), nodes=error.nodes, path=error.path,
                                extensions=extensions)
        return _unexpected(original, nodes=error.nodes, path=error.path)


def _unexpected(error: BaseException, *, nodes: Any, path: Any) -> GraphQLError:
    """The masked answer for an unexpected error; the reference finds the logged traceback."""
    reference = uuid.uuid4().hex[:12]
    log.error("unexpected error %s at %s", reference, path, exc_info=error)
    return GraphQLError(
        "Unexpected error", nodes=nodes, path=path, extensions={"code": "INTERNAL_SERVER_ERROR", "reference": reference}
    )
