"""`/api/auth/register`, `/api/auth/login`, `/api/auth/verify`, `/api/auth/logout`,
`/api/auth/password` and `/api/auth/me` (account deletion).

Tokens are revocable (auth.revocation): signing out lists the token as revoked; a password
change raises the account's token version and a deletion removes the account, which revokes
every token issued before.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from auth.passwords import MAX_LENGTH, hash_password, password_problems, verify_password
from auth.tokens import Principal
from gateway.base import BaseHandler
from gateway.errors import ApiError
from metadata.users import User, UserChanged

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
        token, expires = _issue(self, user)
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
        token, expires = _issue(self, user)
        self.on_principal(Principal(user.id, user.username or "", user.role))
        log.info("login succeeded")
        self.write({"token": token, "tokenType": "Bearer", "expiresAt": expires, "user": user.public()})


class VerifyHandler(BaseHandler):
    async def get(self) -> None:
        principal = self.current_user
        if principal is None:
            raise self.unauthorized()
        user = await self.services.users.get(principal.user_id)
        if user is None:
            raise ApiError(401, "unauthorized", "the token's user no longer exists")
        self.write({"valid": True, "user": user.public()})


def _issue(handler: BaseHandler, user: User) -> tuple[str, int]:
    """A new token for `user`, valid while the account keeps its token version."""
    return handler.services.tokens.issue(Principal(user.id, user.name, user.role), version=user.token_version)


def _caller(handler: BaseHandler) -> Principal:
    principal = handler.current_user
    if principal is None:
        raise handler.unauthorized()
    return principal


async def _account_confirmed(handler: BaseHandler, password: Any) -> User:
    """The caller's stored account, once `password` is shown to be its password (403 if not)."""
    principal = _caller(handler)
    if not isinstance(password, str) or not password:
        raise ApiError(400, "validation_error", "the current password is required")
    user = await handler.services.users.get(principal.user_id)
    if user is None:
        raise ApiError(404, "user_not_found", "the token's user has no account here")
    ok = await asyncio.get_running_loop().run_in_executor(
        handler.services.cpu_executor, verify_password, password, user.password_hash)
    if not ok:
        log.info("account change refused: wrong password")
        raise ApiError(403, "invalid_credentials", "the current password is wrong")
    return user


class LogoutHandler(BaseHandler):
    """POST /api/auth/logout: revoke the presented token (other tokens of the user stay valid)."""

    async def post(self) -> None:
        _caller(self)
        token = self.presented_token
        if token is None:  # a caller is only ever named by a presented token
            raise self.unauthorized()
        await self.token_checker.revoke_token(token)
        log.info("signed out")
        self.set_status(204)


class PasswordHandler(BaseHandler):
    """POST /api/auth/password: change the password; every older token of the user is revoked
    and the answer carries a new token."""

    rate_limit = "login"

    async def post(self) -> None:
        _caller(self)
        body = self.json_body()
        new_password = body.get("newPassword")
        if not isinstance(new_password, str):
            raise ApiError(400, "validation_error", "newPassword is required")
        user = await _account_confirmed(self, body.get("currentPassword"))
        problems = password_problems(new_password, user.username, user.email)
        if problems:
            raise ApiError(400, "weak_password", "password needs " + ", ".join(problems))
        if new_password == body.get("currentPassword"):
            raise ApiError(400, "weak_password", "the new password must differ from the current one")
        hashed = await asyncio.get_running_loop().run_in_executor(
            self.services.cpu_executor, hash_password, new_password)
        try:
            user = await self.services.users.change_password(user, hashed)
        except UserChanged:
            raise ApiError(409, "conflict", "the account changed meanwhile; retry") from None
        finally:
            self.token_checker.account_changed(user.id)
        token, expires = _issue(self, user)
        log.info("password changed; older tokens revoked")
        self.write({"token": token, "tokenType": "Bearer", "expiresAt": expires, "user": user.public()})


class AccountHandler(BaseHandler):
    """DELETE /api/auth/me: delete the caller's account (confirmed with its password); every
    token of the user is revoked."""

    rate_limit = "login"

    async def delete(self) -> None:
        _caller(self)
        body = self.json_body()
        user = await _account_confirmed(self, body.get("password"))
        try:
            await self.services.users.delete(user.id)
            await self.token_checker.account_deleted(user.id)
        finally:
            self.token_checker.account_changed(user.id)
        log.info("account deleted", extra={"deleted_user_id": user.id})
        self.set_status(204)


def handlers() -> list[tuple[str, type]]:
    return [
        (r"/api/auth/register", RegisterHandler),
        (r"/api/auth/login", LoginHandler),
        (r"/api/auth/verify", VerifyHandler),
        (r"/api/auth/logout", LogoutHandler),
        (r"/api/auth/password", PasswordHandler),
        (r"/api/auth/me", AccountHandler),
    ]
