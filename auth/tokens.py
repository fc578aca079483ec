"""JWT access tokens (HS256 only; the algorithm is fixed on both issue and verify)."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
ISSUER = "mediaserver"


class InvalidToken(Exception):
    """The token is missing, malformed, expired, tampered with or of another algorithm."""


class TokenExpired(InvalidToken):
    """The token was valid but its time is over (`exp` has passed): sign in again."""


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for."""

    user_id: str
    username: str
    role: str = "user"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class Token:
    """A verified token: whom it speaks for and what identifies it.

    `version` is the account's token version the token was issued under (the `ver` claim);
    None for a token without one (issued elsewhere with the shared secret, or before token
    versions existed).
    """

    principal: Principal
    token_id: str  # the `jti` claim (or, without one, a digest of the token)
    expires_at: int
    issued_at: int
    version: int | None = None
    #: an identity provider's token (auth.oidc): its role is its own claim's, not the account's
    external: bool = False


class TokenIssuer:
    """Issues and verifies access tokens with one secret."""

    def __init__(self, secret: str, ttl: int) -> None:
        if len(secret) < 32:
            raise ValueError("the JWT secret must be at least 32 characters")
        self._secret = secret
        self.ttl = ttl

    def issue(self, principal: Principal, now: float | None = None, version: int | None = None) -> tuple[str, int]:
        """A signed token for `principal` and its expiry (epoch seconds).

        `version` is the account's current token version (see auth.revocation): the token
        stays valid only while the account keeps that version.
        """
        now = int(time.time() if now is None else now)
        expires = now + self.ttl
        claims: dict[str, object] = {
            "sub": principal.user_id,
            "name": principal.username,
            "role": principal.role,
            "iat": now,
            "nbf": now,
            "exp": expires,
            "iss": ISSUER,
            "jti": uuid.uuid4().hex,
        }
        if version is not None:
            claims["ver"] = version
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), expires

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; raises InvalidToken otherwise."""
        return self.decode(token).principal

    def decode(self, token: str) -> Token:
        """The verified token (signature, algorithm, issuer, time claims); raises InvalidToken.

        Says nothing of revocation: that needs the accounts (auth.revocation.TokenChecker).
        """
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "iss"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired("the token has expired") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"the token is not valid ({exc})") from None
        sub, name, role = claims.get("sub"), claims.get("name", ""), claims.get("role", "user")
        if not isinstance(sub, str) or not isinstance(name, str) or role not in ("user", "admin"):
            raise InvalidToken("the token is not valid (malformed claims)")
        jti, version = claims.get("jti"), claims.get("ver")
        if jti is not None and not isinstance(jti, str):
            raise InvalidToken("the token is not valid (malformed claims)")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 0):
            raise InvalidToken("the token is not valid (malformed claims)")
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(exp, (int, float)) or not isinstance(iat, (int, float)):
            raise InvalidToken("the token is not valid (malformed claims)")
        if jti is None:  # a token minted without one is still named, by its digest
            jti = "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
        return Token(Principal(sub, name, role), jti, int(exp), int(iat), version)
