"""Every public service function declares its permission once, and front ends cannot skip the check."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
import uuid

import pytest

import services
from services.kernel.errors import Forbidden
from services.kernel.permissions import Perm, Role, declared_permission, requires
from services.kernel.principal import Channel, Principal


def service_modules() -> list[types.ModuleType]:
    found = []
    for info in pkgutil.iter_modules(services.__path__):
        if info.ispkg and info.name != "kernel":
            try:
                found.append(importlib.import_module(f"services.{info.name}.service"))
            except ModuleNotFoundError:
                continue
    return found


def undeclared(module: types.ModuleType) -> list[str]:
    """Public coroutine functions defined in `module` without @requires."""
    return [
        name
        for name, fn in vars(module).items()
        if not name.startswith("_")
        and inspect.iscoroutinefunction(fn)
        and getattr(fn, "__module__", None) == module.__name__
        and declared_permission(fn) is False
    ]


def test_every_domain_has_a_service_module():
    assert sorted(m.__name__ for m in service_modules()) == [
        "services.activities.service",
        "services.audit.service",
        "services.contacts.service",
        "services.deals.service",
        "services.deletion.service",
        "services.gdpr.service",
        "services.leads.service",
        "services.maintenance.service",
        "services.notes.service",
        "services.notifications.service",
        "services.pipelines.service",
        "services.reports.service",
        "services.search.service",
        "services.summaries.service",
        "services.users.service",
    ]


@pytest.mark.parametrize("module", service_modules(), ids=lambda m: m.__name__)
def test_every_public_service_function_declares_a_permission(module):
    assert undeclared(module) == []


def test_the_contract_check_catches_a_function_without_a_permission():
    module = types.ModuleType("services.example.service")

    async def forgotten(uow):  # pragma: no cover - never called
        return None

    @requires(Perm.DEALS_READ)
    async def declared(uow):  # pragma: no cover - never called
        return None

    for fn in (forgotten, declared):
        fn.__module__ = module.__name__
        setattr(module, fn.__name__, fn)
    assert undeclared(module) == ["forgotten"]


async def test_requires_refuses_before_the_function_body_runs():
    ran = []

    @requires(Perm.DEALS_DELETE)
    async def guarded(uow):
        ran.append(True)

    viewer = Principal(
        user_id=uuid.uuid4(), roles=frozenset({Role.VIEWER}), team_ids=frozenset(), scopes=None,
        channel=Channel.MCP,
    )
    with pytest.raises(Forbidden) as refused:
        await guarded(types.SimpleNamespace(principal=viewer))
    assert refused.value.permission == "deals:delete"
    assert ran == []
