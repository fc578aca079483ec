"""Password hashing (Argon2 through pwdlib) and the strength rules for new passwords."""

from __future__ import annotations

import re

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

MIN_LENGTH = 8
MAX_LENGTH = 128  # bounds hashing work per request

# OWASP's Argon2id baseline (19 MiB, 2 iterations, 1 lane): each hash in flight costs this
# much memory, so it is kept well inside a 512 MB task; stored hashes carry their own parameters
DEFAULT_MEMORY_KIB = 19 * 1024
DEFAULT_TIME_COST = 2

_hasher = PasswordHash((Argon2Hasher(time_cost=DEFAULT_TIME_COST, memory_cost=DEFAULT_MEMORY_KIB, parallelism=1),))
_dummy_hash: str | None = None


def configure(memory_kib: int = DEFAULT_MEMORY_KIB, time_cost: int = DEFAULT_TIME_COST) -> None:
    """Hash new passwords with these Argon2id costs (existing hashes verify with their own)."""
    global _hasher, _dummy_hash
    _hasher = PasswordHash((Argon2Hasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1),))
    _dummy_hash = None


def hash_password(password: str) -> str:
    """An Argon2id hash of `password` (CPU-bound: call from an executor)."""
    return _hasher.hash(password)


def verify_password(password: str, hashed: str | None) -> bool:
    """Whether `password` matches `hashed`; with no hash, spends the same time and says no."""
    global _dummy_hash
    if len(password) > MAX_LENGTH:
        return False
    if hashed is None:
        # verified when a login names no known user, so both paths cost the same
        if _dummy_hash is None:
            _dummy_hash = _hasher.hash("not-a-real-password-0")
        _hasher.verify(password, _dummy_hash)
        return False
    try:
        return _hasher.verify(password, hashed)
    except Exception:  # noqa: BLE001 - a malformed stored hash never matches
        return False


def password_problems(password: str, username: str | None = None, email: str | None = None) -> list[str]:
    """Why `password` is too weak (empty when it is acceptable)."""
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        problems.append(f"at most {MAX_LENGTH} characters")
    if not re.search(r"[A-Za-z]", password) or not re.search(r"[0-9]", password):
        problems.append("letters and digits")
    lowered = password.lower()
    for name in (username, (email or "").split("@")[0] or None):
        if name and len(name) >= 3 and name.lower() in lowered:
            problems.append("not containing the user name")
            break
    if len(set(password)) < 4:
        problems.append("at least 4 different characters")
    return problems
