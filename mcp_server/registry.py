"""How a CRM tool is declared once and bound to a server.

A tool is written as a service call: `async def create_deal(uow, data: DealCreate, idempotency_key: ...) -> Deal`.
Binding it gives the model a flat argument list (the fields of `data`, `filter` or `changes`, with the service
model's descriptions and constraints, plus the tool's own arguments), opens a unit of work as the calling user,
and turns every error into a tool error the model can act on. The tool's permission is the one its service function
declares (`@requires`), so `tools/list` shows a caller exactly the tools their role and scopes allow.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from uuid import UUID

from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ResourceLink, ToolAnnotations
from pydantic import BaseModel, Field, TypeAdapter
from pydantic_core import to_jsonable_python

from mcp_server.errors import tool_error
from mcp_server.links import links_for
from mcp_server.safety import ToolPage, clean, fit_page
from services.kernel.pagination import Page
from services.kernel.permissions import Perm, declared_permission
from services.kernel.principal import Principal
from services.kernel.uow import Database

PrincipalSource = Callable[[], Awaitable[Principal]]

# Parameters of these names whose type is a pydantic model are flattened into the tool's arguments. For `data`
# and `filter`, null and left out mean the same ("not given"); `changes` is a partial update, where a field left
# out stays as it is and an explicit null clears it (e.g. unlinks the person from a deal).
FLATTENED = ("data", "filter", "changes")
PATCH = "changes"

# The argument names the client actually sent with the current call (the SDK fills in every default).
sent_arguments: ContextVar[frozenset[str]] = ContextVar("sent_arguments", default=frozenset())
# Where the current call leaves links to the records its result is about.
result_links: ContextVar[list[ResourceLink] | None] = ContextVar("result_links", default=None)


@dataclass(frozen=True)
class CrmTool:
    fn: Callable[..., Awaitable[Any]]
    title: str
    permission: Perm | None
    annotations: ToolAnnotations

    @property
    def name(self) -> str:
        return self.fn.__name__

    @property
    def description(self) -> str:
        return inspect.cleandoc(self.fn.__doc__ or "")


def crm_tool(
    registry: list[CrmTool],
    *,
    title: str,
    calls: Callable[..., Any],
    read_only: bool = False,
    destructive: bool = False,
    idempotent: bool = False,
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Register a tool; `calls` is the service function it wraps, whose declared permission gates the tool."""
    permission = declared_permission(calls)
    if permission is False:
        raise TypeError(f"{calls.__qualname__} declares no permission")
    annotations = ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent or read_only,
        open_world_hint=False,
    )

    def register(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        registry.append(CrmTool(fn, title, permission if isinstance(permission, Perm) else None, annotations))
        return fn

    return register


# In a filter, `owner_id` also takes "me": the calling user, so the model need not look its own id up first.
ME = "me"
OwnerOrMe = Annotated[
    UUID | Literal["me"] | None, Field(description='Only records owned by this user; "me" for your own.')
]


def _flattened(model: type[BaseModel], *, is_filter: bool) -> list[inspect.Parameter]:
    return [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=OwnerOrMe if is_filter and name == "owner_id" else Annotated[field.annotation, field],
            # the field (in the annotation) carries its default or default factory
            default=inspect.Parameter.empty if field.is_required() or field.default_factory else field.default,
        )
        for name, field in model.model_fields.items()
    ]


def _published(annotation: Any) -> Any:
    """What the tool publishes for a service result type: a `Page[X]` becomes a `ToolPage[X]` (with `truncated`)."""
    if isinstance(annotation, type) and issubclass(annotation, Page):
        (item,) = annotation.__pydantic_generic_metadata__["args"]
        return ToolPage[item]  # type: ignore[valid-type]
    return annotation


def safe(result: Any) -> Any:
    """The result as plain data with its text cleaned, and a page fitted to the size budget."""
    data = clean(to_jsonable_python(result))
    return fit_page(data) if isinstance(result, Page) else data


@dataclass(frozen=True)
class Bound:
    fn: Callable[..., Awaitable[Any]]
    nullable: frozenset[str]  # arguments where an explicit null means "clear"


def bind(tool: CrmTool, db: Database, principal: PrincipalSource) -> Bound:
    """The function the MCP server calls for `tool`: flat arguments in, the service's model out."""
    signature = inspect.signature(tool.fn, eval_str=True)
    _, *own = signature.parameters.values()  # the first is the unit of work
    public: list[inspect.Parameter] = []
    models: dict[str, type[BaseModel]] = {}
    for parameter in own:
        annotation = parameter.annotation
        if parameter.name in FLATTENED and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            models[parameter.name] = annotation
            public.extend(_flattened(annotation, is_filter=parameter.name == "filter"))
        else:
            public.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    returns = _published(signature.return_annotation)
    returned: TypeAdapter[Any] = TypeAdapter(returns)
    names = [p.name for p in public]
    if len(names) != len(set(names)):
        raise TypeError(f"tool {tool.name}: an argument name is used twice: {names}")

    async def run(**arguments: Any) -> Any:
        caller: Principal | None = None
        try:
            caller = await principal()
            sent = sent_arguments.get()
            call: dict[str, Any] = {}
            for name, model in models.items():
                given = {k: arguments.pop(k) for k in list(arguments) if k in model.model_fields}
                if name == PATCH:
                    call[name] = model(**{k: v for k, v in given.items() if k in sent})
                elif name == "filter" and given.get("owner_id") == ME:
                    call[name] = model(**{**{k: v for k, v in given.items() if v is not None},
                                          "owner_id": caller.user_id})
                else:
                    call[name] = model(**{k: v for k, v in given.items() if v is not None})
            async with db.unit_of_work(caller) as uow:
                result = await tool.fn(uow, **call, **arguments)
            if (links := result_links.get()) is not None:
                links.extend(links_for(result))
            return returned.validate_python(safe(result))
        except ToolError:
            raise
        except Exception as exc:
            raise tool_error(exc, caller) from exc

    run.__name__ = tool.name
    run.__doc__ = tool.description
    run.__signature__ = inspect.Signature(public, return_annotation=returns)  # type: ignore[attr-defined]
    nullable = frozenset(models[PATCH].model_fields) if PATCH in models else frozenset()
    return Bound(run, nullable)
