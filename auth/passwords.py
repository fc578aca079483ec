"""Password hashing (Argon2 through pwdlib) and the rules for new passwords (NIST SP 800-63B)."""

from __future__ import annotations

import gzip
from importlib import resources

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

MIN_LENGTH = 8  # the least a configured minimum may be (NIST SP 800-63B)
DEFAULT_MIN_LENGTH = 12
MAX_LENGTH = 256  # longer passwords are refused: bounds hashing work per request

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


class PasswordPolicy:
    """The rules for a new password, after NIST SP 800-63B (5.1.1.2), checked on registration
    and on a password change (stored passwords are never re-judged):

    - at least `min_length` characters (configurable, never below 8) and at most MAX_LENGTH;
    - not one of the common passwords shipped with the package (auth/common-passwords.txt.gz,
      compared case-insensitively);
    - not containing the user name or the e-mail's local part (case-insensitive);
    - no composition rules: any characters, spaces included, count.

    Lengths count Unicode code points.
    """

    def __init__(self, min_length: int = DEFAULT_MIN_LENGTH) -> None:
        if not MIN_LENGTH <= min_length <= MAX_LENGTH:
            raise ValueError(f"the minimum password length must be {MIN_LENGTH}..{MAX_LENGTH}")
        self.min_length = min_length

    def problems(self, password: str, username: str | None = None, email: str | None = None) -> list[str]:
        """Why `password` is refused, one sentence each (empty when it is acceptable)."""
        problems = []
        if len(password) < self.min_length:
            problems.append(f"password must be at least {self.min_length} characters")
        if len(password) > MAX_LENGTH:
            problems.append(f"password must be at most {MAX_LENGTH} characters")
            return problems
        if is_common(password):
            problems.append("this password is too common (it is on a list of passwords leaked in breaches)")
        lowered = password.lower()
        for name in (username, (email or "").split("@")[0] or None):
            if name and len(name) >= 3 and name.lower() in lowered:
                problems.append("password must not contain the user name")
                break
        return problems


COMMON_PASSWORDS = "common-passwords.txt.gz"
_common: frozenset[str] | None = None


def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords (lower-case), loaded once (about 20,000 entries)."""
    global _common
    if _common is None:
        text = gzip.decompress(resources.files("auth").joinpath(COMMON_PASSWORDS).read_bytes()).decode("utf-8")
        _, _, listed = text.partition("\n\n")  # a commented header, an empty line, the list
        _common = frozenset(line for line in listed.splitlines() if line)
    return _common


def is_common(password: str) -> bool:
    """Whether `password` (case-insensitive, surrounding spaces ignored) is on the shipped list."""
    return password.strip().lower() in common_passwords()

