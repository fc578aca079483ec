"""Users in MongoDB, unique by user name and by e-mail (both stored lower-case)."""

from __future__ import annotations

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


@dataclass(frozen=True)
class User:
    id: str
    username: str | None
    email: str | None
    password_hash: str
    role: str
    created_at: float

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
        }
        try:
            await self._users.insert_one(doc)
        except DuplicateKeyError:
            raise UserExists() from None
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


def _user(doc: dict[str, Any]) -> User:
    return User(doc["_id"], doc.get("username"), doc.get("email"), doc["password_hash"],
                doc.get("role", "user"), doc.get("created_at", 0.0))
