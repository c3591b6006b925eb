"""Wiring: which database, which login, which token rules. Front ends and the CLI get their parts from here.

The workflow engine, the Inngest SDK and the model adapter are imported by the functions that build them: a
server whose workflows are off (or that has no API key) never loads them, which keeps its start short.
"""

from __future__ import annotations

import copy
import json
import logging
import logging.config
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

import jwt
import psycopg
import uvicorn.config
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from pipecd.database.embedded import EmbeddedPostgres
from pipecd.database.migrations import migrate, pending
from pipecd.settings import Settings
from services.ai.llm import LLM
from services.ai.offline import OfflineLLM
from services.kernel.auth import principal_from_claims
from services.kernel.permissions import Scope
from services.kernel.principal import Channel, Principal
from services.kernel.ratelimit import RateLimit, storage
from services.kernel.tokens import AUDIENCE, TokenVerifier
from services.kernel.uow import Database

if TYPE_CHECKING:
    import inngest

    from workflows import engine as workflow_engine
    from workflows.functions import Config as WorkflowConfig

APP_LOGIN = "authenticator"


class SetupError(Exception):
    """Something about the local setup that the user fixes (the CLI prints it as one line, no traceback)."""


def embedded(settings: Settings) -> EmbeddedPostgres:
    return EmbeddedPostgres(settings.embedded_data_dir)


def where(settings: Settings) -> str:
    """The database PipeCD would use, for messages: DATABASE_URL's host and database, or the embedded folder."""
    if settings.database_url:
        params = conninfo_to_dict(settings.database_url)
        host = params.get("host") or "localhost"
        return f"{params.get('dbname') or params.get('user') or ''} on {host} (DATABASE_URL)"
    return f"the embedded Postgres in {settings.embedded_data_dir}"


def check_reachable(url: str, settings: Settings) -> None:
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SetupError(f"cannot reach {where(settings)}: {reason}") from None


def check_migrated(url: str, settings: Settings, *, any_pending: bool = True) -> int:
    """Refuse a database that was never migrated (or, with `any_pending`, is behind); returns the pending count."""
    with psycopg.connect(url) as conn:
        waiting = pending(conn)
        fresh = conn.execute("select to_regclass('public.user_profiles') is null").fetchone()
    if (fresh and fresh[0]) or (waiting and any_pending):
        state = "not migrated" if fresh and fresh[0] else f"{len(waiting)} migration(s) behind"
        raise SetupError(f"{where(settings)} is {state}: run `pipecd migrate`")
    return len(waiting)


@contextmanager
def existing_database(
    settings: Settings, *, migrated: bool = True, any_pending: bool = True, keep_running: bool = False
) -> Iterator[str]:
    """The admin URL of a database that already exists (never creates one). An embedded server that is stopped
    is started for the command and stopped again when it ends, unless `keep_running` (then the caller says so)."""
    started = False
    if settings.uses_embedded_database:
        server = embedded(settings)
        if not server.initialized():
            raise SetupError(
                f"no PipeCD database at {settings.state_dir.resolve()} (set DATABASE_URL or PIPECD_STATE_DIR, "
                "or run `pipecd dev` first)"
            )
        if not server.status().running:
            server.start()
            started = True
        url = server.admin_url()
    else:
        assert settings.database_url is not None
        url = settings.database_url
    try:
        check_reachable(url, settings)
        if migrated:
            check_migrated(url, settings, any_pending=any_pending)
        yield url
    finally:
        if started and not keep_running:
            embedded(settings).stop()


def admin_url(settings: Settings, *, start: bool = True) -> str:
    """The admin (migration) URL: DATABASE_URL, or the embedded server's (started on demand)."""
    if settings.database_url:
        return settings.database_url
    server = embedded(settings)
    if start:
        server.start()
    return server.admin_url()


def app_url(settings: Settings, admin: str) -> str:
    """The pool's URL: PIPECD_APP_DATABASE_URL, or the admin URL's server logged in as `authenticator`."""
    if settings.app_database_url:
        return settings.app_database_url
    params = conninfo_to_dict(admin)
    params["user"] = APP_LOGIN
    params.pop("password", None)
    if settings.authenticator_password is not None:
        params["password"] = settings.authenticator_password.get_secret_value()
    return make_conninfo(**params)  # type: ignore[arg-type]


def prepare_database(settings: Settings) -> str:
    """Start (if embedded) and migrate; returns the admin URL."""
    url = admin_url(settings)
    password = settings.authenticator_password.get_secret_value() if settings.authenticator_password else None
    migrate(url, authenticator_password=password)
    return url


def database(settings: Settings, admin: str) -> Database:
    return Database(
        app_url(settings, admin),
        max_size=settings.db_pool_max,
        prepare=settings.db_prepare_statements,
        pool_timeout=settings.db_pool_timeout,
        statement_timeout=settings.db_statement_timeout,
        count_limit=settings.count_limit,
    )


@dataclass(frozen=True)
class RateLimits:
    mcp: RateLimit
    graphql: RateLimit


def rate_limits(settings: Settings) -> RateLimits:
    """Each user's budgets, on the configured store (one connection pool for both)."""
    store = storage(settings.rate_limit_storage)
    return RateLimits(
        mcp=RateLimit("mcp", settings.mcp_rate_limit, store),
        graphql=RateLimit("graphql", settings.graphql_rate_limit, store),
    )


def token_verifier(settings: Settings) -> TokenVerifier:
    return TokenVerifier(
        hs256_secret=settings.effective_jwt_secret,
        jwks_url=settings.effective_jwks_url,
        issuer=settings.jwt_issuer,
    )


def mint_token(
    settings: Settings,
    user_id: UUID,
    email: str,
    *,
    scopes: list[Scope] | None = None,
    ttl_seconds: int = 3600,
) -> str:
    """A development access token shaped like Supabase's, signed with the local secret."""
    if settings.is_production:
        raise RuntimeError("refusing to mint tokens when PIPECD_ENV=production")
    secret = settings.effective_jwt_secret
    assert secret is not None
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": str(user_id),
        "aud": AUDIENCE,
        "role": "authenticated",
        "email": email,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if scopes:
        claims["scope"] = " ".join(s.value for s in scopes)
    return jwt.encode(claims, secret, algorithm="HS256")


def user_id_for_email(admin: str, email: str) -> UUID | None:
    with psycopg.connect(admin) as conn:
        row = conn.execute("select id from auth.users where lower(email) = lower(%s)", [email]).fetchone()
    return row[0] if row else None


@asynccontextmanager
async def open_database(settings: Settings, admin: str) -> AsyncIterator[Database]:
    db = database(settings, admin)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


async def principal_for(db: Database, user_id: UUID, channel: Channel = Channel.CLI) -> Principal:
    return await principal_from_claims(db, {"sub": str(user_id)}, channel)


def workflow_config(settings: Settings) -> WorkflowConfig:
    from workflows.functions import Config as WorkflowConfig

    return WorkflowConfig(
        followup_days=settings.followup_days,
        reminder_cron=settings.reminder_cron,
        maintenance_cron=settings.maintenance_cron,
        outbox_retention_days=settings.outbox_retention_days,
        runs_retention_days=settings.runs_retention_days,
        idempotency_retention_days=settings.idempotency_retention_days,
        ai_context_tokens=settings.ai_context_tokens,
        ai_concurrency_per_user=settings.ai_concurrency_per_user,
        ai_concurrency=settings.ai_concurrency,
        digest_cron=settings.digest_cron,
        erasure_settle_seconds=settings.erasure_settle_seconds,
    )


def workflows(settings: Settings, db: Database) -> workflow_engine.Engine | None:
    """The engine this process runs (relay, and the runner when embedded); None when workflows are off."""
    quiet_http_client_logs()
    if settings.workflow_engine == "off":
        return None
    from workflows import engine as workflow_engine

    timing = workflow_engine.Timing(relay_interval=settings.relay_interval,
                                    backoff_scale=settings.workflow_backoff_scale)
    if settings.workflow_engine == "embedded":
        return workflow_engine.embedded(db, workflow_config(settings), timing, llm(settings))
    if settings.workflow_engine == "inngest":
        return workflow_engine.with_inngest(db, inngest_client(settings), timing)
    return None


def inngest_client(settings: Settings) -> inngest.Inngest:
    """The client for Inngest Cloud or a self-hosted Inngest, from the INNGEST_* settings."""
    from workflows.production import inngest_client as production_inngest_client

    return production_inngest_client(
        event_key=_secret(settings.inngest_event_key),
        signing_key=_secret(settings.inngest_signing_key),
        base_url=settings.inngest_base_url,
        dev=settings.inngest_dev,
    )


def llm(settings: Settings) -> LLM:
    """The model that writes summaries: Claude when an API key is set, else the offline summarizer."""
    key = _secret(settings.anthropic_api_key)
    if not key:
        return OfflineLLM()
    from workflows.anthropic_llm import AnthropicLLM

    return AnthropicLLM(key, settings.ai_model, settings.ai_max_tokens, settings.ai_timeout)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def quiet_http_client_logs() -> None:
    """httpx logs every request at INFO; the embedded runner makes one per step over its in-process transport,
    which would bury the server's own log lines."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


LogFormat = Literal["text", "json"]


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC), level, logger, message, and the traceback as `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_config(log_format: LogFormat) -> dict[str, Any]:
    """The logging configuration of every PipeCD process, for `logging.config.dictConfig` and uvicorn's
    `log_config`: uvicorn's own, with every other logger (ours, the mcp SDK's, ...) through its handler.

    `text` is uvicorn's format (`INFO:     message`); `json` writes one JSON object a line (JsonFormatter)."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    if log_format == "json":
        config["formatters"] = {name: {"()": f"{__name__}.JsonFormatter"} for name in config["formatters"]}
    config["root"] = {"handlers": ["default"], "level": "INFO"}
    return config


def configure_logging(log_format: LogFormat) -> dict[str, Any]:
    """Log every line in one format (see `log_config`), which it returns for uvicorn. It replaces the root
    logger's handlers, among them the rich console handler the mcp SDK installs when nothing is configured
    (its boxed, wrapped, multi-line output); configured first, the SDK leaves logging alone."""
    config = log_config(log_format)
    logging.config.dictConfig(config)
    return config
