"""The current-user mixin: who a request's bearer token speaks for."""

from __future__ import annotations

from typing import Any

from auth.tokens import InvalidToken, Principal, TokenIssuer


class CurrentUserMixin:
    """For Tornado handlers: `current_user` is the token's Principal, or None.

    The handler provides `token_issuer` and `request`, and `on_principal(principal)`
    to hear of a verified caller (for logs).
    """

    request: Any

    @property
    def token_issuer(self) -> TokenIssuer:
        raise NotImplementedError

    def on_principal(self, principal: Principal) -> None:
        """Called once with the verified caller."""

    def get_current_user(self) -> Principal | None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        try:
            principal = self.token_issuer.verify(token.strip())
        except InvalidToken:
            return None
        self.on_principal(principal)
        return principal
