"""Verifying Supabase access tokens: HS256 with the project's secret, or asymmetric keys from a JWKS URL.

The algorithm decides the key source and nothing else can: HS256 is only ever checked against the configured
secret, asymmetric algorithms only against a JWKS key of the matching type, so a token signed with the public
key as an HMAC secret (HS/RS confusion) or with `alg: none` never verifies.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import jwt

from services.kernel.errors import Unauthenticated

if TYPE_CHECKING:
    import httpx

ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"})
AUDIENCE = "authenticated"
_RETRY_SECONDS = 30.0
VERIFIED_FOR = 60.0  # seconds a verified token is taken as verified (a rotated-out signing key stops within this)
VERIFIED_KEPT = 1024


class TokenVerifier:
    def __init__(
        self,
        *,
        hs256_secret: str | None = None,
        jwks_url: str | None = None,
        issuer: str | None = None,
        audience: str = AUDIENCE,
        http_client: httpx.AsyncClient | None = None,
        jwks_ttl_seconds: float = 600.0,
        leeway_seconds: float = 0.0,
    ) -> None:
        if hs256_secret is None and jwks_url is None:
            raise ValueError("a token verifier needs a JWT secret, a JWKS URL, or both")
        self._secret = hs256_secret
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._audience = audience
        self._http = http_client
        self._ttl = jwks_ttl_seconds
        self._leeway = leeway_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._verified: OrderedDict[str, tuple[dict[str, Any], float]] = OrderedDict()

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or Unauthenticated saying why it was refused.

        A client sends the same token with every request for up to an hour: a token verified in the last
        `VERIFIED_FOR` seconds (and not expired since) is taken from memory rather than decoded and checked again,
        which is a good part of a small request's cost. Only verified tokens are kept, at most `VERIFIED_KEPT`."""
        if not token:
            raise Unauthenticated("missing bearer token")
        if (kept := self._verified.get(token)) is not None:
            claims, until = kept
            if time.monotonic() < until and time.time() < claims["exp"] + self._leeway:
                self._verified.move_to_end(token)
                return dict(claims)
            del self._verified[token]
        claims = await self._verify(token)
        self._verified[token] = (dict(claims), time.monotonic() + VERIFIED_FOR)
        if len(self._verified) > VERIFIED_KEPT:
            self._verified.popitem(last=False)
        return claims

    async def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("malformed token") from exc
        alg = header.get("alg")
        if alg == "HS256":
            if self._secret is None:
                raise Unauthenticated("HS256 tokens are not accepted here")
            key: Any = self._secret
        elif alg in ASYMMETRIC_ALGORITHMS:
            if self._jwks_url is None:
                raise Unauthenticated(f"{alg} tokens are not accepted here")
            key = await self._key_for(header.get("kid"), alg)
        else:
            raise Unauthenticated(f"token algorithm {alg!r} is not accepted")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub", "aud"], "verify_iss": self._issuer is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated(f"token audience is not {self._audience!r}") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated("token issuer is not trusted") from exc
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated("token signature is invalid") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"token lacks the {exc.claim!r} claim") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from exc
        return claims

    async def _key_for(self, kid: str | None, alg: str) -> Any:
        stale = time.monotonic() - self._fetched_at > self._ttl
        if stale or (kid not in self._keys and time.monotonic() - self._fetched_at > _RETRY_SECONDS):
            await self._refresh()
        if kid is None and len(self._keys) == 1:
            jwk = next(iter(self._keys.values()))
        elif kid in self._keys:
            jwk = self._keys[kid]
        else:
            raise Unauthenticated("token signed by an unknown key")
        if jwk.algorithm_name != alg:
            raise Unauthenticated("token algorithm does not match its key")
        return jwk.key

    async def _refresh(self) -> None:
        assert self._jwks_url is not None
        import httpx  # only a server with a JWKS URL needs an HTTP client: not imported at every start

        client = self._http or httpx.AsyncClient(timeout=5.0)
        try:
            response = await client.get(self._jwks_url)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            if self._keys:
                # Keep serving the cached keys through an outage, and retry at most every 30 s rather than
                # making every request wait on a failing endpoint.
                self._fetched_at = time.monotonic() - max(self._ttl - _RETRY_SECONDS, 0)
                return
            raise Unauthenticated("signing keys are unavailable") from exc
        finally:
            if self._http is None:
                await client.aclose()
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document.get("keys", []):
            if entry.get("use", "sig") != "sig":
                continue
            try:
                jwk = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # skip key types this library cannot use
            if jwk.algorithm_name in ASYMMETRIC_ALGORITHMS:
                keys[entry.get("kid", "")] = jwk
        self._keys = keys
        self._fetched_at = time.monotonic()
