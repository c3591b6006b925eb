"""The workflow functions served to Inngest (Cloud or a self-hosted `inngest start`) at /api/inngest.

The SDK's FastAPI handler does the protocol; three of its defaults are unsafe for an endpoint on the internet
(inngest 0.5.x), and this module changes each:
- an unsigned PUT makes the SDK register the URL the request was sent to, Host header included, with our signing
  key: the registered URL is pinned to the public URL instead, and unsigned syncs are refused unless enabled;
- the SDK never checks a signature's age, so a captured call request could be replayed forever: a guard in front
  of the handler refuses signatures more than five minutes old (or ahead);
- a client with no mode set picks one from the environment: it is production (signatures required) unless
  INNGEST_DEV is set, and production without a signing key stops the app at startup.
"""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import urlsplit

import inngest
import inngest.fast_api
from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from workflows import signing
from workflows.functions import APP_ID

SERVE_PATH = "/api/inngest"
# Event sends and syncs wait at most this long for Inngest (the SDK's default is 30 s).
REQUEST_TIMEOUT = datetime.timedelta(seconds=10)

MISSING_SIGNING_KEY = (
    "Inngest runs in production mode, where every request to /api/inngest must be signed, but no signing key is "
    "set: set INNGEST_SIGNING_KEY (Inngest Cloud: the app's signing key; self-hosted: the --signing-key given to "
    "`inngest start`), or INNGEST_DEV=1 for a local `inngest dev` server."
)


def _is_dev(dev: str | None) -> bool:
    """Whether INNGEST_DEV asks for a development server: '1' or its URL; unset, '', '0' or 'false' do not."""
    return dev is not None and dev.strip().lower() not in ("", "0", "false")


def inngest_client(
    *, event_key: str | None, signing_key: str | None, base_url: str | None, dev: str | None
) -> inngest.Inngest:
    """The client of the configured Inngest. `base_url` (INNGEST_BASE_URL) is a self-hosted server's origin (its
    Event API and REST API share it); unset, Inngest Cloud. `dev` is INNGEST_DEV, which may be the dev server's URL."""
    development = _is_dev(dev)
    if development and base_url is None and dev is not None and "://" in dev:
        base_url = dev
    return inngest.Inngest(
        app_id=APP_ID,
        is_production=not development,
        event_key=event_key,
        signing_key=signing_key,
        api_base_url=base_url,
        event_api_base_url=base_url,
        request_timeout=REQUEST_TIMEOUT,
    )


def mount(
    app: FastAPI,
    client: inngest.Inngest,
    functions: list[inngest.Function[Any]],
    *,
    serve_origin: str,
    enable_unauthed_sync: bool,
    max_signature_age: int = signing.MAX_AGE_SECONDS,
) -> None:
    """Serve `functions` at /api/inngest on `app` (before any catch-all mount). `serve_origin` is the public URL
    PipeCD is reached at (PIPECD_PUBLIC_URL): a sync registers it plus /api/inngest, whatever Host a request
    names; a path in it (a proxy's prefix) is kept."""
    if client.is_production and client.signing_key is None:
        raise RuntimeError(MISSING_SIGNING_KEY)
    public = urlsplit(serve_origin)
    if not (public.scheme and public.netloc):
        raise ValueError(f"the public URL must be absolute (scheme and host), not {serve_origin!r}")
    inngest.fast_api.serve(
        app,
        client,
        functions,
        serve_origin=f"{public.scheme}://{public.netloc}",
        serve_path=SERVE_PATH,
        public_path=public.path.rstrip("/") + SERVE_PATH,
        enable_unauthed_sync=enable_unauthed_sync,
    )
    app.add_middleware(SignatureAgeGuard, path=SERVE_PATH, max_age=max_signature_age)


class SignatureAgeGuard:
    """Refuses (401) a request to `path` whose signature header is malformed, repeated, or has a timestamp more
    than `max_age` seconds from now. It checks no MAC (the SDK does, with the key); a request without the header
    passes, for the SDK to refuse in production mode. Paths are matched at their end, so a root path or proxy
    prefix cannot route around the guard."""

    def __init__(self, app: ASGIApp, *, path: str, max_age: int) -> None:
        self.app = app
        self.path = path
        self.max_age = max_age

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/").endswith(self.path):
            headers = [value for name, value in scope["headers"] if name == signing.HEADER.encode()]
            if headers:
                try:
                    if len(headers) > 1:
                        raise signing.SignatureError("the request has more than one signature header")
                    signing.parse(headers[0].decode("latin-1"), max_age=self.max_age)
                except signing.SignatureError as exc:
                    await JSONResponse({"message": f"Unauthorized: {exc}"}, status_code=401)(scope, receive, send)
                    return
        await self.app(scope, receive, send)
