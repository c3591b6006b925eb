"""Inngest request signatures, written from the protocol rather than imported from the SDK's private modules.

An Inngest server signs each request it sends to an app with the header

    X-Inngest-Signature: t=<unix seconds>&s=<hex HMAC-SHA256>

keyed by the signing key without its `signkey-<env>-` prefix (the remaining hex text, as UTF-8; it is not
hex-decoded). A request's MAC covers the JCS (RFC 8785) canonical form of the JSON body followed by `t` in decimal;
an empty body contributes nothing. The SDK signs its responses the same way, but over the raw response bytes.

`verify` also bounds the timestamp's age, which the SDK (0.5.x) does not: without that bound a captured request
could be replayed forever. A header without `t` is refused for the same reason (the SDK would accept a MAC over
the body alone).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from urllib.parse import parse_qs

import jcs

HEADER = "x-inngest-signature"
MAX_AGE_SECONDS = 300  # the SDK specification's bound: "SHOULD reject t older than 5 minutes"

_KEY_PREFIX = re.compile(r"^signkey-\w+-")
_DIGITS = re.compile(r"[0-9]{1,12}")
_HEX_MAC = re.compile(r"[0-9a-f]{64}")


class SignatureError(ValueError):
    """A signature header that is missing a part, malformed, too old, from the future, or wrong."""


def sign(body: bytes | object, key: str, t: int | None = None) -> str:
    """The header value signing a request with `body` (JSON bytes, or an object to be sent as JSON) at `t`."""
    t = int(time.time()) if t is None else t
    return f"t={t}&s={_mac(canonical(body), key, t)}"


def verify(
    body: bytes | object,
    header: str | None,
    key: str,
    *,
    max_age: int = MAX_AGE_SECONDS,
    now: float | None = None,
) -> None:
    """Raise SignatureError unless `header` signs the request `body` with `key` within `max_age` of `now`."""
    _check(canonical(body), header, key, max_age=max_age, now=now)


def verify_response(
    body: bytes, header: str | None, key: str, *, max_age: int = MAX_AGE_SECONDS, now: float | None = None
) -> None:
    """Raise SignatureError unless `header` signs the raw response `body` with `key` within `max_age` of `now`."""
    _check(body, header, key, max_age=max_age, now=now)


def parse(header: str | None, *, max_age: int = MAX_AGE_SECONDS, now: float | None = None) -> tuple[int, str]:
    """The header's `t` and `s`, well formed, with `t` within `max_age` seconds of `now` either way (a clock may
    be a little ahead); raises SignatureError. The MAC itself is not checked here."""
    if not header:
        raise SignatureError("the request is not signed")
    parsed = parse_qs(header, keep_blank_values=True)
    if any(len(values) > 1 for values in parsed.values()):
        raise SignatureError("the signature repeats a part")  # readers disagree on which one counts
    raw_t, mac = (parsed.get(name, [None])[0] for name in ("t", "s"))
    if raw_t is None:
        raise SignatureError("the signature has no timestamp")
    if not _DIGITS.fullmatch(raw_t):
        raise SignatureError("the signature's timestamp is not a number of seconds")
    if mac is None or not _HEX_MAC.fullmatch(mac):
        raise SignatureError("the signature has no well-formed MAC")
    t = int(raw_t)
    age = (time.time() if now is None else now) - t
    if age > max_age:
        raise SignatureError(f"the signature is {int(age)} s old; at most {max_age} s is accepted")
    if age < -max_age:
        raise SignatureError("the signature's timestamp is in the future")
    return t, mac


def canonical(body: bytes | object) -> bytes:
    """What a request signature covers: the JCS form of the JSON body (empty for an empty body)."""
    if isinstance(body, bytes | bytearray):
        if not body:
            return b""
        try:
            body = json.loads(body)
        except ValueError as exc:
            raise SignatureError("a signed body must be JSON") from exc
    return jcs.canonicalize(body)


def signing_secret(key: str) -> bytes:
    """The HMAC key: the signing key without its `signkey-<env>-` prefix, as UTF-8 text."""
    return _KEY_PREFIX.sub("", key, count=1).encode()


def _check(message: bytes, header: str | None, key: str, *, max_age: int, now: float | None) -> None:
    t, given = parse(header, max_age=max_age, now=now)
    if not hmac.compare_digest(given.encode(), _mac(message, key, t).encode()):
        raise SignatureError("the signature does not match")


def _mac(message: bytes, key: str, t: int) -> str:
    mac = hmac.new(signing_secret(key), message, hashlib.sha256)
    mac.update(str(t).encode())
    return mac.hexdigest()
