"""Confirmation tokens for destructive tools: the first call previews and returns a token, the second call
presents it. A token is bound to the user, the tool's arguments and the record's version, signed (HMAC-SHA256)
and short-lived, so it confirms exactly what the user was shown and nothing else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any
from uuid import UUID

from services.kernel.errors import Invalid

TTL_SECONDS = 300


class Confirmations:
    def __init__(self, key: bytes | None = None, *, ttl: int = TTL_SECONDS) -> None:
        # Without a configured key, tokens are only valid in this process.
        self._key = key or secrets.token_bytes(32)
        self.ttl = ttl

    def issue(self, user_id: UUID, action: str, subject: dict[str, Any], state: dict[str, Any]) -> str:
        """A token for `user_id` to do `action` on `subject` (the tool's arguments), carrying `state` (what the
        preview saw, e.g. the record's version) back to the confirming call."""
        body = _encode({"u": str(user_id), "a": action, "s": subject, "x": state, "e": int(time.time()) + self.ttl})
        return f"{body}.{self._sign(body)}"

    def check(self, token: str, user_id: UUID, action: str, subject: dict[str, Any]) -> dict[str, Any]:
        """The state the token carries; Invalid unless it was issued by this server to `user_id` for `action` on
        exactly `subject`, and has not expired."""
        body, _, signature = token.partition(".")
        # Tokens are ASCII; compare_digest raises TypeError (not a mismatch) on str with any other character.
        if not token.isascii() or not signature or not hmac.compare_digest(signature, self._sign(body)):
            raise Invalid("this confirmation is not valid; preview again to get a new one", field="confirmation")
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if (claims["u"], claims["a"], claims["s"]) != (str(user_id), action, subject):
            raise Invalid("this confirmation is for another user or another record; preview again",
                          field="confirmation")
        if claims["e"] < time.time():
            raise Invalid("this confirmation has expired; preview again to get a new one", field="confirmation")
        state: dict[str, Any] = claims["x"]
        return state

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()[:32]


def _encode(data: dict[str, Any]) -> str:
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
