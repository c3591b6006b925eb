"""TokenVerifier with real keys: HS256 with the project secret, RS256/ES256 from a JWKS URL faked at the transport."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from pipecd.settings import Settings
from services.kernel import tokens
from services.kernel.errors import Unauthenticated
from services.kernel.tokens import TokenVerifier

SECRET = "test-project-jwt-secret-with-at-least-32-bytes"
OTHER_SECRET = "another-project-jwt-secret-with-32-bytes-too"
JWKS_URL = "https://project.supabase.test/auth/v1/.well-known/jwks.json"
ISSUER = "https://project.supabase.test/auth/v1"
USER_ID = "6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ROTATED_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    return {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": "RS256", "use": "sig"}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    return {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": "ES256", "use": "sig"}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": USER_ID, "aud": "authenticated", "role": "authenticated", "iat": now, "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made_token(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A token built without PyJWT (which refuses to make the dangerous ones)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


@dataclass
class FakeJwks:
    """The JWKS endpoint: serves `keys`, or `status` when it is down; counts requests."""

    keys: list[dict[str, Any]]
    status: int = 200
    requests: list[httpx.Request] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.status != 200:
            return httpx.Response(self.status, json={"error": "unavailable"})
        return httpx.Response(200, json={"keys": self.keys})

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


class FakeClock:
    """Stands in for the `time` module inside services.kernel.tokens, so the JWKS cache ages on demand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return time.time()


@pytest.fixture
def jwks() -> FakeJwks:
    return FakeJwks([rsa_jwk(RSA_KEY, "rsa-1"), ec_jwk(EC_KEY, "ec-1")])


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(tokens, "time", fake)
    return fake


def jwks_verifier(jwks: FakeJwks, **kwargs: Any) -> TokenVerifier:
    return TokenVerifier(jwks_url=JWKS_URL, http_client=jwks.client(), **kwargs)


def rs256(payload: dict[str, Any], kid: str = "rsa-1", key: rsa.RSAPrivateKey = RSA_KEY) -> str:
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


# Accepted -------------------------------------------------------------------------------------------------


async def test_valid_hs256_token_gives_its_claims():
    payload = claims(email="bob@example.com")
    verifier = TokenVerifier(hs256_secret=SECRET)
    assert await verifier.verify(jwt.encode(payload, SECRET, algorithm="HS256")) == payload


async def test_valid_rs256_token_with_kid_verifies_against_the_jwks(jwks):
    payload = claims()
    assert await jwks_verifier(jwks).verify(rs256(payload)) == payload
    assert [str(r.url) for r in jwks.requests] == [JWKS_URL]


async def test_valid_es256_token_verifies_against_the_jwks(jwks):
    payload = claims()
    token = jwt.encode(payload, EC_KEY, algorithm="ES256", headers={"kid": "ec-1"})
    assert await jwks_verifier(jwks).verify(token) == payload


async def test_token_from_the_configured_issuer_is_accepted():
    payload = claims(iss=ISSUER)
    verifier = TokenVerifier(hs256_secret=SECRET, issuer=ISSUER)
    assert await verifier.verify(jwt.encode(payload, SECRET, algorithm="HS256")) == payload


async def test_verifier_with_secret_and_jwks_accepts_both_kinds(jwks):
    verifier = jwks_verifier(jwks, hs256_secret=SECRET)
    assert (await verifier.verify(jwt.encode(claims(), SECRET, algorithm="HS256")))["sub"] == USER_ID
    assert (await verifier.verify(rs256(claims())))["sub"] == USER_ID


# Refused --------------------------------------------------------------------------------------------------


async def refusal(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        await verifier.verify(token)
    return caught.value.message


@pytest.mark.parametrize("with_jwks", [False, True], ids=["secret-only", "secret-and-jwks"])
async def test_alg_none_token_is_refused(jwks, with_jwks):
    token = hand_made_token({"alg": "none", "typ": "JWT"}, claims(), lambda _: b"")
    assert token.endswith(".")
    verifier = jwks_verifier(jwks, hs256_secret=SECRET) if with_jwks else TokenVerifier(hs256_secret=SECRET)
    assert await refusal(verifier, token) == "token algorithm 'none' is not accepted"
    assert jwks.requests == []


def hs256_signed_with_rsa_public_key() -> str:
    """The HS/RS confusion attack: HMAC over the token with the (public) RSA key PEM as the secret."""
    return hand_made_token(
        {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"},
        claims(),
        lambda data: hmac.new(RSA_PUBLIC_PEM, data, hashlib.sha256).digest(),
    )


async def test_hs256_token_signed_with_the_public_key_fails_against_the_hs_secret(jwks):
    verifier = jwks_verifier(jwks, hs256_secret=OTHER_SECRET)
    assert await refusal(verifier, hs256_signed_with_rsa_public_key()) == "token signature is invalid"
    assert jwks.requests == []  # an HS256 token never even reaches for the JWKS keys


async def test_hs256_token_signed_with_the_public_key_is_refused_without_an_hs_secret(jwks):
    verifier = jwks_verifier(jwks)
    assert await refusal(verifier, hs256_signed_with_rsa_public_key()) == "HS256 tokens are not accepted here"
    assert jwks.requests == []


async def test_tampered_payload_is_refused(jwks):
    header, _, signature = rs256(claims()).split(".")
    forged_payload = b64url(json.dumps(claims(sub=str(uuid.uuid4()))).encode())
    verifier = jwks_verifier(jwks)
    assert await refusal(verifier, f"{header}.{forged_payload}.{signature}") == "token signature is invalid"


async def test_tampered_hs256_payload_is_refused():
    header, _, signature = jwt.encode(claims(), SECRET, algorithm="HS256").split(".")
    forged_payload = b64url(json.dumps(claims(role="service_role")).encode())
    verifier = TokenVerifier(hs256_secret=SECRET)
    assert await refusal(verifier, f"{header}.{forged_payload}.{signature}") == "token signature is invalid"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"exp": -60}, "token expired"),
        ({"aud": "service"}, "token audience is not 'authenticated'"),
        ({"exp": None}, "token lacks the 'exp' claim"),
        ({"sub": None}, "token lacks the 'sub' claim"),
        ({"aud": None}, "token lacks the 'aud' claim"),
    ],
    ids=["expired", "wrong-audience", "missing-exp", "missing-sub", "missing-aud"],
)
async def test_token_with_bad_claims_is_refused(payload, message):
    """The claims are made when the test runs (a suite can take longer than a token lives); `exp` is relative."""
    if payload.get("exp") is not None:
        payload = {**payload, "exp": int(time.time()) + payload["exp"]}
    verifier = TokenVerifier(hs256_secret=SECRET)
    assert await refusal(verifier, jwt.encode(claims(**payload), SECRET, algorithm="HS256")) == message


@pytest.mark.parametrize(
    ("issuer", "message"),
    [("https://evil.example/auth/v1", "token issuer is not trusted"), (None, "token lacks the 'iss' claim")],
    ids=["other-issuer", "no-issuer"],
)
async def test_token_from_another_issuer_is_refused_when_an_issuer_is_configured(issuer, message):
    verifier = TokenVerifier(hs256_secret=SECRET, issuer=ISSUER)
    assert await refusal(verifier, jwt.encode(claims(iss=issuer), SECRET, algorithm="HS256")) == message


async def test_token_signed_by_an_unknown_kid_is_refused(jwks):
    token = rs256(claims(), kid="rsa-unknown", key=ROTATED_RSA_KEY)
    assert await refusal(jwks_verifier(jwks), token) == "token signed by an unknown key"


async def test_rs256_token_whose_kid_names_an_ec_key_is_refused(jwks):
    token = rs256(claims(), kid="ec-1")
    assert await refusal(jwks_verifier(jwks), token) == "token algorithm does not match its key"


async def test_asymmetric_token_is_refused_by_a_secret_only_verifier():
    verifier = TokenVerifier(hs256_secret=SECRET)
    assert await refusal(verifier, rs256(claims())) == "RS256 tokens are not accepted here"


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "not a token at all"])
async def test_malformed_token_is_refused(token):
    assert await refusal(TokenVerifier(hs256_secret=SECRET), token) == "malformed token"


async def test_empty_token_is_refused():
    assert await refusal(TokenVerifier(hs256_secret=SECRET), "") == "missing bearer token"


async def test_first_jwks_fetch_failing_refuses_asymmetric_tokens():
    down = FakeJwks([], status=500)
    assert await refusal(jwks_verifier(down), rs256(claims())) == "signing keys are unavailable"


def test_verifier_needs_a_secret_or_a_jwks_url():
    with pytest.raises(ValueError, match="needs a JWT secret, a JWKS URL, or both"):
        TokenVerifier()


# JWKS caching ---------------------------------------------------------------------------------------------


async def test_two_verifications_fetch_the_jwks_once(jwks):
    verifier = jwks_verifier(jwks)
    await verifier.verify(rs256(claims()))
    await verifier.verify(jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "ec-1"}))
    assert len(jwks.requests) == 1


async def test_unknown_kids_refetch_the_jwks_at_most_once_per_30_seconds(jwks, clock):
    verifier = jwks_verifier(jwks)
    await verifier.verify(rs256(claims()))
    unknown = rs256(claims(), kid="rsa-unknown", key=ROTATED_RSA_KEY)
    for _ in range(3):
        assert await refusal(verifier, unknown) == "token signed by an unknown key"
    assert len(jwks.requests) == 1  # a flood of made-up kids cannot hammer the JWKS endpoint

    clock.now += 31
    assert await refusal(verifier, unknown) == "token signed by an unknown key"
    assert await refusal(verifier, unknown) == "token signed by an unknown key"
    assert len(jwks.requests) == 2


async def test_rotated_key_is_picked_up_by_one_refetch(jwks, clock):
    verifier = jwks_verifier(jwks)
    await verifier.verify(rs256(claims()))
    jwks.keys = [rsa_jwk(ROTATED_RSA_KEY, "rsa-2"), *jwks.keys]
    clock.now += 31
    payload = claims()
    assert await verifier.verify(rs256(payload, kid="rsa-2", key=ROTATED_RSA_KEY)) == payload
    assert len(jwks.requests) == 2


async def test_cached_keys_stay_usable_when_the_jwks_endpoint_fails_within_the_ttl(jwks, clock):
    verifier = jwks_verifier(jwks)
    await verifier.verify(rs256(claims()))
    jwks.status = 500
    clock.now += 60  # past the unknown-kid guard, well within the 600 s TTL

    assert await refusal(verifier, rs256(claims(), kid="rsa-unknown")) == "token signed by an unknown key"
    assert len(jwks.requests) == 2  # the refetch was tried and failed
    payload = claims()
    assert await verifier.verify(rs256(payload)) == payload
    assert len(jwks.requests) == 2


async def test_stale_jwks_is_refetched_after_the_ttl(jwks, clock):
    verifier = jwks_verifier(jwks, jwks_ttl_seconds=600)
    await verifier.verify(rs256(claims()))
    clock.now += 601
    await verifier.verify(rs256(claims()))
    assert len(jwks.requests) == 2


async def test_a_failing_jwks_endpoint_is_retried_at_most_every_30_seconds_past_the_ttl(jwks, clock):
    verifier = jwks_verifier(jwks, jwks_ttl_seconds=600)
    await verifier.verify(rs256(claims()))
    jwks.status = 500
    clock.now += 601
    payload = claims()
    assert await verifier.verify(rs256(payload)) == payload  # stale keys still serve
    assert await verifier.verify(rs256(payload)) == payload
    assert len(jwks.requests) == 2  # one failed refresh, not one per request
    clock.now += 31
    jwks.status = 200
    fresh = claims(email="another@example.com")  # a token not verified yet (a verified one is kept a minute)
    assert await verifier.verify(rs256(fresh)) == fresh
    assert len(jwks.requests) == 3


async def test_jwks_entries_for_encryption_or_symmetric_keys_are_ignored():
    sneaky = FakeJwks(
        [
            {**rsa_jwk(RSA_KEY, "enc-1"), "use": "enc"},
            {"kty": "oct", "kid": "oct-1", "alg": "HS256", "k": b64url(OTHER_SECRET.encode())},
        ]
    )
    verifier = jwks_verifier(sneaky)
    assert await refusal(verifier, rs256(claims(), kid="enc-1")) == "token signed by an unknown key"
    hs_with_kid = jwt.encode(claims(), OTHER_SECRET, algorithm="HS256", headers={"kid": "oct-1"})
    assert await refusal(verifier, hs_with_kid) == "HS256 tokens are not accepted here"


# Settings -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("supabase_url", ["https://abc.supabase.co", "https://abc.supabase.co/"])
def test_jwks_url_follows_supabase_url(monkeypatch, supabase_url):
    monkeypatch.delenv("PIPECD_JWKS_URL", raising=False)
    monkeypatch.setenv("SUPABASE_URL", supabase_url)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.effective_jwks_url == "https://abc.supabase.co/auth/v1/.well-known/jwks.json"


def test_explicit_jwks_url_wins_over_supabase_url(monkeypatch):
    monkeypatch.setenv("SUPABASE_URL", "https://abc.supabase.co")
    monkeypatch.setenv("PIPECD_JWKS_URL", JWKS_URL)
    assert Settings(_env_file=None).effective_jwks_url == JWKS_URL  # type: ignore[call-arg]


# Verified tokens kept for a while ---------------------------------------------------------------------------


async def test_a_token_verified_a_moment_ago_is_not_decoded_again(monkeypatch):
    payload = claims(email="bob@example.com")
    token = jwt.encode(payload, SECRET, algorithm="HS256")
    verifier = TokenVerifier(hs256_secret=SECRET)
    decoded: list[str] = []
    decode = jwt.decode
    monkeypatch.setattr(tokens.jwt, "decode", lambda *a, **k: decoded.append("once") or decode(*a, **k))
    first = await verifier.verify(token)
    first["sub"] = "changed by the caller"
    assert await verifier.verify(token) == payload
    assert decoded == ["once"]
    assert await verifier.verify(jwt.encode(claims(email="ann@example.com"), SECRET, algorithm="HS256"))
    assert decoded == ["once", "once"]


async def test_a_kept_token_still_expires_at_its_exp_and_is_checked_again_after_a_minute(clock, monkeypatch):
    verifier = TokenVerifier(hs256_secret=SECRET)
    soon = jwt.encode(claims(exp=int(time.time()) + 1), SECRET, algorithm="HS256")
    await verifier.verify(soon)
    await asyncio.sleep(2)
    assert await refusal(verifier, soon) == "token expired"

    later = jwt.encode(claims(), SECRET, algorithm="HS256")
    await verifier.verify(later)
    decoded: list[str] = []
    decode = jwt.decode
    monkeypatch.setattr(tokens.jwt, "decode", lambda *a, **k: decoded.append("again") or decode(*a, **k))
    clock.now += tokens.VERIFIED_FOR
    await verifier.verify(later)
    assert decoded == ["again"]


async def test_at_most_so_many_verified_tokens_are_kept(monkeypatch):
    monkeypatch.setattr(tokens, "VERIFIED_KEPT", 3)
    verifier = TokenVerifier(hs256_secret=SECRET)
    for n in range(5):
        await verifier.verify(jwt.encode(claims(email=f"u{n}@example.com"), SECRET, algorithm="HS256"))
    assert len(verifier._verified) == 3
