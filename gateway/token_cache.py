"""The command line's tokens, kept per server in the user's config folder.

`mediaserver register` and `mediaserver upload` keep the token a server gave them in
`$XDG_CONFIG_HOME/mediaserver/tokens.json` (default `~/.config/mediaserver/tokens.json`,
mode 0600), keyed by the server's normalised URL, and reuse it until shortly before it
expires, so running `upload` again to resume does not log in again.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import jwt

#: a cached token is not used in its last this many seconds (a long upload needs it a while)
EXPIRY_MARGIN = 300.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_server(url: str) -> str:
    """`url` as the base URL requests are built on: scheme and host in lower case, no default
    port, no trailing slash, query or fragment ('http://Host:80/' -> 'http://host').
    Raises ValueError when it is not an http(s) URL with a host."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an http(s) server URL: {url!r}")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port  # ValueError on a port out of range
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def token_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verifying its signature (None if it has none or
    the text is not a JWT). Only the server can say whether the token is valid."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, (int, float)) else None


def config_dir() -> Path:
    """$XDG_CONFIG_HOME/mediaserver, or ~/.config/mediaserver."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "mediaserver"


@dataclass(frozen=True)
class CachedToken:
    token: str
    username: str | None
    expires: float | None

    def usable(self, now: float | None = None) -> bool:
        """Whether the token may still be used: not in its last EXPIRY_MARGIN seconds."""
        now = time.time() if now is None else now
        return self.expires is None or self.expires - EXPIRY_MARGIN > now


class TokenCache:
    """tokens.json: {normalised server URL: {"token", "username", "expires"}}, mode 0600."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / "tokens.json"

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, dict]) -> None:
        """Replace the file atomically; it is created 0600 and never readable by others."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".tokens-", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(data, out, indent=1, sort_keys=True)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def get(self, server: str) -> CachedToken | None:
        """The token kept for `server` (a normalised URL), usable or not; None if there is none."""
        entry = self._read().get(server)
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            return None
        expires = entry.get("expires")
        return CachedToken(entry["token"], entry.get("username"),
                           float(expires) if isinstance(expires, (int, float)) else None)

    def put(self, server: str, token: str, username: str | None) -> CachedToken:
        """Keep `token` for `server`, replacing the one kept before."""
        entry = CachedToken(token, username, token_expiry(token))
        data = self._read()
        data[server] = {"token": entry.token, "username": entry.username, "expires": entry.expires}
        self._write(data)
        return entry

    def drop(self, server: str) -> None:
        """Forget the token kept for `server` (the server refused it)."""
        data = self._read()
        if data.pop(server, None) is not None:
            self._write(data)
