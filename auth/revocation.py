"""Revocable tokens: a verified token is still checked against the accounts it speaks for.

A token is accepted only while

- it was not revoked by itself (sign-out: its id is listed until it would have expired),
- its account exists and still has the token version the token carries (a password change
  or "sign out everywhere" raises the version, which revokes every older token at once),
- its account was not deleted here (a deleted account is listed like a revoked token).

The role is the account's current one, never the token's (except for an identity provider's
token, whose role claim is the provider's word: auth.oidc). A token without a version claim
whose user has no account here (minted by another service with the shared secret, or issued
before token versions existed) is accepted as it is when `accountless_tokens` is on.

Answers are cached in the process for `cache_seconds`: another instance's revocation takes
effect here at most that long afterwards; one made through this checker takes effect at once.
The accounts and the revocation list are reached through the two small protocols below, so
this module knows no database.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Protocol

from auth.tokens import InvalidToken, Principal, Token, TokenExpired


class TokenRevoked(InvalidToken):
    """The token was valid but has been revoked: signed out, its password changed, its account
    deleted or changed."""


class Account(Protocol):
    """What the check needs to know of a stored account."""

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def token_version(self) -> int: ...


class Accounts(Protocol):
    async def get(self, user_id: str) -> Account | None:
        """The stored account of `user_id`, or None when there is none."""
        ...


class RevocationList(Protocol):
    async def revoke(self, key: str, user_id: str, until: float) -> None:
        """List `key` as revoked until `until` (epoch seconds); listing it again is harmless."""
        ...

    async def revoked(self, keys: list[str]) -> set[str]:
        """Which of `keys` are listed."""
        ...


def token_key(token_id: str) -> str:
    return "token:" + token_id


def account_key(user_id: str) -> str:
    return "account:" + user_id


@dataclass
class _Entry:
    fresh_until: float  # monotonic clock
    principal: Principal | None
    reason: str = ""


class TokenChecker:
    """Decides whether a verified token still stands, with a short-lived per-token cache."""

    MAX_ENTRIES = 10_000

    def __init__(self, accounts: Accounts, revocations: RevocationList, cache_seconds: float,
                 accountless_tokens: bool = True, token_ttl: float = 24 * 3600,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self._accounts = accounts
        self._revocations = revocations
        self.cache_seconds = max(0.0, cache_seconds)
        self.accountless_tokens = accountless_tokens
        self.token_ttl = token_ttl
        self._clock = clock
        self._wall_clock = wall_clock
        self._cache: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._pending: dict[tuple[str, str], asyncio.Future] = {}
        self._generation = 0  # raised by every revocation made here: older lookups are not cached

    async def check(self, token: Token) -> Principal:
        """The token's principal as the accounts stand now (or up to `cache_seconds` ago);
        raises TokenRevoked (or InvalidToken for an expired token). Errors of the stores
        propagate (the caller answers 503: a token that cannot be checked is not accepted)."""
        if token.expires_at <= self._wall_clock():
            raise TokenExpired("the token has expired")
        key = (token.principal.user_id, token.token_id)
        entry = self._cache.get(key)
        if entry is not None and entry.fresh_until > self._clock():
            self._cache.move_to_end(key)
            return _answer(entry)
        pending = self._pending.get(key)
        if pending is None:  # one lookup at a time per token; concurrent requests share it
            pending = asyncio.ensure_future(self._look_up(token))
            self._pending[key] = pending
            pending.add_done_callback(lambda done: self._settled(key, done))
        return _answer(await asyncio.shield(pending))

    def _settled(self, key: tuple[str, str], done: asyncio.Future) -> None:
        if self._pending.get(key) is done:
            del self._pending[key]
        if not done.cancelled():
            done.exception()  # retrieved: its waiters (if any are left) raise it

    async def _look_up(self, token: Token) -> _Entry:
        user_id = token.principal.user_id
        generation = self._generation
        started = self._clock()
        account, listed = await asyncio.gather(
            self._accounts.get(user_id),
            self._revocations.revoked([token_key(token.token_id), account_key(user_id)]))
        entry = _Entry(started + self.cache_seconds, None)
        if token_key(token.token_id) in listed:
            entry.reason = "the token was revoked (signed out)"
        elif account is None:
            if token.version is not None or account_key(user_id) in listed or not self.accountless_tokens:
                entry.reason = "the token's user no longer exists"
            else:
                entry.principal = token.principal
        elif (token.version or 0) != account.token_version:
            entry.reason = "the token was revoked (password changed or signed out everywhere)"
        elif account.role not in ("user", "admin"):
            entry.reason = "the token's user has no valid role"
        else:  # an identity provider's token carries its role; the gateway's own tokens take the account's
            role = token.principal.role if token.external else account.role
            entry.principal = Principal(user_id, account.name or token.principal.username, role)
        if self.cache_seconds > 0 and self._generation == generation:
            self._remember((user_id, token.token_id), entry)
        return entry

    def _remember(self, key: tuple[str, str], entry: _Entry) -> None:
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > self.MAX_ENTRIES:
            self._cache.popitem(last=False)

    async def revoke_token(self, token: Token) -> None:
        """Sign `token` out: it is refused from now on (here at once, elsewhere within the cache
        time), until it would have expired anyway."""
        await self._revocations.revoke(token_key(token.token_id), token.principal.user_id, float(token.expires_at))
        user_id = token.principal.user_id
        self._forget(user_id, token.token_id)
        remaining = max(0.0, token.expires_at - self._wall_clock())
        self._remember((user_id, token.token_id),
                       _Entry(self._clock() + remaining, None, "the token was revoked (signed out)"))

    async def account_deleted(self, user_id: str) -> None:
        """Refuse every token of `user_id`, also tokens without a version claim (for as long as
        a token issued now could live)."""
        await self._revocations.revoke(account_key(user_id), user_id, self._wall_clock() + self.token_ttl)
        self.account_changed(user_id)

    def account_changed(self, user_id: str) -> None:
        """Forget what is cached of `user_id` (its role, token version or existence changed)."""
        self._forget(user_id)

    def _forget(self, user_id: str, token_id: str | None = None) -> None:
        """Drop cached answers and lookups in flight of `user_id` (of one token, if given)."""
        self._generation += 1
        for table in (self._cache, self._pending):
            for key in [key for key in table if key[0] == user_id and token_id in (None, key[1])]:
                del table[key]


def _answer(entry: _Entry) -> Principal:
    if entry.principal is None:
        raise TokenRevoked(entry.reason)
    return entry.principal
