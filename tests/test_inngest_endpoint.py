"""/api/inngest on the real app when Inngest (Cloud or self-hosted) runs the workflows: production mode, signatures
required and at most five minutes old, syncs pinned to the public URL, and no endpoint under the other engines.

Inngest is faked at the HTTP transport (respx); the SDK itself runs unmodified. Requests are signed with
`workflows.signing`, which is also checked against the SDK's own signing in both directions.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import fastapi
import httpx
import inngest
import inngest.fast_api
import pytest
import respx
from conftest import lifespan
from inngest._internal import net
from pydantic import SecretStr

import workflows.functions
from pipecd.app import create_app
from workflows import signing
from workflows.production import MISSING_SIGNING_KEY

SIGNING_KEY = "signkey-test-" + "0123456789abcdef" * 4
EVENT_KEY = "test-event-key"
PUBLIC_URL = "https://crm.example.com"
REGISTER = "https://api.inngest.com/fn/register"
REAL_BUILD = workflows.functions.build


def on_inngest(settings: Any, **changes: Any) -> Any:
    """The test settings with Inngest Cloud configured (as INNGEST_SIGNING_KEY etc. would), plus `changes`."""
    return settings.model_copy(
        update={
            "inngest_signing_key": SecretStr(SIGNING_KEY),
            "inngest_event_key": SecretStr(EVENT_KEY),
            "public_url": PUBLIC_URL,
            "workflows": "auto",
            **changes,
        }
    )


@pytest.fixture
def echo_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The function set is the real one plus `echo`, a trivial function whose calls are recorded here."""
    calls: list[Any] = []

    def build(
        client: inngest.Inngest, db: Any, config: workflows.functions.Config, llm: Any = None
    ) -> list[inngest.Function[Any]]:
        @client.create_function(fn_id="echo", trigger=inngest.TriggerEvent(event="test/echo"))
        async def echo(ctx: inngest.Context) -> dict[str, Any]:
            calls.append(ctx.event.data)
            return {"echo": ctx.event.data["value"]}

        return [*REAL_BUILD(client, db, config, llm), echo]

    monkeypatch.setattr(workflows.functions, "build", build)
    return calls


@asynccontextmanager
async def serving(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with lifespan(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL) as client:
            yield client


def call_request(value: str) -> bytes:
    """A call request for `echo` as Inngest sends it (no memoized steps yet)."""
    event = {"id": "evt-1", "name": "test/echo", "data": {"value": value}, "ts": 1796065455086}
    body = {
        "event": event,
        "events": [event],
        "steps": {},
        "use_api": False,
        "ctx": {
            "run_id": "run-1",
            "attempt": 0,
            "max_attempts": 1,
            "disable_immediate_execution": False,
            "use_api": False,
            "stack": {"stack": [], "current": 0},
        },
    }
    return json.dumps(body).encode()


ECHO = "/api/inngest?fnId=pipecd-echo&stepId=step"


def signed(body: bytes, *, t: int | None = None) -> dict[str, str]:
    return {"x-inngest-signature": signing.sign(body, SIGNING_KEY, t), "content-type": "application/json"}


def real_function_count() -> int:
    """How many functions the real function set has (the endpoint serves exactly these)."""
    client = inngest.Inngest(app_id="pipecd", is_production=False)
    return len(REAL_BUILD(client, None, workflows.functions.Config()))  # type: ignore[arg-type]


# Introspection ---------------------------------------------------------------------------------------------


async def test_introspection_reports_cloud_mode_and_the_function_set(settings: Any) -> None:
    async with serving(on_inngest(settings)) as http:
        unsigned = await http.get("/api/inngest")
        response = await http.get("/api/inngest", headers=signed(b""))

    assert unsigned.status_code == 401
    assert unsigned.json() == {"message": "Unauthorized"}
    assert response.status_code == 200
    body = response.json()
    assert body["mode"] == "cloud"
    assert body["function_count"] == real_function_count()
    assert body["authentication_succeeded"] is True
    assert (body["app_id"], body["has_signing_key"], body["has_event_key"]) == ("pipecd", True, True)
    assert (body["serve_origin"], body["serve_path"]) == (PUBLIC_URL, "/api/inngest")
    # the SDK signs its answer to a signed request; our verifier accepts it
    signing.verify_response(response.content, response.headers["x-inngest-signature"], SIGNING_KEY)


async def test_introspection_counts_the_served_functions(settings: Any, echo_calls: list[Any]) -> None:
    async with serving(on_inngest(settings)) as http:
        response = await http.get("/api/inngest", headers=signed(b""))

    assert response.json()["function_count"] == real_function_count() + 1


async def test_inngest_dev_selects_development_mode_without_a_signing_key(settings: Any) -> None:
    dev = settings.model_copy(update={"inngest_dev": "1", "public_url": PUBLIC_URL, "workflows": "auto"})

    async with serving(dev) as http:
        response = await http.get("/api/inngest")

    assert response.status_code == 200
    assert response.json()["mode"] == "dev"


async def test_production_mode_without_a_signing_key_stops_the_app_with_our_message(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INNGEST_SIGNING_KEY", raising=False)
    only_event_key = settings.model_copy(update={"inngest_event_key": SecretStr(EVENT_KEY), "workflows": "auto"})

    with pytest.raises(RuntimeError) as raised:
        create_app(only_event_key)

    assert str(raised.value) == MISSING_SIGNING_KEY


# Call requests ---------------------------------------------------------------------------------------------


async def test_signed_call_request_runs_the_function_and_the_answer_is_signed(
    settings: Any, echo_calls: list[Any]
) -> None:
    body = call_request("hello")

    async with serving(on_inngest(settings)) as http:
        response = await http.post(ECHO, content=body, headers=signed(body))

    assert response.status_code == 200, response.text
    assert response.json() == {"echo": "hello"}
    assert echo_calls == [{"value": "hello"}]
    signing.verify_response(response.content, response.headers["x-inngest-signature"], SIGNING_KEY)


async def test_unsigned_call_request_is_refused(settings: Any, echo_calls: list[Any]) -> None:
    body = call_request("hello")

    async with serving(on_inngest(settings)) as http:
        response = await http.post(ECHO, content=body, headers={"content-type": "application/json"})

    assert response.status_code == 401
    assert response.json() == {"message": "Unauthorized"}
    assert echo_calls == []


async def test_call_request_signed_with_another_key_is_refused(settings: Any, echo_calls: list[Any]) -> None:
    body = call_request("hello")
    header = signing.sign(body, "signkey-test-" + "fedcba9876543210" * 4)

    async with serving(on_inngest(settings)) as http:
        response = await http.post(ECHO, content=body, headers={"x-inngest-signature": header})

    assert response.status_code == 401
    assert echo_calls == []


async def test_call_request_signed_ten_minutes_ago_is_refused(settings: Any, echo_calls: list[Any]) -> None:
    body = call_request("hello")

    async with serving(on_inngest(settings)) as http:
        response = await http.post(ECHO, content=body, headers=signed(body, t=int(time.time()) - 600))

    assert response.status_code == 401
    # 600 s, or 601 when a second ticks between signing and checking
    assert re.fullmatch(r"Unauthorized: the signature is 60[01] s old; at most 300 s is accepted",
                        response.json()["message"])
    assert echo_calls == []


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (lambda body: signing.sign(body, SIGNING_KEY, int(time.time()) + 600), "timestamp is in the future"),
        # a MAC over the body alone, which the SDK accepts (it mixes in t only when there is one)
        (lambda body: "s=" + hmac.new(signing.signing_secret(SIGNING_KEY), signing.canonical(body),
                                      hashlib.sha256).hexdigest(), "has no timestamp"),
        (lambda body: signing.sign(body, SIGNING_KEY) + "&t=1", "repeats a part"),
        (lambda body: "t=abc&s=00", "not a number of seconds"),
    ],
    ids=["future", "no-timestamp", "repeated-timestamp", "malformed"],
)
async def test_signature_headers_the_sdk_would_accept_or_misread_are_refused(
    settings: Any, echo_calls: list[Any], header: Callable[[bytes], str], message: str
) -> None:
    body = call_request("hello")

    async with serving(on_inngest(settings)) as http:
        response = await http.post(ECHO, content=body, headers={"x-inngest-signature": header(body)})

    assert response.status_code == 401
    assert message in response.json()["message"]
    assert echo_calls == []


async def test_two_signature_headers_are_refused(settings: Any, echo_calls: list[Any]) -> None:
    body = call_request("hello")
    headers = [("x-inngest-signature", signing.sign(body, SIGNING_KEY)), ("x-inngest-signature", "t=1&s=00")]

    async with serving(on_inngest(settings)) as http:
        response = await http.post(ECHO, content=body, headers=headers)

    assert response.status_code == 401
    assert response.json() == {"message": "Unauthorized: the request has more than one signature header"}
    assert echo_calls == []


async def test_the_sdk_alone_accepts_stale_signatures() -> None:
    """Why the guard exists: inngest 0.5.x runs a call request signed ten minutes ago. When an SDK upgrade
    makes this fail, the SDK checks ages itself."""
    client = inngest.Inngest(app_id="pipecd", is_production=True, signing_key=SIGNING_KEY)

    @client.create_function(fn_id="echo", trigger=inngest.TriggerEvent(event="test/echo"))
    async def echo(ctx: inngest.Context) -> str:
        return "ran"

    bare = fastapi.FastAPI()
    inngest.fast_api.serve(bare, client, [echo], enable_unauthed_sync=False)
    body = call_request("hello")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url=PUBLIC_URL) as http:
        response = await http.post(ECHO, content=body, headers=signed(body, t=int(time.time()) - 600))

    assert (response.status_code, response.json()) == (200, "ran")


# Syncs -----------------------------------------------------------------------------------------------------


async def test_unsigned_sync_from_a_foreign_host_registers_nothing(settings: Any) -> None:
    async with serving(on_inngest(settings)) as http:
        with respx.mock(assert_all_called=False) as inngest_cloud:
            register = inngest_cloud.post(REGISTER).respond(200, json={"ok": True})
            response = await http.put("/api/inngest", headers={"host": "evil.example"})

    assert response.status_code == 401
    assert response.json() == {"message": "Unauthorized"}
    assert not register.called


@pytest.mark.parametrize(
    ("public_url", "registered"),
    [(PUBLIC_URL, PUBLIC_URL + "/api/inngest"), ("https://example.com/crm/", "https://example.com/crm/api/inngest")],
)
async def test_unauthed_sync_registers_the_public_url_never_the_request_host(
    settings: Any, echo_calls: list[Any], public_url: str, registered: str
) -> None:
    configured = on_inngest(settings, inngest_unauthed_sync=True, public_url=public_url)

    async with serving(configured) as http:
        with respx.mock() as inngest_cloud:
            register = inngest_cloud.post(REGISTER).respond(200, json={"ok": True})
            response = await http.put("/api/inngest", headers={"host": "evil.example"})

    assert response.status_code == 200, response.text
    assert register.call_count == 1
    sent = register.calls.last.request
    assert b"evil.example" not in sent.content
    body = json.loads(sent.content)
    assert body["url"] == registered
    assert body["appname"] == "pipecd"
    echo = next(f for f in body["functions"] if f["id"] == "pipecd-echo")
    assert echo["steps"]["step"]["runtime"]["url"] == f"{registered}?fnId=pipecd-echo&stepId=step"
    # the registration is authenticated by our signing key (its hash), which is why the URL must be ours
    digest = hashlib.sha256(bytes.fromhex(SIGNING_KEY.removeprefix("signkey-test-"))).hexdigest()
    assert sent.headers["authorization"] == f"Bearer {digest}"


# Other engines ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [{}, {"workflows": "embedded"}, {"workflows": "off"}],
    ids=["default", "embedded", "off"],
)
async def test_no_inngest_endpoint_unless_inngest_runs_the_workflows(settings: Any, changes: dict[str, Any]) -> None:
    configured = on_inngest(settings, **changes) if changes else settings.model_copy(update={"workflows": "auto"})
    body = call_request("hello")

    async with serving(configured) as http:
        with respx.mock(assert_all_called=False) as inngest_cloud:
            register = inngest_cloud.post(REGISTER).respond(200, json={"ok": True})
            responses = [
                await http.get("/api/inngest"),
                await http.post(ECHO, content=body, headers=signed(body)),
                await http.put("/api/inngest", headers=signed(b"")),
            ]

    assert configured.workflow_engine == changes.get("workflows", "embedded")
    assert [r.status_code for r in responses] == [404, 404, 404]
    assert not register.called


# The signing helper (a contract with the SDK) --------------------------------------------------------------

BODIES: list[Any] = [
    b"",
    {"b": 1, "a": [1.5, 2e21, None, True], "é": "naïve ✓", "nested": {"z": {}, "y": []}},
    json.loads(call_request("hello")),
]


@pytest.mark.parametrize("body", BODIES, ids=["empty", "unicode-and-numbers", "call-request"])
def test_our_request_signature_is_the_sdks(body: Any) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body, indent=2).encode()
    t = int(time.time())

    assert signing.sign(raw, SIGNING_KEY, t) == net.sign_request(raw, SIGNING_KEY, t)
    assert signing.sign(body, SIGNING_KEY, t) == signing.sign(raw, SIGNING_KEY, t)  # object or its JSON: the same
    signing.verify(raw, signing.sign(body, SIGNING_KEY, t), SIGNING_KEY)


def test_response_signatures_are_the_sdks() -> None:
    raw = b'{"echo": "hello"}'
    t = int(time.time())

    signing.verify_response(raw, net.sign_response(raw, SIGNING_KEY, t), SIGNING_KEY)


def test_the_key_prefix_is_not_part_of_the_secret() -> None:
    bare = SIGNING_KEY.removeprefix("signkey-test-")

    assert signing.signing_secret(SIGNING_KEY) == signing.signing_secret(bare) == bare.encode()
    assert signing.sign(b"{}", SIGNING_KEY, 1) == signing.sign(b"{}", "signkey-prod-" + bare, 1)


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        (b'{"a":1}', None, "the request is not signed"),
        (b'{"a":2}', signing.sign(b'{"a":1}', SIGNING_KEY, 1000), "the signature does not match"),
        (b'{"a":1}', signing.sign(b'{"a":1}', SIGNING_KEY, 1000 - 301), "the signature is 301 s old"),
        (b'{"a":1}', signing.sign(b'{"a":1}', SIGNING_KEY, 1000 + 301), "the signature's timestamp is in the future"),
        (b'{"a":1}', "t=1000", "the signature has no well-formed MAC"),
        (b"not json", "t=1000&s=" + "0" * 64, "a signed body must be JSON"),
    ],
    ids=["missing", "tampered", "old", "future", "no-mac", "not-json"],
)
def test_verify_refuses_with_the_reason(body: bytes, header: str | None, message: str) -> None:
    with pytest.raises(signing.SignatureError) as refused:
        signing.verify(body, header, SIGNING_KEY, now=1000)

    assert str(refused.value).startswith(message)


def test_verify_accepts_a_signature_within_the_window() -> None:
    body = b'{"a":1}'

    signing.verify(body, signing.sign(body, SIGNING_KEY, 1000 - 300), SIGNING_KEY, now=1000)
    signing.verify(body, signing.sign(body, SIGNING_KEY, 1000 + 300), SIGNING_KEY, now=1000)
