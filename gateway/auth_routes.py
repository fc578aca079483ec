"""`/api/auth/register`, `/api/auth/login`, `/api/auth/verify`."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from auth.passwords import MAX_LENGTH, hash_password, password_problems, verify_password
from auth.tokens import Principal
from gateway.base import BaseHandler
from gateway.errors import ApiError

log = logging.getLogger("mediaserver.auth")

_USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ApiError(400, "validation_error", f"{name} must be a string")
    return value.strip()


class RegisterHandler(BaseHandler):
    rate_limit = "login"

    async def post(self) -> None:
        body = self.json_body()
        username, email = _text(body, "username"), _text(body, "email")
        password = body.get("password")
        if username is None and email is None:
            raise ApiError(400, "validation_error", "a username or an email is required")
        if username is not None and not _USERNAME.match(username):
            raise ApiError(400, "validation_error", "username: 3 to 32 letters, digits, '.', '_' or '-'")
        if email is not None and (len(email) > 254 or not _EMAIL.match(email)):
            raise ApiError(400, "validation_error", "email is not a valid address")
        if not isinstance(password, str):
            raise ApiError(400, "validation_error", "password is required")
        problems = password_problems(password, username, email)
        if problems:
            raise ApiError(400, "weak_password", "password needs " + ", ".join(problems))
        hashed = await asyncio.get_running_loop().run_in_executor(self.services.cpu_executor, hash_password, password)
        user = await self.services.users.create(username, email, hashed)  # UserExists: 409 (gateway.errors)
        token, expires = self.services.tokens.issue(Principal(user.id, user.username or user.email or "", user.role))
        log.info("user registered", extra={"new_user_id": user.id})
        self.set_status(201)
        self.write({"user": user.public(), "token": token, "tokenType": "Bearer", "expiresAt": expires})


class LoginHandler(BaseHandler):
    rate_limit = "login"

    async def post(self) -> None:
        body = self.json_body()
        login = _text(body, "username") or _text(body, "email") or _text(body, "login")
        password = body.get("password")
        if login is None or not isinstance(password, str) or not password:
            raise ApiError(400, "validation_error", "username (or email) and password are required")
        if len(password) > MAX_LENGTH or len(login) > 254:
            raise ApiError(401, "invalid_credentials", "invalid credentials")
        user = await self.services.users.find_by_login(login)
        ok = await asyncio.get_running_loop().run_in_executor(
            self.services.cpu_executor, verify_password, password, user.password_hash if user else None)
        if not ok or user is None:
            log.info("login failed")
            raise ApiError(401, "invalid_credentials", "invalid credentials")
        token, expires = self.services.tokens.issue(Principal(user.id, user.username or user.email or "", user.role))
        self.on_principal(Principal(user.id, user.username or "", user.role))
        log.info("login succeeded")
        self.write({"token": token, "tokenType": "Bearer", "expiresAt": expires, "user": user.public()})


class VerifyHandler(BaseHandler):
    async def get(self) -> None:
        principal = self.current_user
        if principal is None:
            raise ApiError(401, "unauthorized", "a valid bearer token is required",
                           {"WWW-Authenticate": 'Bearer realm="mediaserver", error="invalid_token"'})
        user = await self.services.users.get(principal.user_id)
        if user is None:
            raise ApiError(401, "unauthorized", "the token's user no longer exists")
        self.write({"valid": True, "user": user.public()})


def handlers() -> list[tuple[str, type]]:
    return [
        (r"/api/auth/register", RegisterHandler),
        (r"/api/auth/login", LoginHandler),
        (r"/api/auth/verify", VerifyHandler),
    ]
