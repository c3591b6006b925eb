"""How a CRM tool is declared once and bound to a server.

A tool is written as a service call: `async def create_deal(uow, data: DealCreate, idempotency_key: ...) -> Deal`.
Binding it gives the model a flat argument list (the fields of `data`, `filter` or `changes`, with the service
model's descriptions and constraints, plus the tool's own arguments), opens a unit of work as the calling user,
and turns every error into a tool error the model can act on. The tool's permission is the one its service function
declares (`@requires`), so `tools/list` shows a caller exactly the tools their role and scopes allow. What a tool
returns reaches the model cleaned and within the size budget (`safety.py`), with links to the records it is about.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated, Any

from mcp.server.mcpserver.context import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ResourceLink, ToolAnnotations
from mcp_types.version import is_version_at_least
from pydantic import BaseModel, Field, TypeAdapter

from mcp_server.confirm import Confirmations
from mcp_server.errors import tool_error
from mcp_server.links import links_for
from mcp_server.safety import ToolPage, as_data
from services.kernel.errors import Invalid
from services.kernel.pagination import Page
from services.kernel.permissions import Perm, declared_permission
from services.kernel.principal import Principal
from services.kernel.uow import Database, UnitOfWork

PrincipalSource = Callable[[], Awaitable[Principal]]

# Parameters of these names whose type is a pydantic model are flattened into the tool's arguments. For `data`
# and `filter`, null and left out mean the same ("not given"); `changes` is a partial update, where a field left
# out stays as it is and an explicit null clears it (e.g. unlinks the person from a deal).
FLATTENED = ("data", "filter", "changes")
PATCH = "changes"

# A service's input field that a tool takes under another name: the service's errors name the tool's argument.
# (`PageRequest.after` is the tools' `cursor`.)
RENAMED = {"after": "cursor"}


@dataclass
class Call:
    """The tool call in progress, as the server sees it. A tool that declares a parameter of this type gets it;
    a tool whose first parameter is this, not a unit of work, opens its own units of work (e.g. to ask the
    user something between two transactions)."""

    caller: Principal
    db: Database
    sent: frozenset[str]  # the argument names the client actually sent (the SDK fills in every default)
    confirmations: Confirmations
    context: Context[Any, Any] | None = None  # the SDK's request context (elicitation, protocol version)
    links: list[ResourceLink] = field(default_factory=list)  # links to the records the result is about
    # Records the call as `ok` in the tool's own transaction (set by the server); `recorded` once that committed,
    # so the server need not open a transaction of its own for it.
    record_ok: Callable[[UnitOfWork], Awaitable[None]] | None = None
    recorded: bool = False

    def unit_of_work(self) -> AbstractAsyncContextManager[UnitOfWork]:
        return self.db.unit_of_work(self.caller)

    def can_elicit(self) -> bool:
        """Whether the client can be asked mid-call (form elicitation on a 2025-11-25 handshake connection)."""
        if self.context is None:
            return False
        try:
            capabilities = self.context.client_capabilities
            version = self.context.protocol_version
        except ValueError:  # not serving a request (the server's call_tool was called directly)
            return False
        return (
            capabilities is not None
            and capabilities.elicitation is not None
            and version is not None
            and not is_version_at_least(version, "2026-07-28")
        )


current_call: ContextVar[Call | None] = ContextVar("current_call", default=None)


@dataclass(frozen=True)
class CrmTool:
    fn: Callable[..., Awaitable[Any]]
    title: str
    permissions: frozenset[Perm]  # the caller needs one of these to be offered the tool (none: anyone)
    annotations: ToolAnnotations
    omit: frozenset[str] = frozenset()  # fields of a flattened model the tool does not offer (left unset)

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
    any_of: Collection[Perm] = (),
    omit: Collection[str] = (),
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Register a tool; `calls` is the service function it wraps, whose declared permission gates the tool.
    `any_of` gates a tool whose service function checks a permission that depends on its arguments. `omit` names
    fields of its `data`/`filter` model the tool leaves out of its arguments (to keep `tools/list` short)."""
    permission = declared_permission(calls)
    if permission is False:
        raise TypeError(f"{calls.__qualname__} declares no permission")
    gate = frozenset(any_of) if any_of else frozenset({permission} if isinstance(permission, Perm) else ())
    annotations = ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent or read_only,
        open_world_hint=False,
    )

    def register(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        registry.append(CrmTool(fn, title, gate, annotations, frozenset(omit)))
        return fn

    return register


# In a filter, `owner_id` also takes "me": the calling user, so the model need not look its own id up first.
ME = "me"
# Published as a plain string (an id or "me"); the filter model then checks that anything but "me" is an id.
OwnerOrMe = Annotated[str | None, Field(description='Owner\'s id; "me" for yours.')]


def _flattened(model: type[BaseModel], *, is_filter: bool, omit: frozenset[str]) -> list[inspect.Parameter]:
    return [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=OwnerOrMe if is_filter and name == "owner_id" else Annotated[field.annotation, field],
            # the field (in the annotation) carries its default or default factory
            default=inspect.Parameter.empty if field.is_required() or field.default_factory else field.default,
        )
        for name, field in model.model_fields.items()
        if name not in omit
    ]


def _published(annotation: Any) -> Any:
    """What the tool publishes for a service result type: a `Page[X]` becomes a `ToolPage[X]` (with `truncated`)."""
    if isinstance(annotation, type) and issubclass(annotation, Page):
        (item,) = annotation.__pydantic_generic_metadata__["args"]
        return ToolPage[item]  # type: ignore[valid-type]
    return annotation


@dataclass(frozen=True)
class Bound:
    fn: Callable[..., Awaitable[Any]]
    nullable: frozenset[str]  # arguments where an explicit null means "clear"
    arguments: tuple[str, ...]  # every argument the tool takes, in the order its schema lists them

    def refuse_unknown(self, sent: Collection[str]) -> None:
        """A tool error naming every argument sent that the tool does not take: nothing sent is silently dropped
        (a model that passed `status` to the wrong tool would otherwise believe it was applied)."""
        if unknown := [name for name in sent if name not in self.arguments]:
            raise ToolError(f"[invalid] no such argument {', '.join(unknown)}; this tool takes: "
                            f"{', '.join(self.arguments)}")


def bind(tool: CrmTool) -> Bound:
    """The function the MCP server calls for `tool`: flat arguments in, the service's model out. It acts for the
    caller of the call in progress (`current_call`, set by the server), so one binding serves every server."""
    signature = inspect.signature(tool.fn, eval_str=True)
    first, *rest = signature.parameters.values()
    takes_uow = first.annotation is UnitOfWork  # else it opens its own, from the `Call`
    own = rest if takes_uow else [first, *rest]
    public: list[inspect.Parameter] = []
    models: dict[str, type[BaseModel]] = {}
    wants_call: str | None = None
    for parameter in own:
        annotation = parameter.annotation
        if annotation is Call:
            wants_call = parameter.name
        elif parameter.name in FLATTENED and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            models[parameter.name] = annotation
            public.extend(_flattened(annotation, is_filter=parameter.name == "filter", omit=tool.omit))
        else:
            public.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    returns = _published(signature.return_annotation)
    returned: TypeAdapter[Any] = TypeAdapter(returns)
    names = [p.name for p in public]
    if len(names) != len(set(names)):
        raise TypeError(f"tool {tool.name}: an argument name is used twice: {names}")

    async def run(**arguments: Any) -> Any:
        current = current_call.get()
        if current is None:
            raise RuntimeError(f"tool {tool.name} runs only within a server's call_tool")
        caller = current.caller
        try:
            sent = current.sent
            call: dict[str, Any] = {}
            if wants_call is not None:
                call[wants_call] = current
            for name, model in models.items():
                given = {k: arguments.pop(k) for k in list(arguments) if k in model.model_fields}
                if name == PATCH:
                    call[name] = model(**{k: v for k, v in given.items() if k in sent})
                elif name == "filter" and given.get("owner_id") == ME:
                    call[name] = model(**{**{k: v for k, v in given.items() if v is not None},
                                          "owner_id": caller.user_id})
                else:
                    call[name] = model(**{k: v for k, v in given.items() if v is not None})
            if takes_uow:
                async with current.unit_of_work() as uow:
                    result = await tool.fn(uow, **call, **arguments)
                    published = returned.validate_python(as_data(result))
                    if current.record_ok is not None:
                        await current.record_ok(uow)
                current.recorded = current.record_ok is not None
            else:
                result = await tool.fn(**call, **arguments)
                published = returned.validate_python(as_data(result))
            current.links.extend(links_for(result))
            return published
        except ToolError:
            raise
        except Invalid as exc:
            if (renamed := RENAMED.get(exc.field or "")) in names:
                exc.field = renamed
            raise tool_error(exc, caller) from exc
        except Exception as exc:
            raise tool_error(exc, caller) from exc

    run.__name__ = tool.name
    run.__doc__ = tool.description
    run.__signature__ = inspect.Signature(public, return_annotation=returns)  # type: ignore[attr-defined]
    nullable = frozenset(models[PATCH].model_fields) if PATCH in models else frozenset()
    return Bound(run, nullable, tuple(names))
