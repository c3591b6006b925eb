"""What a failure handler receives: Inngest's `inngest/function.failed` event, read safely."""

from __future__ import annotations

from typing import Any, cast

import inngest


def failure_of(ctx: inngest.Context, fallback: str) -> tuple[dict[str, Any], str]:
    """(the data of the event whose run failed, the error's message, or `fallback`)."""
    failure = cast(dict[str, Any], ctx.event.data)  # {function_id, run_id, error, event}
    error = failure.get("error") or {}
    message = str(error.get("message") or error.get("name") or fallback)
    return dict((failure.get("event") or {}).get("data") or {}), message
