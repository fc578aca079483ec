"""Users in MongoDB, unique by user name and by e-mail (both stored lower-case), and the list
of revoked tokens and deleted accounts.

A user's `token_version` is carried by the tokens issued to it: raising it (a password change)
revokes every older token. Changes to a user are whole-document compare-and-swap replacements.
"""

from __future__ import annotations

import datetime
import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError
from metadata.errors import driver_errors_translated


class UserExists(Exception):
    """The user name or e-mail is taken."""


class UserChanged(Exception):
    """The user changed (or went away) between reading and writing it; read it again."""


@dataclass(frozen=True)
class User:
    id: str
    username: str | None
    email: str | None
    password_hash: str
    role: str
    created_at: float
    token_version: int = 0
    #: for an account of an identity provider's user: the name its tokens give (it has no
    #: user name, e-mail or password here)
    display_name: str | None = None

    @property
    def name(self) -> str:
        """The user name, else the e-mail (else an identity provider's name): what tokens call the user."""
        return self.username or self.email or self.display_name or ""

    def public(self) -> dict[str, Any]:
        """What clients may see of a user."""
        return {"id": self.id, "username": self.username, "email": self.email, "role": self.role,
                "createdAt": _iso(self.created_at)}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@driver_errors_translated
class UserRepository:
    def __init__(self, db: AsyncDatabase) -> None:
        self._users = db["users"]

    async def create_indexes(self) -> None:
        # Both names are always present (a missing one is stored as its own unique placeholder),
        # so plain unique indexes work the same on every MongoDB server.
        await self._users.create_index([("username_key", ASCENDING)], unique=True)
        await self._users.create_index([("email_key", ASCENDING)], unique=True)

    async def create(self, username: str | None, email: str | None, password_hash: str, role: str = "user") -> User:
        """Insert a new user; raises UserExists when the user name or e-mail is taken."""
        user_id = uuid.uuid4().hex
        doc = {
            "_id": user_id,
            "username": username,
            "email": email,
            "username_key": username.lower() if username else f"!none-{user_id}",
            "email_key": email.lower() if email else f"!none-{user_id}",
            "password_hash": password_hash,
            "role": role,
            "created_at": time.time(),
            "token_version": 0,
        }
        try:
            await self._users.insert_one(doc)
        except DuplicateKeyError:
            raise UserExists() from None
        return _user(doc)

    async def ensure_external(self, issuer: str, subject: str, name: str, role: str) -> User:
        """The account of an identity provider's user (`subject` at `issuer`), created on first
        sight, with `name` and `role` as the provider's latest token gives them.

        Its id is derived from issuer and subject, so concurrent first requests make one account;
        it has no user name, e-mail or password (it cannot sign in here with a password)."""
        user_id = "ext-" + hashlib.sha256(f"{issuer}\n{subject}".encode("utf-8", "surrogatepass")).hexdigest()[:32]
        doc = await self._users.find_one({"_id": user_id})
        if doc is None:
            doc = {
                "_id": user_id, "username": None, "email": None,
                "username_key": f"!none-{user_id}", "email_key": f"!none-{user_id}",
                "password_hash": "", "role": role, "created_at": time.time(), "token_version": 0,
                "display_name": name, "issuer": issuer, "subject": subject,
            }
            try:
                await self._users.insert_one(doc)
            except DuplicateKeyError:
                doc = await self._users.find_one({"_id": user_id})
                if doc is None:
                    raise UserChanged() from None
        if doc.get("role") != role or doc.get("display_name") != name:
            updated = {**doc, "role": role, "display_name": name}
            result = await self._users.replace_one(_unchanged(doc), updated)
            if result.matched_count == 1:
                doc = updated  # else another request changed it meanwhile: its values stand
        return _user(doc)

    async def find_by_login(self, login: str) -> User | None:
        """The user whose user name or e-mail is `login` (case-insensitive)."""
        key = login.strip().lower()
        field = "email_key" if "@" in key else "username_key"
        doc = await self._users.find_one({field: key})
        return _user(doc) if doc else None

    async def get(self, user_id: str) -> User | None:
        doc = await self._users.find_one({"_id": user_id})
        return _user(doc) if doc else None

    async def change_password(self, user: User, password_hash: str) -> User:
        """Store a new password hash for `user` (as read, with its current hash) and raise its
        token version, revoking every token issued before; UserChanged when the stored user
        differs from `user` meanwhile (e.g. a concurrent password change) or is gone."""
        doc = await self._users.find_one({"_id": user.id})
        if doc is None or doc.get("password_hash") != user.password_hash \
                or _version(doc) != user.token_version:
            raise UserChanged()
        updated = {**doc, "password_hash": password_hash, "token_version": user.token_version + 1}
        result = await self._users.replace_one(_unchanged(doc), updated)
        if result.matched_count != 1:
            raise UserChanged()
        return _user(updated)

    async def delete(self, user_id: str) -> bool:
        """Remove the user; False when there was none."""
        result = await self._users.delete_one({"_id": user_id})
        return result.deleted_count == 1


def _version(doc: dict[str, Any]) -> int:
    value = doc.get("token_version", 0)
    return int(value) if isinstance(value, (int, float)) else 0


def _unchanged(doc: dict[str, Any]) -> dict[str, Any]:
    """A filter matching `doc` only while its password and token version are as read (a
    missing version, of users stored before versions existed, matches as missing)."""
    return {"_id": doc["_id"], "password_hash": doc.get("password_hash"),
            "token_version": doc.get("token_version")}


def _user(doc: dict[str, Any]) -> User:
    return User(doc["_id"], doc.get("username"), doc.get("email"), doc["password_hash"],
                doc.get("role", "user"), doc.get("created_at", 0.0), _version(doc), doc.get("display_name"))


@driver_errors_translated
class RevokedTokenRepository:
    """Revoked tokens and deleted accounts: `{_id: key, user_id, expires_at}`.

    Each entry lives until the last token it refuses would have expired: a TTL index on
    `expires_at` removes it then (and `sweep`, run by the reaper, on servers whose TTL monitor
    lags), so the list stays as small as the set of live revoked tokens.
    """

    def __init__(self, db: AsyncDatabase, collection: str = "revoked_tokens") -> None:
        self._revoked = db[collection]

    async def create_indexes(self) -> None:
        await self._revoked.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0)

    async def revoke(self, key: str, user_id: str, until: float) -> None:
        """List `key` until `until` (epoch seconds); listing a listed key again changes nothing."""
        try:
            await self._revoked.insert_one({"_id": key, "user_id": user_id, "expires_at": _utc(until)})
        except DuplicateKeyError:
            pass

    async def revoked(self, keys: list[str]) -> set[str]:
        """Which of `keys` are listed."""
        cursor = self._revoked.find({"_id": {"$in": list(keys)}}, {"_id": 1})
        return {doc["_id"] async for doc in cursor}

    async def sweep(self, now: float | None = None) -> int:
        """Delete the entries whose tokens have all expired; return how many."""
        result = await self._revoked.delete_many({"expires_at": {"$lte": _utc(time.time() if now is None else now)}})
        return result.deleted_count


def _utc(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
