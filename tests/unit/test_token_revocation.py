"""Revocable tokens: TokenChecker against in-memory accounts and revocation list, and the claims
TokenIssuer puts in and reads back."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import jwt
import pytest

from auth.revocation import TokenChecker, TokenRevoked
from auth.tokens import InvalidToken, Principal, Token, TokenIssuer

SECRET = "unit-secret-" + "s" * 40


@dataclass
class Account:
    name: str
    role: str = "user"
    token_version: int = 0


class Accounts:
    def __init__(self) -> None:
        self.stored: dict[str, Account] = {}
        self.lookups = 0
        self.gate: asyncio.Event | None = None
        self.failing = False

    async def get(self, user_id: str) -> Account | None:
        self.lookups += 1
        found = self.stored.get(user_id)  # read now, answered when the gate opens
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise ConnectionError("store down")
        return found


class Revocations:
    def __init__(self) -> None:
        self.listed: dict[str, float] = {}

    async def revoke(self, key: str, user_id: str, until: float) -> None:
        self.listed.setdefault(key, until)

    async def revoked(self, keys: list[str]) -> set[str]:
        return {key for key in keys if key in self.listed}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world():
    accounts, revocations, clock = Accounts(), Revocations(), Clock()
    checker = TokenChecker(accounts, revocations, cache_seconds=5, clock=clock)
    return accounts, revocations, clock, checker


def token(user_id: str = "u1", role: str = "user", version: int | None = 0, token_id: str = "t1",
          expires_in: float = 3600) -> Token:
    now = int(time.time())
    return Token(Principal(user_id, user_id, role), token_id, int(now + expires_in), now, version)


async def test_the_role_comes_from_the_account_not_the_token(world):
    accounts, _, _, checker = world
    accounts.stored["u1"] = Account("alice", role="admin")
    principal = await checker.check(token(role="user"))
    assert principal == Principal("u1", "alice", "admin")


async def test_a_demotion_applies_once_the_cache_time_has_passed(world):
    accounts, _, clock, checker = world
    accounts.stored["u1"] = Account("alice", role="admin")
    assert (await checker.check(token())).is_admin
    accounts.stored["u1"] = Account("alice", role="user")
    clock.now += 4.9
    assert (await checker.check(token())).is_admin  # cached
    assert accounts.lookups == 1
    clock.now += 0.2
    assert not (await checker.check(token())).is_admin
    assert accounts.lookups == 2


async def test_a_deleted_account_revokes_its_tokens(world):
    accounts, _, clock, checker = world
    accounts.stored["u1"] = Account("alice")
    await checker.check(token())
    del accounts.stored["u1"]
    clock.now += 6
    with pytest.raises(TokenRevoked, match="no longer exists"):
        await checker.check(token())


async def test_a_raised_token_version_revokes_older_tokens(world):
    accounts, _, _, checker = world
    accounts.stored["u1"] = Account("alice", token_version=1)
    with pytest.raises(TokenRevoked):
        await checker.check(token(version=0))
    with pytest.raises(TokenRevoked):
        await checker.check(token(version=None, token_id="t2"))  # no claim counts as version 0
    assert (await checker.check(token(version=1, token_id="t3"))).user_id == "u1"


async def test_a_local_account_change_applies_at_once(world):
    accounts, _, _, checker = world
    accounts.stored["u1"] = Account("alice", role="admin")
    assert (await checker.check(token())).is_admin
    accounts.stored["u1"] = Account("alice", role="user", token_version=1)
    checker.account_changed("u1")
    with pytest.raises(TokenRevoked):
        await checker.check(token())


async def test_sign_out_revokes_one_token_only(world):
    accounts, revocations, clock, checker = world
    accounts.stored["u1"] = Account("alice")
    one, other = token(token_id="one"), token(token_id="other")
    await checker.check(one)
    await checker.revoke_token(one)
    assert "token:one" in revocations.listed
    with pytest.raises(TokenRevoked, match="signed out"):
        await checker.check(one)
    assert (await checker.check(other)).user_id == "u1"
    # another instance (its own cache) sees the list
    elsewhere = TokenChecker(accounts, revocations, cache_seconds=5, clock=clock)
    with pytest.raises(TokenRevoked):
        await elsewhere.check(one)


async def test_tokens_without_an_account(world):
    accounts, revocations, clock, checker = world
    accountless = token(user_id="external", role="admin", version=None)
    assert (await checker.check(accountless)).is_admin  # minted elsewhere: taken as it is
    with pytest.raises(TokenRevoked):  # issued for an account that is gone
        await checker.check(token(user_id="external", version=0, token_id="t2"))
    strict = TokenChecker(accounts, revocations, cache_seconds=5, clock=clock, accountless_tokens=False)
    with pytest.raises(TokenRevoked):
        await strict.check(accountless)
    await checker.account_deleted("external")
    with pytest.raises(TokenRevoked):
        await checker.check(accountless)


async def test_expired_tokens_are_invalid_not_revoked(world):
    accounts, _, _, checker = world
    accounts.stored["u1"] = Account("alice")
    with pytest.raises(InvalidToken) as raised:
        await checker.check(token(expires_in=-1))
    assert not isinstance(raised.value, TokenRevoked)
    assert accounts.lookups == 0


async def test_no_cache_checks_every_time():
    accounts = Accounts()
    accounts.stored["u1"] = Account("alice")
    checker = TokenChecker(accounts, Revocations(), cache_seconds=0)
    for _ in range(3):
        await checker.check(token())
    assert accounts.lookups == 3


async def test_concurrent_checks_share_one_lookup(world):
    accounts, _, _, checker = world
    accounts.stored["u1"] = Account("alice")
    accounts.gate = asyncio.Event()
    checks = [asyncio.ensure_future(checker.check(token())) for _ in range(5)]
    while accounts.lookups == 0:
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    accounts.gate.set()
    assert {p.user_id for p in await asyncio.gather(*checks)} == {"u1"}
    assert accounts.lookups == 1


async def test_a_lookup_overtaken_by_a_revocation_is_not_cached(world):
    accounts, _, _, checker = world
    accounts.stored["u1"] = Account("alice", role="admin")
    accounts.gate = asyncio.Event()
    early = asyncio.ensure_future(checker.check(token()))
    while accounts.lookups == 0:
        await asyncio.sleep(0)
    accounts.stored["u1"] = Account("alice", role="user")
    checker.account_changed("u1")
    accounts.gate.set()
    assert (await early).is_admin  # it started before the change
    assert not (await checker.check(token())).is_admin


async def test_store_failures_propagate_and_are_not_cached(world):
    accounts, _, _, checker = world
    accounts.stored["u1"] = Account("alice")
    accounts.failing = True
    with pytest.raises(ConnectionError):
        await checker.check(token())
    accounts.failing = False
    assert (await checker.check(token())).user_id == "u1"


async def test_the_cache_is_bounded(world, monkeypatch):
    accounts, _, _, checker = world
    monkeypatch.setattr(TokenChecker, "MAX_ENTRIES", 3)
    accounts.stored["u1"] = Account("alice")
    for number in range(10):
        await checker.check(token(token_id=f"t{number}"))
    assert len(checker._cache) == 3


# -- the claims -----------------------------------------------------------------------------------


def test_issued_tokens_carry_id_expiry_and_version():
    issuer = TokenIssuer(SECRET, 600)
    raw, expires = issuer.issue(Principal("u1", "alice", "admin"), version=3)
    decoded = issuer.decode(raw)
    assert decoded.principal == Principal("u1", "alice", "admin")
    assert decoded.version == 3 and decoded.expires_at == expires and len(decoded.token_id) == 32
    assert issuer.verify(raw) == decoded.principal
    plain = issuer.decode(issuer.issue(Principal("u1", "alice"))[0])
    assert plain.version is None and plain.token_id != decoded.token_id


def test_tokens_without_jti_are_named_by_their_digest_and_bad_versions_refused():
    now = int(time.time())
    claims = {"sub": "u1", "name": "a", "iat": now, "exp": now + 60, "iss": "mediaserver"}
    issuer = TokenIssuer(SECRET, 600)
    first = issuer.decode(jwt.encode(claims, SECRET, algorithm="HS256"))
    second = issuer.decode(jwt.encode(dict(claims, name="b"), SECRET, algorithm="HS256"))
    assert first.token_id.startswith("sha256:") and first.token_id != second.token_id
    for version in (-1, "1", True, 1.5):
        with pytest.raises(InvalidToken):
            issuer.decode(jwt.encode(dict(claims, ver=version), SECRET, algorithm="HS256"))
