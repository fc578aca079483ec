"""JWT access tokens (HS256 only; the algorithm is fixed on both issue and verify)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
ISSUER = "mediaserver"


class InvalidToken(Exception):
    """The token is missing, malformed, expired, tampered with or of another algorithm."""


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for."""

    user_id: str
    username: str
    role: str = "user"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class TokenIssuer:
    """Issues and verifies access tokens with one secret."""

    def __init__(self, secret: str, ttl: int) -> None:
        if len(secret) < 32:
            raise ValueError("the JWT secret must be at least 32 characters")
        self._secret = secret
        self.ttl = ttl

    def issue(self, principal: Principal, now: float | None = None) -> tuple[str, int]:
        """A signed token for `principal` and its expiry (epoch seconds)."""
        now = int(time.time() if now is None else now)
        expires = now + self.ttl
        claims = {
            "sub": principal.user_id,
            "name": principal.username,
            "role": principal.role,
            "iat": now,
            "nbf": now,
            "exp": expires,
            "iss": ISSUER,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), expires

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; raises InvalidToken otherwise."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "iss"]},
                leeway=5,
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        sub, name, role = claims.get("sub"), claims.get("name", ""), claims.get("role", "user")
        if not isinstance(sub, str) or not isinstance(name, str) or role not in ("user", "admin"):
            raise InvalidToken("malformed claims")
        return Principal(sub, name, role)
