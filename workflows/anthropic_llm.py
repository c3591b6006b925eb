"""The Anthropic model behind the summaries: the official SDK (over httpx2), at the edge of the system.

One Messages API call per summary: a fixed system prompt, one user turn with the data fenced by a nonce, no
tools, structured output by JSON schema (`output_config.format`). No temperature (gone from current models) and
no prefill (refused by them). The SDK retries once by itself (a brief overload or rate limit passes unnoticed);
beyond that the workflow owns retries: busy answers become ModelBusy with the wait the API asked for, answers
that retrying cannot change become ModelRefused. Calls happen only inside workflow steps, never in a request
and never inside a database transaction.

The SDK is imported when the first client is made, not with this module: it takes a large share of a server's
start, and a server without an API key (or whose workflows run elsewhere) never calls it.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from services.ai.answer import ANSWER_SCHEMA, to_answer
from services.ai.llm import Answer, Context, ModelBusy, ModelRefused, Purpose
from services.ai.prompt import new_nonce, system_prompt, user_message

if TYPE_CHECKING:
    import anthropic
    import httpx2

# A current model the installed SDK does not flag as deprecated (a test fails on a DeprecationWarning for it).
DEFAULT_MODEL = "claude-haiku-5-5"

# The longest the SDK may sleep before its one retry. It obeys retry-after with no upper bound, and a step
# that sleeps for minutes holds a worker; past this the retry comes early, and a second busy answer hands the
# server's wait to the workflow (ModelBusy.retry_after), which sleeps without holding anything.
MAX_SDK_WAIT = 5.0

# Statuses the API sends when trying again later may work: timeout, lock conflict, rate limit, server errors.
_BUSY_STATUSES = frozenset({408, 409, 429})


@functools.cache
def _client_class() -> type[anthropic.AsyncAnthropic]:
    """The SDK client with its in-process wait before a retry bounded (see MAX_SDK_WAIT)."""
    import anthropic

    class _Client(anthropic.AsyncAnthropic):
        def _calculate_retry_timeout(self, *args: Any, **kwargs: Any) -> float:
            return min(super()._calculate_retry_timeout(*args, **kwargs), MAX_SDK_WAIT)

    return _Client


def retry_after(headers: httpx2.Headers | None) -> float | None:
    """The wait an error response asks for, in seconds: `retry-after-ms`, else `retry-after` (seconds)."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return max(0.0, float(headers[name]) / scale)
        except (KeyError, ValueError):
            continue
    return None


class AnthropicLLM:
    """Summaries by a Claude model through the Messages API."""

    def __init__(
        self,
        api_key: str,
        model: str = DEFAULT_MODEL,
        max_tokens: int = 800,
        timeout: float = 60.0,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self._client = _client_class()(api_key=api_key, timeout=timeout, max_retries=1, http_client=http_client)

    async def summarize(self, context: Context, purpose: Purpose) -> Answer:
        import anthropic  # loaded by the constructor already

        try:
            message = await self._client.messages.create(
                model=self.model,
                max_tokens=self.max_tokens,
                system=system_prompt(context.data["today"]),
                messages=[{"role": "user", "content": user_message(context, purpose, new_nonce())}],
                output_config={"format": {"type": "json_schema", "schema": ANSWER_SCHEMA}},
            )
        except anthropic.APIConnectionError as exc:  # timeouts included
            raise ModelBusy(f"the model could not be reached: {type(exc).__name__}") from exc
        except anthropic.APIStatusError as exc:
            if exc.status_code in _BUSY_STATUSES or exc.status_code >= 500:
                raise ModelBusy(
                    f"the model is busy (HTTP {exc.status_code}, request {exc.request_id})",
                    retry_after(exc.response.headers),
                ) from exc
            raise ModelRefused(
                f"the model API refused the request (HTTP {exc.status_code} {type(exc).__name__},"
                f" request {exc.request_id}); check the API key, the model name and the request"
            ) from exc
        if message.stop_reason == "refusal":
            raise ModelRefused("the model declined to summarize this record (stop reason: refusal)")
        text = "".join(block.text for block in message.content if block.type == "text")
        try:
            raw = json.loads(text)
        except ValueError as exc:
            if message.stop_reason == "max_tokens":
                raise ModelRefused(
                    f"the model's answer was cut off at {self.max_tokens} tokens; raise PIPECD_AI_MAX_TOKENS"
                ) from exc
            raise ModelRefused(f"the model's answer is not JSON (stop reason: {message.stop_reason})") from exc
        return to_answer(
            raw, context, message.model or self.model,
            input_tokens=message.usage.input_tokens, output_tokens=message.usage.output_tokens,
        )
