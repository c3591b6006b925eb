"""What the embedded runner understands of Inngest: function configs (the supported subset, refused by name
otherwise), the call request it sends, the ops it gets back, and Inngest's retry backoff."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

FAILED_EVENT = "inngest/function.failed"
CRON_EVENT = "inngest/scheduled.timer"
ROOT_STEP = "step"

# Inngest's server-side retry delays (seconds), then up to 30 s of jitter; the last one repeats.
BACKOFF = (15, 30, 60, 120, 300, 600, 1200, 2400, 3600, 7200)

# Config keys with features only Inngest itself provides.
UNSUPPORTED_OPTIONS = {
    "batchEvents": "batch_events",
    "cancel": "cancel",
    "debounce": "debounce",
    "priority": "priority",
    "rateLimit": "rate_limit",
    "singleton": "singleton",
    "throttle": "throttle",
    "timeouts": "timeouts",
}
UNSUPPORTED_OPS = {"WaitForEvent": "wait_for_event", "InvokeFunction": "invoke", "AIGateway": "ai.infer",
                   "Gateway": "fetch"}
SUPPORTED_OPS = {"StepRun", "StepError", "StepFailed", "StepPlanned", "Sleep"}

_DATA_PATH = re.compile(r"^event\.data\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)$")
_FAILURE_EXPRESSION = re.compile(r"^event\.data\.function_id == '([A-Za-z0-9_.:-]+)'$")
DEFAULT_RETRIES = 4  # Inngest's default: 4 retries, 5 attempts


class UnsupportedConfig(ValueError):
    """A function uses something only Inngest provides; the message names it."""


@dataclass(frozen=True)
class Concurrency:
    limit: int
    key: str | None  # an `event.data.<path>` expression, or None for one bucket per function


@dataclass(frozen=True)
class FunctionSpec:
    """One synced function, reduced to what the runner acts on."""

    id: str
    config: dict[str, Any]
    events: frozenset[str]
    crons: tuple[str, ...]
    max_attempts: int
    concurrency: tuple[Concurrency, ...]
    idempotency: str | None
    failure_of: str | None  # set on a failure handler: the id of the function whose failures it handles

    def concurrency_keys(self, event: dict[str, Any]) -> list[str]:
        """One bucket name per limit, from the triggering event (evaluated once, when the run is created)."""
        return [f"{i}:{'' if c.key is None else _json_text(data_path(event, c.key))}"
                for i, c in enumerate(self.concurrency)]

    def idempotency_key(self, event: dict[str, Any]) -> str:
        """Inngest's rule: the `idempotency` expression's value when the function has one, else the event id."""
        if self.idempotency is None:
            return str(event["id"])
        return f"expr:{_json_text(data_path(event, self.idempotency))}"


def parse_function(config: dict[str, Any]) -> FunctionSpec:
    """A synced FunctionConfig as a FunctionSpec, or UnsupportedConfig naming what the runner cannot do."""
    fn_id = str(config["id"])
    where = f"function {fn_id}"
    for key, option in UNSUPPORTED_OPTIONS.items():
        if config.get(key):
            raise UnsupportedConfig(f"{where}: the embedded runner does not support {option}; configure Inngest")
    events: set[str] = set()
    crons: list[str] = []
    failure_of = None
    for trigger in config.get("triggers") or []:
        if "cron" in trigger:
            crons.append(_checked_cron(trigger["cron"], where))
            continue
        name = str(trigger.get("event", ""))
        if "*" in name:
            raise UnsupportedConfig(f"{where}: the embedded runner does not support wildcard event triggers")
        expression = trigger.get("expression")
        if expression:
            matched = _FAILURE_EXPRESSION.match(expression)
            if name != FAILED_EVENT or matched is None:
                raise UnsupportedConfig(f"{where}: the embedded runner does not support trigger expressions")
            failure_of = matched.group(1)
        events.add(name)
    concurrency = []
    for limit in config.get("concurrency") or []:
        scope = limit.get("scope") or "fn"
        if scope != "fn":
            raise UnsupportedConfig(f"{where}: the embedded runner supports concurrency scope 'fn' only, not {scope!r}")
        key = limit.get("key")
        if key is not None and not _DATA_PATH.match(key):
            raise UnsupportedConfig(f"{where}: concurrency keys must be event.data.<path>, not {key!r}")
        concurrency.append(Concurrency(int(limit["limit"]), key))
    idempotency = config.get("idempotency")
    if idempotency is not None and not _DATA_PATH.match(idempotency):
        raise UnsupportedConfig(f"{where}: idempotency must be event.data.<path>, not {idempotency!r}")
    retries = ((config.get("steps") or {}).get(ROOT_STEP) or {}).get("retries") or {}
    attempts = retries.get("attempts")
    return FunctionSpec(
        id=fn_id,
        config=config,
        events=frozenset(events),
        crons=tuple(crons),
        max_attempts=min(DEFAULT_RETRIES if attempts is None else int(attempts), 20) + 1,
        concurrency=tuple(concurrency),
        idempotency=idempotency,
        failure_of=failure_of,
    )


def _checked_cron(expression: str, where: str) -> str:
    try:
        cron_ticks(expression, datetime.now(UTC))
    except (CronSimError, ValueError, KeyError) as exc:
        raise UnsupportedConfig(f"{where}: cannot read cron {expression!r}: {exc}") from exc
    return expression


def cron_ticks(expression: str, after: datetime) -> tuple[datetime, datetime]:
    """(the last tick at or before `after`, the next tick after it) for `[TZ=<zone> ]<5 fields>`, in UTC."""
    zone: Any = UTC
    if expression.startswith("TZ="):
        name, _, expression = expression.partition(" ")
        zone = ZoneInfo(name[3:])
    local = after.astimezone(zone)
    previous = next(CronSim(expression, local, reverse=True)).astimezone(UTC)
    following = next(CronSim(expression, local)).astimezone(UTC)
    return previous, following


def data_path(event: dict[str, Any], expression: str) -> Any:
    """The value at `event.data.<path>` (None when absent)."""
    matched = _DATA_PATH.match(expression)
    assert matched is not None  # checked at sync
    value: Any = event.get("data") or {}
    for part in matched.group(1).split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _json_text(value: Any) -> str:
    return "" if value is None else str(value)


def call_body(
    *, event: dict[str, Any], run_id: str, attempt: int, max_attempts: int, disable_immediate: bool,
    memos: list[tuple[str, dict[str, Any] | None]],
) -> dict[str, Any]:
    """The call request Inngest's executor sends: the event, every memoized step, and the attempt."""
    return {
        "event": event,
        "events": [event],
        "steps": dict(memos),
        "use_api": False,
        "ctx": {
            "run_id": run_id,
            "attempt": attempt,
            "max_attempts": max_attempts,
            "disable_immediate_execution": disable_immediate,
            "use_api": False,
            "stack": {"stack": [step_id for step_id, _ in memos], "current": len(memos)},
        },
    }


def backoff(attempt: int, scale: float) -> timedelta:
    """Inngest's delay before retry number `attempt + 1`, jittered, times `scale`."""
    base = BACKOFF[min(attempt, len(BACKOFF) - 1)] + random.uniform(0, 30)
    return timedelta(seconds=base * scale)


def parse_time(value: str) -> datetime:
    """An ISO 8601 time from the SDK (a Sleep op's wake time, a retry-after header) as aware UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
