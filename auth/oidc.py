"""Access tokens of an external identity provider (OIDC): RS256/ES256, keys from its JWKS.

Besides its own HS256 tokens (auth.tokens), the gateway accepts tokens signed by a provider's
keys, published as a JWKS at `jwks_url`. The algorithm is pinned per key source: a token goes
to the provider's keys only when its header names RS256 or ES256, and is then checked only
with the JWKS key of its `kid`, with that key's own algorithm (an RSA key verifies RS256 only,
a P-256 key ES256 only; symmetric or other keys in the JWKS are never used). Every other token,
HS256 included, is checked by the gateway's own secret, so a provider's public key can never
serve as an HMAC secret.

Keys are fetched with PyJWT's `PyJWKClient` in a thread of their own (never on the event loop),
kept `cache_seconds`, and fetched again when a token names an unknown `kid` (a rotation) at
most once per `refresh_interval`. A valid token's `sub` (with its issuer) maps to a gateway
account, created on first sight (only after the signature, issuer, audience and times are
verified, so only the provider can make accounts); its role comes from `role_claim`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import jwt
from jwt import PyJWKClient, PyJWKClientConnectionError, PyJWKClientError

from auth.tokens import InvalidToken, Principal, Token, TokenExpired

#: what a provider's token may be signed with; the key of its `kid` decides which one applies
ALGORITHMS = ("RS256", "ES256")
NAME_CLAIMS = ("preferred_username", "email", "name")


class KeysUnavailable(Exception):
    """The identity provider's keys could not be fetched (its JWKS URL failed or timed out)."""


class ExternalAccount(Protocol):
    @property
    def id(self) -> str: ...


class ExternalAccounts(Protocol):
    async def ensure_external(self, issuer: str, subject: str, name: str, role: str) -> ExternalAccount:
        """The account of `subject` at `issuer`, created if there is none, with `name` and `role`
        stored as given."""
        ...


def is_external(raw: str) -> bool:
    """Whether `raw`'s (unverified) header names an algorithm of the identity provider."""
    try:
        return jwt.get_unverified_header(raw).get("alg") in ALGORITHMS
    except jwt.PyJWTError:
        return False


def role_of(claims: dict[str, Any], claim: str, admin_values: tuple[str, ...]) -> str:
    """'admin' when the claim at dotted path `claim` is (or lists) one of `admin_values`, else 'user'."""
    value: Any = claims
    for part in claim.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    values = value if isinstance(value, list) else [value]
    return "admin" if any(isinstance(v, str) and v in admin_values for v in values) else "user"


class ExternalTokenVerifier:
    """Verifies an identity provider's access tokens and names their gateway accounts."""

    MAX_MAPPED = 10_000
    MAPPING_SECONDS = 60.0

    def __init__(self, jwks_url: str, issuer: str, audience: str, accounts: ExternalAccounts,
                 role_claim: str = "role", admin_roles: tuple[str, ...] = ("admin",),
                 cache_seconds: float = 300, refresh_interval: float = 30, timeout: float = 5,
                 leeway: float = 5) -> None:
        self.issuer = issuer
        self.audience = audience
        self.role_claim = role_claim
        self.admin_roles = tuple(admin_roles)
        self.timeout = timeout
        self.leeway = leeway
        self._accounts = accounts
        self._client = PyJWKClient(jwks_url, cache_keys=False, lifespan=cache_seconds, timeout=timeout,
                                   cooldown_duration=refresh_interval)
        # one thread: fetches never run on the event loop, and never more than one at a time
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jwks")
        # (issuer, sub, name, role) -> (account id, fresh until): spares a MongoDB read per request
        self._mapped: OrderedDict[tuple[str, str, str, str], tuple[str, float]] = OrderedDict()

    def handles(self, raw: str) -> bool:
        """Whether `raw` is for this verifier (RS256/ES256) rather than the gateway's own secret."""
        return is_external(raw)

    async def decode(self, raw: str) -> Token:
        """The verified token with its principal mapped to a gateway account; raises InvalidToken
        (TokenExpired when only its time is over), KeysUnavailable when the keys cannot be fetched."""
        try:
            header = jwt.get_unverified_header(raw)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"the token is not valid ({exc})") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token is not valid (an identity provider's token must name its key: kid)")
        key = await self._signing_key(kid)
        if key.algorithm_name not in ALGORITHMS or header.get("alg") != key.algorithm_name:
            raise InvalidToken(f"the token is not valid (key {kid} does not sign {header.get('alg')})")
        try:
            claims = jwt.decode(raw, key.key, algorithms=[key.algorithm_name], issuer=self.issuer,
                                audience=self.audience, leeway=self.leeway,
                                options={"require": ["exp", "sub", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise TokenExpired("the token has expired") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"the token is not valid ({exc})") from None
        return await self._token(raw, claims)

    async def _signing_key(self, kid: str) -> jwt.PyJWK:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._executor, self._client.get_signing_key, kid), 2 * self.timeout + 1)
        except (PyJWKClientConnectionError, asyncio.TimeoutError) as exc:
            raise KeysUnavailable(f"the identity provider's keys could not be fetched ({exc})") from None
        except PyJWKClientError as exc:
            if str(exc).startswith("Unable to find a signing key"):  # the JWKS came, without that kid
                raise InvalidToken("the token is not valid (its key is not one of the identity provider's)") from None
            raise KeysUnavailable(f"the identity provider's keys are not usable ({exc})") from None
        except jwt.PyJWTError as exc:  # a malformed JWKS
            raise KeysUnavailable(f"the identity provider's keys are not usable ({exc})") from None

    async def _token(self, raw: str, claims: dict[str, Any]) -> Token:
        sub, exp, iat, jti = claims.get("sub"), claims.get("exp"), claims.get("iat", 0), claims.get("jti")
        if not isinstance(sub, str) or not sub or len(sub) > 255:
            raise InvalidToken("the token is not valid (malformed claims)")
        if not isinstance(exp, (int, float)) or not isinstance(iat, (int, float)) \
                or (jti is not None and not isinstance(jti, str)):
            raise InvalidToken("the token is not valid (malformed claims)")
        name = next((v for v in (claims.get(c) for c in NAME_CLAIMS) if isinstance(v, str) and v), sub)[:200]
        role = role_of(claims, self.role_claim, self.admin_roles)
        user_id = await self._account_id(sub, name, role)
        token_id = jti or "sha256:" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
        return Token(Principal(user_id, name, role), token_id, int(exp), int(iat), None, external=True)

    async def _account_id(self, sub: str, name: str, role: str) -> str:
        key = (self.issuer, sub, name, role)
        entry = self._mapped.get(key)
        now = time.monotonic()
        if entry is not None and entry[1] > now:
            self._mapped.move_to_end(key)
            return entry[0]
        account = await self._accounts.ensure_external(self.issuer, sub, name, role)
        self._mapped[key] = (account.id, now + self.MAPPING_SECONDS)
        self._mapped.move_to_end(key)
        while len(self._mapped) > self.MAX_MAPPED:
            self._mapped.popitem(last=False)
        return account.id

    def close(self) -> None:
        """Stop the fetching thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)
