"""Revocable tokens, over real HTTP against gateway processes and their MongoDB: deleted and
demoted users, sign-out, password changes, account deletion, event streams, a second instance.

The gateways check tokens through a 1 s cache (TOKEN_CHECK_CACHE_SECONDS=1), so what changes
in MongoDB behind a gateway's back is waited for with a bounded poll.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Iterator

import pytest
import requests
from pymongo import MongoClient
from pymongo.uri_parser import parse_uri

from auth.tokens import Principal, TokenIssuer
from tests.conftest import JWT_SECRET
from tests.support import TUS

PASSWORD = "correct-horse-42"
NEW_PASSWORD = "battery-staple-77"
CACHE_SECONDS = 1
POLL_LIMIT = 20.0  # seconds: far above the cache time, only reached when something is wrong


@pytest.fixture(scope="module")
def gateway(start_gateway):
    return start_gateway("local", TOKEN_CHECK_CACHE_SECONDS=str(CACHE_SECONDS), EVENTS_KEEPALIVE_SECONDS="0.5")


@pytest.fixture(scope="module")
def users_collection(gateway) -> Iterator[Any]:
    """The gateway's `users` collection, for changes made behind its back (as an operator would)."""
    uri = gateway.env["MONGODB_URI"]
    with MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
        yield client[parse_uri(uri).get("database") or gateway.env["MONGODB_DB"]]["users"]


def register(gateway, name: str | None = None) -> dict[str, Any]:
    name = name or "tk" + uuid.uuid4().hex[:10]
    response = requests.post(gateway.url + "/api/auth/register", timeout=30,
                             json={"username": name, "email": f"{name}@example.com", "password": PASSWORD})
    assert response.status_code == 201, response.text
    body = response.json()
    return {"name": name, "id": body["user"]["id"], "token": body["token"]}


def login(gateway, name: str, password: str = PASSWORD) -> requests.Response:
    return requests.post(gateway.url + "/api/auth/login", json={"username": name, "password": password}, timeout=30)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def media(gateway, token: str, **params: str) -> requests.Response:
    return requests.get(gateway.url + "/api/media", headers=bearer(token), params=params, timeout=30)


def create_upload(gateway, token: str) -> requests.Response:
    return requests.post(gateway.files_url, headers={**bearer(token), **TUS, "Upload-Length": "5"}, timeout=30)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + POLL_LIMIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {POLL_LIMIT} s: {what}"
        time.sleep(0.1)


def assert_revoked(response: requests.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "token_revoked"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def listed_ids(gateway, token: str) -> set[str]:
    response = media(gateway, token, all="true", limit="100")
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


# -- changes made in MongoDB ----------------------------------------------------------------------


def test_a_deleted_users_token_is_refused(gateway, users_collection):
    user = register(gateway)
    token = user["token"]
    assert media(gateway, token).status_code == 200
    assert create_upload(gateway, token).status_code == 201
    users_collection.delete_one({"_id": user["id"]})
    wait_until(lambda: media(gateway, token).status_code == 401, "the deleted user's token refused")
    assert_revoked(media(gateway, token))
    assert_revoked(create_upload(gateway, token))
    assert requests.get(gateway.url + "/api/auth/verify", headers=bearer(token), timeout=30).status_code == 401
    assert requests.get(gateway.url + "/api/events", params={"access_token": token}, timeout=30).status_code == 401
    # a garbage token keeps its own answer
    garbage = media(gateway, "not.a.token")
    assert garbage.status_code == 401 and garbage.json()["error"]["code"] == "token_invalid"


def test_a_demoted_admin_loses_admin_rights(gateway, users_collection):
    admin, other = register(gateway), register(gateway)
    uploaded = requests.post(gateway.url + "/api/media/upload", headers=bearer(other["token"]), timeout=60,
                             files={"file": ("other.txt", b"someone else's file\n")})
    assert uploaded.status_code == 201, uploaded.text
    theirs = uploaded.json()["id"]
    assert theirs not in listed_ids(gateway, admin["token"])

    users_collection.update_one({"_id": admin["id"]}, {"$set": {"role": "admin"}})
    # the role comes from the account: the old token (issued as "user") becomes an admin's too
    wait_until(lambda: theirs in listed_ids(gateway, admin["token"]), "the promotion applied")
    admin_token = login(gateway, admin["name"]).json()["token"]
    assert theirs in listed_ids(gateway, admin_token)

    users_collection.update_one({"_id": admin["id"]}, {"$set": {"role": "user"}})
    wait_until(lambda: theirs not in listed_ids(gateway, admin_token), "the demotion applied")
    assert theirs not in listed_ids(gateway, admin["token"])
    assert requests.get(f"{gateway.url}/api/media/{theirs}", headers=bearer(admin_token), timeout=30).status_code == 404


# -- sign-out, password change, account deletion ---------------------------------------------------


def test_logout_revokes_only_the_presented_token(gateway, start_gateway):
    user = register(gateway)
    second = login(gateway, user["name"]).json()["token"]
    first = user["token"]
    # a second instance on the same database (its own cache), which has seen the token already
    other_instance = start_gateway(share=gateway)
    assert media(other_instance, first).status_code == 200

    assert requests.post(gateway.url + "/api/auth/logout", timeout=30).status_code == 401
    response = requests.post(gateway.url + "/api/auth/logout", headers=bearer(first), timeout=30)
    assert response.status_code == 204, response.text
    assert_revoked(media(gateway, first))  # at once on the instance that signed it out
    assert_revoked(create_upload(gateway, first))
    assert_revoked(requests.post(gateway.url + "/api/auth/logout", headers=bearer(first), timeout=30))
    wait_until(lambda: media(other_instance, first).status_code == 401, "the other instance refuses it")
    assert_revoked(media(other_instance, first))

    assert media(gateway, second).status_code == 200
    assert create_upload(gateway, second).status_code == 201
    assert media(other_instance, second).status_code == 200


def test_a_password_change_revokes_every_older_token(gateway):
    user = register(gateway)
    older = [user["token"], login(gateway, user["name"]).json()["token"]]
    url = gateway.url + "/api/auth/password"
    headers = bearer(older[0])

    def change(body: dict[str, Any], token_headers: dict[str, str] = headers) -> requests.Response:
        return requests.post(url, json=body, headers=token_headers, timeout=30)

    assert change({"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}, {}).status_code == 401
    wrong = change({"currentPassword": PASSWORD + "x", "newPassword": NEW_PASSWORD})
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "credentials_invalid"
    for weak in ("short1", "abcdefghij", user["name"] + "-1234567", "password1234", PASSWORD):
        response = change({"currentPassword": PASSWORD, "newPassword": weak})
        assert response.status_code == 400 and response.json()["error"]["code"] == "weak_password", weak
    assert change({"currentPassword": PASSWORD}).status_code == 400
    assert all(media(gateway, token).status_code == 200 for token in older)  # nothing changed yet

    changed = change({"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["user"]["id"] == user["id"] and body["tokenType"] == "Bearer"
    for token in older:
        assert_revoked(media(gateway, token))
        assert_revoked(create_upload(gateway, token))
    assert media(gateway, body["token"]).status_code == 200
    assert login(gateway, user["name"]).status_code == 401
    relogged = login(gateway, user["name"], NEW_PASSWORD)
    assert relogged.status_code == 200
    assert media(gateway, relogged.json()["token"]).status_code == 200
    assert create_upload(gateway, relogged.json()["token"]).status_code == 201


def test_deleting_the_account_revokes_all_its_tokens(gateway):
    user = register(gateway)
    tokens = [user["token"], login(gateway, user["name"]).json()["token"]]
    url = gateway.url + "/api/auth/me"
    assert requests.delete(url, json={"password": PASSWORD}, timeout=30).status_code == 401
    wrong = requests.delete(url, json={"password": "nope-nope-1"}, headers=bearer(tokens[0]), timeout=30)
    assert wrong.status_code == 403
    assert requests.delete(url, json={}, headers=bearer(tokens[0]), timeout=30).status_code == 400
    assert media(gateway, tokens[1]).status_code == 200

    deleted = requests.delete(url, json={"password": PASSWORD}, headers=bearer(tokens[0]), timeout=30)
    assert deleted.status_code == 204, deleted.text
    for token in tokens:
        assert_revoked(media(gateway, token))
        assert_revoked(create_upload(gateway, token))
    assert login(gateway, user["name"]).status_code == 401
    assert register(gateway, user["name"])["id"] != user["id"]  # the name is free again


def test_a_token_without_an_account_is_taken_as_is_until_that_user_is_deleted(gateway):
    """Tokens minted elsewhere with the shared secret carry no account version."""
    token = TokenIssuer(JWT_SECRET, 3600).issue(Principal("ext-" + uuid.uuid4().hex[:8], "external"))[0]
    assert media(gateway, token).status_code == 200
    assert requests.post(gateway.url + "/api/auth/password", headers=bearer(token), timeout=30,
                         json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}).status_code == 404
    assert requests.post(gateway.url + "/api/auth/logout", headers=bearer(token), timeout=30).status_code == 204
    assert_revoked(media(gateway, token))


def test_strict_gateways_refuse_tokens_without_an_account(start_gateway):
    strict = start_gateway("local", ACCOUNTLESS_TOKENS="false", TOKEN_CHECK_CACHE_SECONDS="0")
    token = TokenIssuer(JWT_SECRET, 3600).issue(Principal("ext-" + uuid.uuid4().hex[:8], "external", "admin"))[0]
    assert_revoked(media(strict, token, all="true"))
    assert media(strict, register(strict)["token"]).status_code == 200


# -- event streams ---------------------------------------------------------------------------------


def read_to_end(chunks: Iterator[bytes]) -> str:
    """Everything the stream sends until it ends (the read timeout bounds each wait)."""
    return b"".join(chunks).decode()


def test_an_event_stream_ends_when_its_token_is_revoked(gateway):
    user = register(gateway)
    with requests.get(gateway.url + "/api/events", params={"access_token": user["token"]}, stream=True,
                      timeout=(10, POLL_LIMIT)) as stream:
        assert stream.status_code == 200
        chunks = stream.iter_content(chunk_size=None)
        assert next(chunks).startswith(b": connected")
        assert requests.post(gateway.url + "/api/auth/logout", headers=bearer(user["token"]),
                             timeout=30).status_code == 204
        rest = read_to_end(chunks)  # returns once the gateway ends the stream
    assert "event: auth.ended" in rest and '"token_revoked"' in rest
    again = requests.get(gateway.url + "/api/events", params={"access_token": user["token"]}, timeout=30)
    assert again.status_code == 401 and again.json()["error"]["code"] == "token_revoked"


def test_an_event_stream_ends_when_its_token_expires(gateway):
    token = TokenIssuer(JWT_SECRET, 2).issue(Principal("ext-" + uuid.uuid4().hex[:8], "external"))[0]
    with requests.get(gateway.url + "/api/events", headers=bearer(token), stream=True,
                      timeout=(10, POLL_LIMIT)) as stream:
        assert stream.status_code == 200
        text = read_to_end(stream.iter_content(chunk_size=None))
    assert text.startswith(": connected") and "event: auth.ended" in text and '"token_expired"' in text


# -- the document -----------------------------------------------------------------------------------


def test_the_new_auth_routes_answer_as_documented(gateway):
    from tests.test_openapi import Conformance

    c = Conformance(gateway.url)
    user = register(gateway)
    auth = bearer(user["token"])
    c.call("POST", "/api/auth/password", 401, json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD})
    c.call("POST", "/api/auth/password", 400, headers=auth, json={"currentPassword": PASSWORD})
    c.call("POST", "/api/auth/password", 403, headers=auth,
           json={"currentPassword": NEW_PASSWORD, "newPassword": NEW_PASSWORD + "x"})
    c.call("POST", "/api/auth/password", 415, headers=auth, data=b"x")
    changed = c.call("POST", "/api/auth/password", 200, headers=auth,
                     json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD})
    c.call("POST", "/api/auth/logout", 401, headers=auth)
    auth = bearer(changed.json()["token"])
    c.call("DELETE", "/api/auth/me", 403, headers=auth, json={"password": PASSWORD})
    c.call("DELETE", "/api/auth/me", 400, headers={**auth, "Content-Type": "application/json"}, data=b"{")
    second = bearer(login(gateway, user["name"], NEW_PASSWORD).json()["token"])
    c.call("POST", "/api/auth/logout", 204, headers=second)
    c.call("GET", "/api/auth/verify", 401, headers=second)
    c.call("DELETE", "/api/auth/me", 204, headers=auth, json={"password": NEW_PASSWORD})
    c.call("DELETE", "/api/auth/me", 401, headers=auth, json={"password": NEW_PASSWORD})
    c.call("GET", "/api/media", 401, headers=auth)
    outsider = bearer(TokenIssuer(JWT_SECRET, 3600).issue(Principal("ext-" + uuid.uuid4().hex[:8], "x"))[0])
    c.call("DELETE", "/api/auth/me", 404, headers=outsider, json={"password": PASSWORD})
