"""Inngest request signatures: `t=<unix seconds>&s=<hex HMAC-SHA256>` over the JCS-canonical body and `t`, keyed
with the signing key (its `signkey-<env>-` prefix removed) as text."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time

import jcs

_PREFIX = re.compile(r"^signkey-\w+-")


def sign(body: bytes, signing_key: str, unix_seconds: int | None = None) -> str:
    """The X-Inngest-Signature header value for a request with this body."""
    t = round(time.time()) if unix_seconds is None else unix_seconds
    canonical = jcs.canonicalize(json.loads(body)) if body else b""
    mac = hmac.new(_PREFIX.sub("", signing_key).encode(), canonical, hashlib.sha256)
    mac.update(str(t).encode())
    return f"t={t}&s={mac.hexdigest()}"
