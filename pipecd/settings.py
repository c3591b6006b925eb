"""Settings, from the environment (and an optional `.env`). Nothing here is required for local use:
with no configuration PipeCD runs on an embedded Postgres with a generated development secret."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from limits import parse_many
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from graphql_api.options import Limits
from mcp_server.options import DEFAULT_RATE_LIMIT
from services.kernel.ratelimit import MEMORY, storage
from workflows.anthropic_llm import DEFAULT_MODEL

# GraphQL requests per user: a UI loads a page with a handful of requests, so its budget is larger than an agent's.
DEFAULT_GRAPHQL_RATE_LIMIT = "600/minute"

# The issuer of a Supabase project started locally by the Supabase CLI.
LOCAL_SUPABASE_ISSUER = "http://127.0.0.1:54321/auth/v1"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    env: Literal["development", "test", "production"] = Field(
        "development", validation_alias=AliasChoices("PIPECD_ENV"), description="Deployment environment."
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        validation_alias=AliasChoices("PIPECD_LOG_FORMAT"),
        description="Log lines as uvicorn writes them (`text`), or one JSON object a line (`json`).",
    )
    state_dir: Path = Field(
        Path(".pipecd"),
        validation_alias=AliasChoices("PIPECD_STATE_DIR"),
        description="Folder for local state: the embedded database and the development JWT secret.",
    )
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL"),
        description="Admin connection (migrations, bootstrap). Unset: the embedded Postgres.",
    )
    app_database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("PIPECD_APP_DATABASE_URL"),
        description="The app's pool login (must be `authenticator`). Unset: DATABASE_URL's server as authenticator.",
    )
    authenticator_password: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("PIPECD_AUTHENTICATOR_PASSWORD"),
        description="Password of the `authenticator` login when the server requires one.",
    )
    db_prepare_statements: bool = Field(
        True,
        validation_alias=AliasChoices("PIPECD_DB_PREPARE_STATEMENTS"),
        description="Server-side prepared statements; turn off behind a transaction-mode pooler.",
    )
    db_pool_max: int = Field(10, validation_alias=AliasChoices("PIPECD_DB_POOL_MAX"), ge=1)
    db_pool_timeout: float = Field(
        5.0,
        validation_alias=AliasChoices("PIPECD_DB_POOL_TIMEOUT"),
        gt=0,
        description="Seconds a request waits for a free database connection before answering 'unavailable'.",
    )
    db_statement_timeout: float = Field(
        8.0,
        validation_alias=AliasChoices("PIPECD_DB_STATEMENT_TIMEOUT"),
        gt=0,
        description="Seconds any one statement of the app may run (as Supabase's `authenticated` role).",
    )
    count_limit: int = Field(
        1000,
        validation_alias=AliasChoices("PIPECD_COUNT_LIMIT"),
        ge=1,
        le=1_000_000,
        description="Lists count their matches up to this many; past it the total is shown as a lower bound "
                    "(GraphQL `totalCountCapped`, MCP `\"1000+\"`).",
    )

    jwt_secret: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("SUPABASE_JWT_SECRET", "PIPECD_JWT_SECRET"),
        description="HS256 secret of the Supabase project. Unset outside production: a generated local secret.",
    )
    jwt_issuer: str | None = Field(None, validation_alias=AliasChoices("PIPECD_JWT_ISSUER"))
    jwks_url: str | None = Field(None, validation_alias=AliasChoices("PIPECD_JWKS_URL"))
    supabase_url: str | None = Field(None, validation_alias=AliasChoices("SUPABASE_URL"))
    supabase_service_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SERVICE_KEY")
    )

    # GraphQL limits (defaults in graphql_api.options.Limits): checked before any resolver or SQL runs.
    graphql_max_depth: int = Field(Limits.max_depth, validation_alias=AliasChoices("PIPECD_GRAPHQL_MAX_DEPTH"), ge=1)
    graphql_max_tokens: int = Field(Limits.max_tokens, validation_alias=AliasChoices("PIPECD_GRAPHQL_MAX_TOKENS"), ge=1)
    graphql_max_aliases: int = Field(
        Limits.max_aliases, validation_alias=AliasChoices("PIPECD_GRAPHQL_MAX_ALIASES"), ge=0
    )
    graphql_max_cost: int = Field(Limits.max_cost, validation_alias=AliasChoices("PIPECD_GRAPHQL_MAX_COST"), ge=1)
    graphql_max_body_bytes: int = Field(
        Limits.max_body_bytes, validation_alias=AliasChoices("PIPECD_GRAPHQL_MAX_BODY_BYTES"), ge=1024
    )

    public_url: str = Field(
        "http://127.0.0.1:8000",
        validation_alias=AliasChoices("PIPECD_PUBLIC_URL"),
        description="Where clients reach PipeCD: the MCP endpoint is this plus /mcp.",
    )
    mcp_allowed_hosts: str | None = Field(
        None,
        validation_alias=AliasChoices("PIPECD_MCP_ALLOWED_HOSTS"),
        description="Comma-separated Host values /mcp accepts ('name:*' for any port). Unset: the public URL's "
        "host, plus loopback outside production.",
    )
    mcp_allowed_origins: str | None = Field(
        None,
        validation_alias=AliasChoices("PIPECD_MCP_ALLOWED_ORIGINS"),
        description="Comma-separated browser Origins /mcp accepts. Unset: the public URL's origin, plus loopback "
        "outside production.",
    )
    mcp_rate_limit: str = Field(
        DEFAULT_RATE_LIMIT,
        validation_alias=AliasChoices("PIPECD_MCP_RATE_LIMIT"),
        description="MCP requests (tool calls, resource reads, prompts, completions) per user, e.g. '120/minute' "
        "or '10/second;1000/hour'.",
    )
    graphql_rate_limit: str = Field(
        DEFAULT_GRAPHQL_RATE_LIMIT,
        validation_alias=AliasChoices("PIPECD_GRAPHQL_RATE_LIMIT"),
        description="GraphQL requests per user, a budget of its own: an agent using up its MCP budget does not "
        "lock its user out of the app.",
    )
    rate_limit_storage: str = Field(
        MEMORY,
        validation_alias=AliasChoices("PIPECD_RATE_LIMIT_STORAGE"),
        description="Where rate limits are counted: 'memory://' (each process alone) or 'redis://host:6379/0' "
        "(one budget shared by every process and replica).",
    )

    # Workflows: which engine runs the Inngest functions, and the functions' own settings.
    workflows: Literal["auto", "embedded", "inngest", "off"] = Field(
        "auto",
        validation_alias=AliasChoices("PIPECD_WORKFLOWS"),
        description="Which engine runs the workflow functions: 'inngest' (Inngest Cloud or a self-hosted Inngest, "
        "configured by the INNGEST_* variables), 'embedded' (the built-in runner on PipeCD's own database), 'off' "
        "(events stay in the outbox). 'auto': inngest when any INNGEST_* variable below is set, else embedded.",
    )
    inngest_event_key: SecretStr | None = Field(None, validation_alias=AliasChoices("INNGEST_EVENT_KEY"))
    inngest_signing_key: SecretStr | None = Field(None, validation_alias=AliasChoices("INNGEST_SIGNING_KEY"))
    inngest_base_url: str | None = Field(None, validation_alias=AliasChoices("INNGEST_BASE_URL"))
    inngest_dev: str | None = Field(None, validation_alias=AliasChoices("INNGEST_DEV"))
    inngest_unauthed_sync: bool = Field(
        False,
        validation_alias=AliasChoices("PIPECD_INNGEST_UNAUTHED_SYNC"),
        description="Let an unsigned PUT to /api/inngest sync the app (some self-hosted setups sync that way). "
        "The registered URL stays pinned to PIPECD_PUBLIC_URL either way.",
    )
    relay_interval: float = Field(
        2.0,
        validation_alias=AliasChoices("PIPECD_RELAY_INTERVAL"),
        gt=0,
        description="Seconds between outbox sweeps; a commit wakes the relay at once in between.",
    )
    outbox_retention_days: int = Field(
        7, validation_alias=AliasChoices("PIPECD_OUTBOX_RETENTION_DAYS"), ge=1,
        description="Days a dispatched outbox row is kept before the daily maintenance prunes it.",
    )
    runs_retention_days: int = Field(
        14, validation_alias=AliasChoices("PIPECD_RUNS_RETENTION_DAYS"), ge=1,
        description="Days the embedded runner keeps finished runs (completed or failed) with their steps.",
    )
    idempotency_retention_days: int = Field(
        30, validation_alias=AliasChoices("PIPECD_IDEMPOTENCY_RETENTION_DAYS"), ge=1,
        description="Days an idempotency key is remembered: a retry with the same key within them has one effect.",
    )
    followup_days: int = Field(
        2, validation_alias=AliasChoices("PIPECD_FOLLOWUP_DAYS"), ge=0, le=365,
        description="A new deal's owner gets a follow-up task due this many days later; 0 turns it off.",
    )
    reminder_cron: str = Field(
        "*/5 * * * *", validation_alias=AliasChoices("PIPECD_REMINDER_CRON"),
        description="When activity reminders are checked (cron, UTC).",
    )
    maintenance_cron: str = Field(
        "17 3 * * *", validation_alias=AliasChoices("PIPECD_MAINTENANCE_CRON"),
        description="When the daily maintenance runs (cron, UTC).",
    )
    erasure_settle_seconds: int = Field(
        600, validation_alias=AliasChoices("PIPECD_ERASURE_SETTLE_SECONDS"), ge=0, le=86400,
        description="A GDPR erasure waits this long after erasing before it verifies, so work in flight (AI "
                    "summaries) finishes first.",
    )
    workflow_backoff_scale: float = Field(
        1.0, validation_alias=AliasChoices("PIPECD_WORKFLOW_BACKOFF_SCALE"), ge=0,
        description="The embedded runner's retry delays are Inngest's table times this (0: retry at once).",
    )

    # AI: summaries by Claude when a key is set, else by the offline summarizer.
    anthropic_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("ANTHROPIC_API_KEY"),
        description="Anthropic API key; unset: summaries come from the offline summarizer (model 'offline').",
    )
    ai_model: str = Field(
        DEFAULT_MODEL, validation_alias=AliasChoices("PIPECD_AI_MODEL"), min_length=1, max_length=100,
        description="The Claude model that writes summaries.",
    )
    ai_max_tokens: int = Field(
        800, validation_alias=AliasChoices("PIPECD_AI_MAX_TOKENS"), ge=100, le=8000,
        description="Most tokens a summary's answer may take.",
    )
    ai_timeout: float = Field(
        60.0, validation_alias=AliasChoices("PIPECD_AI_TIMEOUT"), gt=0, le=600,
        description="Seconds one model request may take.",
    )
    ai_context_tokens: int = Field(
        6000, validation_alias=AliasChoices("PIPECD_AI_CONTEXT_TOKENS"), ge=500, le=100000,
        description="Budget of the CRM data given to the model, in (conservatively estimated) tokens.",
    )
    ai_concurrency_per_user: int = Field(
        1, validation_alias=AliasChoices("PIPECD_AI_CONCURRENCY_PER_USER"), ge=1,
        description="Summaries of one user generated at the same time.",
    )
    ai_concurrency: int = Field(
        4, validation_alias=AliasChoices("PIPECD_AI_CONCURRENCY"), ge=1,
        description="Summaries generated at the same time in all.",
    )
    digest_cron: str = Field(
        "0 7 * * 1", validation_alias=AliasChoices("PIPECD_DIGEST_CRON"),
        description="When the weekly pipeline digests are made (cron, UTC; default Monday 07:00).",
    )

    @field_validator("mcp_rate_limit", "graphql_rate_limit")
    @classmethod
    def _rate_limit_parses(cls, value: str) -> str:
        parse_many(value)  # ValueError names the bad part
        return value

    @field_validator("rate_limit_storage")
    @classmethod
    def _rate_limit_storage_usable(cls, value: str) -> str:
        storage(value)  # ValueError for an unknown scheme or a missing client library; connects lazily
        return value

    @property
    def mcp_confirmation_key(self) -> bytes | None:
        """Signs MCP confirmations (e.g. of deletes), derived from the JWT secret so every process of a
        deployment shares it; without an HS256 secret, each process makes its own."""
        secret = self.effective_jwt_secret
        if secret is None:
            return None
        return hmac.new(secret.encode(), b"pipecd mcp confirmations", hashlib.sha256).digest()

    @property
    def mcp_resource_url(self) -> str:
        return self.public_url.rstrip("/") + "/mcp"

    @property
    def auth_issuer(self) -> str:
        """The authorization server MCP clients are sent to for tokens: the Supabase Auth issuer."""
        if self.jwt_issuer:
            return self.jwt_issuer
        if self.supabase_url:
            return self.supabase_url.rstrip("/") + "/auth/v1"
        return LOCAL_SUPABASE_ISSUER

    @property
    def effective_mcp_allowed_hosts(self) -> list[str]:
        if self.mcp_allowed_hosts is not None:
            return _items(self.mcp_allowed_hosts)
        public = urlsplit(self.public_url)
        hosts = [public.netloc, f"{public.hostname}:*"]
        if not self.is_production:
            hosts += ["127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*", "[::1]", "[::1]:*"]
        return list(dict.fromkeys(hosts))

    @property
    def effective_mcp_allowed_origins(self) -> list[str]:
        if self.mcp_allowed_origins is not None:
            return _items(self.mcp_allowed_origins)
        public = urlsplit(self.public_url)
        origins = [f"{public.scheme}://{public.netloc}"]
        if not self.is_production:
            origins += ["http://127.0.0.1:*", "http://localhost:*"]
        return list(dict.fromkeys(origins))

    @property
    def workflow_engine(self) -> Literal["embedded", "inngest", "off"]:
        if self.workflows != "auto":
            return self.workflows
        configured = (self.inngest_event_key, self.inngest_signing_key, self.inngest_base_url, self.inngest_dev)
        return "inngest" if any(v is not None for v in configured) else "embedded"

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def embedded_data_dir(self) -> Path:
        return self.state_dir.resolve() / "pgdata"

    @property
    def effective_jwks_url(self) -> str | None:
        if self.jwks_url:
            return self.jwks_url
        if self.supabase_url:
            return self.supabase_url.rstrip("/") + "/auth/v1/.well-known/jwks.json"
        return None

    @cached_property
    def effective_jwt_secret(self) -> str | None:
        """The configured secret; outside production, a local one generated once into the state folder."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        if self.is_production:
            return None
        path = self.state_dir / "jwt_secret"
        if not path.exists():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def get_settings() -> Settings:
    return Settings()
