"""The current-user mixin: who a request's bearer token speaks for, as the accounts stand now."""

from __future__ import annotations

from typing import Any

from auth.oidc import ExternalTokenVerifier
from auth.revocation import TokenChecker
from auth.tokens import InvalidToken, Principal, Token, TokenIssuer


class CurrentUserMixin:
    """For Tornado handlers: `current_user` is the caller's Principal, or None.

    The caller is resolved once per request by awaiting `authenticate()` (Tornado's
    `get_current_user` is synchronous and cannot ask the accounts): the bearer token is
    verified, then checked by `token_checker` (revoked, deleted account, current role).
    Before that, and on routes that never authenticate, there is no caller.

    The handler provides `token_issuer`, `token_checker` and `request`, and
    `on_principal(principal)` to hear of a verified caller (for logs); `external_tokens`
    when tokens of an identity provider (RS256/ES256) are accepted too.
    """

    request: Any
    #: the verified token the request presented (also when the check refused it)
    presented_token: Token | None = None
    #: why a presented token was refused (InvalidToken, or its subclass TokenRevoked)
    auth_failure: InvalidToken | None = None

    @property
    def token_issuer(self) -> TokenIssuer:
        raise NotImplementedError

    @property
    def token_checker(self) -> TokenChecker:
        raise NotImplementedError

    @property
    def external_tokens(self) -> ExternalTokenVerifier | None:
        return None

    def on_principal(self, principal: Principal) -> None:
        """Called once with the verified caller."""

    async def decode_token(self, raw: str) -> Token:
        """The verified token `raw`: an identity provider's (RS256/ES256, when one is configured)
        by its published keys, any other by the gateway's own secret (HS256 only); raises
        InvalidToken (or TokenExpired)."""
        external = self.external_tokens
        if external is not None and external.handles(raw):
            return await external.decode(raw)
        return self.token_issuer.decode(raw)

    def bearer_token(self) -> str | None:
        """The token the request presents (`Authorization: Bearer ...`), or None."""
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()

    def get_current_user(self) -> Principal | None:
        return None  # only `authenticate` names a caller

    async def authenticate(self) -> Principal | None:
        """Verify and check the presented token; set and return `current_user`.

        Store errors propagate (a token that cannot be checked is not accepted), as do
        KeysUnavailable (an identity provider's keys could not be fetched)."""
        principal = None
        raw = self.bearer_token()
        if raw:
            try:
                self.presented_token = await self.decode_token(raw)
                principal = await self.token_checker.check(self.presented_token)
            except InvalidToken as exc:
                self.auth_failure = exc
        self.current_user = principal
        if principal is not None:
            self.on_principal(principal)
        return principal
