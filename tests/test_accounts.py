"""Accounts over real HTTP against gateway processes and their MongoDB: the password rules
(NIST SP 800-63B), the limits on failed sign-ins (per address and per account, successes
not counted) and on registrations, and 401 answers that say why.

Client addresses are set with X-Forwarded-For (TRUSTED_PROXY_HOPS=1), one per test, so the
tests sharing a gateway do not share counts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Iterator

import pytest
import requests
from pymongo import MongoClient
from pymongo.uri_parser import parse_uri

from auth.passwords import PasswordPolicy, common_passwords
from auth.tokens import Principal, TokenIssuer
from gateway.ratelimit import FailureLimiter
from tests.conftest import JWT_SECRET
from tests.support import TUS

PASSWORD = "a long enough passphrase"
IP_LIMIT = 4
ACCOUNT_LIMIT = 3


@pytest.fixture(scope="module")
def gateway(start_gateway):
    return start_gateway("local", TRUSTED_PROXY_HOPS="1", LOGIN_RATE_LIMIT=str(IP_LIMIT),
                         LOGIN_ACCOUNT_FAILURE_LIMIT=str(ACCOUNT_LIMIT), LOGIN_FAILURE_WINDOW="600",
                         REGISTER_RATE_LIMIT="1000")


@pytest.fixture(scope="module")
def database(gateway) -> Iterator[Any]:
    uri = gateway.env["MONGODB_URI"]
    with MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
        yield client[parse_uri(uri).get("database") or gateway.env["MONGODB_DB"]]


def address() -> dict[str, str]:
    """A client address of its own (a random one in 10.0.0.0/8, as the trusted proxy names it)."""
    n = uuid.uuid4().int
    return {"X-Forwarded-For": f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"}


def register(gateway, name: str | None = None, password: str = PASSWORD, headers: dict[str, str] | None = None,
             **extra: str) -> requests.Response:
    name = name or "ac" + uuid.uuid4().hex[:10]
    return requests.post(gateway.url + "/api/auth/register", json={"username": name, "password": password, **extra},
                         headers=headers or address(), timeout=30)


def new_user(gateway) -> str:
    name = "ac" + uuid.uuid4().hex[:10]
    response = register(gateway, name)
    assert response.status_code == 201, response.text
    return name


def login(gateway, name: str, password: str, headers: dict[str, str]) -> requests.Response:
    return requests.post(gateway.url + "/api/auth/login", json={"username": name, "password": password},
                         headers=headers, timeout=30)


def error(response: requests.Response) -> tuple[int, str, str]:
    body = response.json()["error"]
    return response.status_code, body["code"], body["message"]


# -- passwords ------------------------------------------------------------------------------------


def test_the_shipped_list_of_common_passwords():
    listed = common_passwords()
    assert 19_000 <= len(listed) <= 25_000
    assert {"password", "123456", "qwerty", "password1"} <= listed
    assert all(entry == entry.lower() and not entry.startswith("# ") for entry in listed)


def test_policy_rules_without_composition_rules():
    policy = PasswordPolicy()
    assert policy.problems("correct horse battery staple") == []
    assert policy.problems("aaaaaaaaaaaaaaaa") == []  # no rules beyond length, list and name
    assert policy.problems("password1") == ["password must be at least 12 characters",
                                            "this password is too common (it is on a list of passwords leaked in breaches)"]
    assert policy.problems("Password1234") == ["this password is too common (it is on a list of passwords leaked in breaches)"]
    assert policy.problems("my name is Alice, ok?", "alice") == ["password must not contain the user name"]
    assert policy.problems("x" * 257) == ["password must be at most 256 characters"]
    assert policy.problems("x" * 256) == []
    assert PasswordPolicy(8).problems("k9#vLq2!") == []
    with pytest.raises(ValueError):
        PasswordPolicy(7)


@pytest.mark.parametrize("password, message", [
    ("password1", "password must be at least 12 characters"),
    ("short", "password must be at least 12 characters"),
    ("password1234", "this password is too common"),
    ("Qwerty123456", "this password is too common"),
    ("x" * 257, "password must be at most 256 characters"),
])
def test_register_refuses_with_a_clear_message(gateway, password, message):
    status, code, text = error(register(gateway, password=password))
    assert (status, code) == (400, "weak_password")
    assert message in text


def test_register_refuses_a_password_containing_the_user_name(gateway):
    name = "zed" + uuid.uuid4().hex[:6]
    status, code, text = error(register(gateway, name, password=f"I am {name.upper()} here"))
    assert (status, code, text) == (400, "weak_password", "password must not contain the user name")
    by_email = register(gateway, None, password="xk-mailbox-zz-2025", email="xk-mailbox-zz@example.com")
    assert error(by_email)[2] == "password must not contain the user name"


def test_a_passphrase_with_spaces_and_no_digits_is_accepted(gateway):
    name = "ph" + uuid.uuid4().hex[:8]
    created = register(gateway, name, password="correct horse battery staple")
    assert created.status_code == 201, created.text
    assert login(gateway, name, "correct horse battery staple", address()).status_code == 200


def test_password_change_follows_the_same_rules(gateway):
    name = new_user(gateway)
    token = login(gateway, name, PASSWORD, address()).json()["token"]
    url = gateway.url + "/api/auth/password"
    headers = {"Authorization": f"Bearer {token}", **address()}
    for weak, message in (("password1234", "this password is too common"),
                          ("tiny", "password must be at least 12 characters"),
                          (f"{name}-forever", "password must not contain the user name")):
        response = requests.post(url, json={"currentPassword": PASSWORD, "newPassword": weak}, headers=headers,
                                 timeout=30)
        assert error(response)[:2] == (400, "weak_password") and message in error(response)[2]
    changed = requests.post(url, json={"currentPassword": PASSWORD, "newPassword": "a totally new phrase"},
                            headers=headers, timeout=30)
    assert changed.status_code == 200, changed.text


def test_existing_users_keep_their_passwords_and_the_minimum_is_configurable(gateway, start_gateway):
    lenient = start_gateway("local", share=gateway, PASSWORD_MIN_LENGTH="8")
    name = "old" + uuid.uuid4().hex[:8]
    assert register(lenient, name, password="k9#vLq2!").status_code == 201  # 8 characters: enough there
    assert error(register(gateway, password="k9#vLq2!"))[2] == "password must be at least 12 characters"
    # the stricter gateway (same accounts) still signs the old password in
    assert login(gateway, name, "k9#vLq2!", address()).status_code == 200


def test_a_minimum_below_eight_is_refused_at_start(start_gateway):
    with pytest.raises(RuntimeError, match="PASSWORD_MIN_LENGTH"):
        start_gateway("local", PASSWORD_MIN_LENGTH="6")


# -- failed sign-ins ------------------------------------------------------------------------------


def test_successful_logins_are_not_counted(gateway):
    name = new_user(gateway)
    client = address()
    answers = [login(gateway, name, PASSWORD, client).status_code for _ in range(IP_LIMIT + ACCOUNT_LIMIT + 2)]
    assert answers == [200] * (IP_LIMIT + ACCOUNT_LIMIT + 2)


def test_failures_per_address_then_429_with_retry_after(gateway):
    client, other = address(), address()
    for _ in range(IP_LIMIT):  # unknown names: counted by the address alone
        assert error(login(gateway, "nobody" + uuid.uuid4().hex[:6], "whatever-it-is", client))[:2] == \
            (401, "credentials_invalid")
    name = new_user(gateway)
    refused = login(gateway, name, PASSWORD, client)  # even the right password waits
    status, code, message = error(refused)
    assert (status, code) == (429, "too_many_requests")
    assert message.startswith("too many failed sign-in attempts from this address; retry in ")
    assert 1 <= int(refused.headers["Retry-After"]) <= 600
    assert refused.headers["Content-Type"].startswith("application/json")
    assert login(gateway, name, PASSWORD, other).status_code == 200, "another address has its own count"


def test_failures_per_account_from_many_addresses(gateway):
    name = new_user(gateway)
    for _ in range(ACCOUNT_LIMIT):
        assert login(gateway, name, "not the password!", address()).status_code == 401
    refused = login(gateway, name, PASSWORD, address())  # a fresh address, the right password
    status, code, message = error(refused)
    assert (status, code) == (429, "too_many_requests")
    assert message.startswith("too many failed sign-in attempts for this account; retry in ")
    assert int(refused.headers["Retry-After"]) >= 1
    assert new_user(gateway) and login(gateway, new_user(gateway), PASSWORD, address()).status_code == 200


def test_a_success_clears_the_accounts_failures(gateway):
    name = new_user(gateway)
    for _ in range(3):
        for _ in range(ACCOUNT_LIMIT - 1):
            assert login(gateway, name, "not the password!", address()).status_code == 401
        assert login(gateway, name, PASSWORD, address()).status_code == 200


def test_wrong_current_passwords_count_as_failures(gateway):
    name = new_user(gateway)
    token = login(gateway, name, PASSWORD, address()).json()["token"]
    url = gateway.url + "/api/auth/password"
    answers = [requests.post(url, json={"currentPassword": "wrong one here", "newPassword": "some new phrase!"},
                             headers={"Authorization": f"Bearer {token}", **address()}, timeout=30)
               for _ in range(ACCOUNT_LIMIT + 1)]
    assert [a.status_code for a in answers] == [403] * ACCOUNT_LIMIT + [429]
    assert answers[0].json()["error"]["code"] == "credentials_invalid"
    assert login(gateway, name, PASSWORD, address()).status_code == 429


def test_counters_are_bounded_and_expire(gateway, database):
    client = address()
    ip = client["X-Forwarded-For"]
    for _ in range(3):
        login(gateway, "made-up-" + uuid.uuid4().hex, "whatever-it-is", client)
    counters = database["rate_limits"]
    rows = list(counters.find({"_id": {"$regex": "^login-failures-"}}))
    assert [row["count"] for row in rows if row["_id"] == f"login-failures-ip:{ip}"] == [3]
    # made-up names make no rows of their own: per-account rows exist for stored accounts only
    user_ids = {doc["_id"] for doc in database["users"].find({}, {"_id": 1})}
    accounts = [row["_id"].split(":", 1)[1] for row in rows if row["_id"].startswith("login-failures-account:")]
    assert accounts and set(accounts) <= user_ids
    ttl = [index for index in counters.list_indexes() if "expire_at" in index["key"]]
    assert ttl and ttl[0]["expireAfterSeconds"] == 0
    row = counters.find_one({"_id": f"login-failures-ip:{ip}"})
    assert row["expires_at"] > time.time() and row["expire_at"] is not None


def test_instances_share_the_counts_and_windows_end(start_gateway):
    first = start_gateway("local", TRUSTED_PROXY_HOPS="1", LOGIN_RATE_LIMIT="2", LOGIN_FAILURE_WINDOW="2")
    second = start_gateway("local", share=first)
    client = address()
    assert login(first, "ghost-" + uuid.uuid4().hex[:6], "whatever-it-is", client).status_code == 401
    assert login(second, "ghost-" + uuid.uuid4().hex[:6], "whatever-it-is", client).status_code == 401
    assert login(first, "ghost", "whatever-it-is", client).status_code == 429
    assert login(second, "ghost", "whatever-it-is", client).status_code == 429
    time.sleep(2.2)
    assert login(second, "ghost", "whatever-it-is", client).status_code == 401


def test_registrations_have_their_own_limit(start_gateway):
    gateway = start_gateway("local", TRUSTED_PROXY_HOPS="1", REGISTER_RATE_LIMIT="2", LOGIN_RATE_LIMIT="2")
    client = address()
    assert [register(gateway, headers=client).status_code for _ in range(2)] == [201, 201]
    refused = register(gateway, headers=client)
    status, code, message = error(refused)
    assert (status, code) == (429, "too_many_requests")
    assert message.startswith("too many registrations from this address; retry in ")
    assert int(refused.headers["Retry-After"]) >= 1
    assert register(gateway, headers=address()).status_code == 201, "another address"


def test_failure_limiter_counts_in_memory_while_mongodb_is_away():
    class Away:
        async def _fail(self, *args: Any) -> Any:
            raise ConnectionError("no MongoDB")

        hit = peek = clear = _fail

    async def scenario() -> list[bool]:
        limiter = FailureLimiter("test", 2, 60, Away(), timeout=0.5)
        seen = [(await limiter.check("k")).allowed]
        for _ in range(2):
            seen.append((await limiter.failed("k")).allowed)
        seen.append((await limiter.check("k")).allowed)
        await limiter.forgive("k")
        seen.append((await limiter.check("k")).allowed)
        return seen

    assert asyncio.run(scenario()) == [True, True, False, False, True]


# -- 401 answers ----------------------------------------------------------------------------------


def expired_token() -> str:
    return TokenIssuer(JWT_SECRET, 3600).issue(Principal("someone", "someone"), now=time.time() - 7200)[0]


def foreign_token() -> str:
    return TokenIssuer("another-secret-" + "y" * 40, 3600).issue(Principal("someone", "someone"))[0]


CHALLENGE = 'Bearer realm="mediaserver"'


@pytest.mark.parametrize("route", ["rest", "tus-post", "tus-head"])
def test_401_codes_and_challenges(gateway, route):
    def call(token: str | None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if route == "rest":
            return requests.get(gateway.url + "/api/media", headers=headers, timeout=30)
        if route == "tus-post":
            return requests.post(gateway.files_url, headers={**headers, **TUS, "Upload-Length": "5"}, timeout=30)
        return requests.head(gateway.files_url + "0123456789abcdef0123456789abcdef", headers={**headers, **TUS},
                             timeout=30)

    expected = {
        None: ("token_missing", CHALLENGE),
        "not.a.token": ("token_invalid",
                        CHALLENGE + ', error="invalid_token", error_description="the token is not valid"'),
        foreign_token(): ("token_invalid",
                          CHALLENGE + ', error="invalid_token", error_description="the token is not valid"'),
        expired_token(): ("token_expired",
                          CHALLENGE + ', error="invalid_token", error_description="the token has expired"'),
    }
    for token, (code, challenge) in expected.items():
        response = call(token)
        assert response.status_code == 401, (token, response.text)
        assert response.headers["WWW-Authenticate"] == challenge
        if route != "tus-head":  # HEAD answers have no body
            assert response.json()["error"]["code"] == code


def test_wrong_credentials_say_credentials_invalid(gateway):
    name = new_user(gateway)
    wrong = login(gateway, name, "not the password!", address())
    unknown = login(gateway, "nobody" + uuid.uuid4().hex[:6], "not the password!", address())
    assert error(wrong) == error(unknown) == (401, "credentials_invalid", "wrong username or password")
    assert wrong.headers["WWW-Authenticate"] == CHALLENGE
