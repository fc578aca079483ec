"""`/api/auth/register`, `/api/auth/login`, `/api/auth/verify`, `/api/auth/logout`,
`/api/auth/password` and `/api/auth/me` (account deletion).

Tokens are revocable (auth.revocation): signing out lists the token as revoked; a password
change raises the account's token version and a deletion removes the account, which revokes
every token issued before.

Failed sign-ins (and wrong current passwords) are limited per client IP and per account
(gateway.ratelimit.LoginGuard); successful ones are not counted. Registration has its own
per-IP limit. New passwords follow the services' PasswordPolicy (NIST SP 800-63B).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from auth.passwords import MAX_LENGTH, hash_password, verify_password
from auth.tokens import Principal
from gateway.base import BaseHandler
from gateway.errors import ApiError, bearer_challenge, credentials_invalid
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


def _password_refused(handler: BaseHandler, password: str, username: str | None, email: str | None) -> None:
    """ApiError 400 `weak_password` naming every rule `password` breaks (one sentence each)."""
    problems = handler.services.password_policy.problems(password, username, email)
    if problems:
        raise ApiError(400, "weak_password", "; ".join(problems))


async def _guard_refusal(handler: BaseHandler, account_id: str | None, address: bool = True) -> None:
    """ApiError 429 (with Retry-After) while the caller's address (unless `address` is False), or
    the account, has too many failed sign-ins in its window."""
    refusal = await handler.services.login_guard.refusal(handler.client_ip() if address else None, account_id)
    if refusal is not None:
        handler.services.on_rate_limited("login")
        raise ApiError(429, "too_many_requests", refusal.message, refusal.decision.headers())


class RegisterHandler(BaseHandler):
    """POST /api/auth/register, limited per client IP (REGISTER_RATE_LIMIT per RATE_LIMIT_WINDOW)."""

    rate_limit = "register"

    async def admit(self) -> None:
        try:
            await super().admit()
        except ApiError as exc:
            if exc.status_code != 429:
                raise
            raise ApiError(429, exc.code, "too many registrations from this address; retry in "
                           f"{exc.headers.get('Retry-After', '1')} seconds", exc.headers) from None

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
        _password_refused(self, password, username, email)
        hashed = await asyncio.get_running_loop().run_in_executor(self.services.cpu_executor, hash_password, password)
        user = await self.services.users.create(username, email, hashed)  # UserExists: 409 (gateway.errors)
        token, expires = _issue(self, user)
        log.info("user registered", extra={"new_user_id": user.id})
        self.set_status(201)
        self.write({"user": user.public(), "token": token, "tokenType": "Bearer", "expiresAt": expires})


class LoginHandler(BaseHandler):
    """POST /api/auth/login. Only failures count against the sign-in limits: per client IP
    (LOGIN_RATE_LIMIT) and per stored account (LOGIN_ACCOUNT_FAILURE_LIMIT); a success clears the
    account's failures."""

    async def post(self) -> None:
        body = self.json_body()
        login = _text(body, "username") or _text(body, "email") or _text(body, "login")
        password = body.get("password")
        if login is None or not isinstance(password, str) or not password:
            raise ApiError(400, "validation_error", "username (or email) and password are required")
        guard = self.services.login_guard
        ip = self.client_ip()
        await _guard_refusal(self, None)
        user = await self.services.users.find_by_login(login) if len(login) <= 254 else None
        account_id = user.id if user is not None else None  # unknown names count per address only
        await _guard_refusal(self, account_id, address=False)
        ok = len(password) <= MAX_LENGTH and await asyncio.get_running_loop().run_in_executor(
            self.services.cpu_executor, verify_password, password, user.password_hash if user else None)
        if not ok or user is None:
            await guard.failed(ip, account_id)
            log.info("login failed")
            raise credentials_invalid()
        await guard.succeeded(user.id)
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
            raise ApiError(401, "token_revoked", "the token's user no longer exists; sign in again",
                       bearer_challenge("invalid_token", "the token has been revoked"))
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
    """The caller's stored account, once `password` is shown to be its password (403 if not;
    wrong passwords count as failed sign-ins, per address and account)."""
    principal = _caller(handler)
    if not isinstance(password, str) or not password:
        raise ApiError(400, "validation_error", "the current password is required")
    user = await handler.services.users.get(principal.user_id)
    if user is None:
        raise ApiError(404, "user_not_found", "the token's user has no account here")
    await _guard_refusal(handler, user.id)
    ok = len(password) <= MAX_LENGTH and await asyncio.get_running_loop().run_in_executor(
        handler.services.cpu_executor, verify_password, password, user.password_hash)
    if not ok:
        await handler.services.login_guard.failed(handler.client_ip(), user.id)
        log.info("account change refused: wrong password")
        raise ApiError(403, "credentials_invalid", "the current password is wrong")
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

    async def post(self) -> None:
        _caller(self)
        body = self.json_body()
        new_password = body.get("newPassword")
        if not isinstance(new_password, str):
            raise ApiError(400, "validation_error", "newPassword is required")
        user = await _account_confirmed(self, body.get("currentPassword"))
        _password_refused(self, new_password, user.username, user.email)
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
