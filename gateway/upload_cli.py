"""`mediaserver register` and `mediaserver upload FILE...`: the gateway from the command line.

Uploads use the tus protocol: the upload URL of each file is kept in a small local database
(tuspy's FileStorage, keyed by tuspy's fingerprint of the file), so running the same command
again after an interruption resumes at the offset the server reports instead of starting
over. The tus requests themselves are made here with one `requests` session rather than by
tuspy's uploader, which hides the response headers (Retry-After) and error bodies this
command reports.

The token a server gives (`register`, or a login with --username) is kept per server in the
user's config folder (gateway.token_cache) and reused until shortly before it expires.

Every failure ends with one line on stderr and an exit status of its own (EXIT_CODES).
"""

from __future__ import annotations

import argparse
import base64
import email.utils
import getpass
import os
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urljoin

try:
    import requests
except ImportError:  # the `cli` extra is missing: `serve` does not need it, `upload` says so in run()
    requests = None  # type: ignore[assignment]

from gateway.token_cache import TokenCache, normalise_server, token_expiry

MiB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}
#: a 429 or 503 asking to wait at most this long is waited for (a retry); longer ends the run
SHORT_WAIT = 10

EXIT_OK = 0
EXIT_SERVER_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_BAD_CREDENTIALS = 4
EXIT_TOKEN_REFUSED = 5
EXIT_RATE_LIMITED = 6
EXIT_REFUSED = 7
EXIT_FILE_MISSING = 8
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_SERVER_ERROR: "the server failed (5xx) after the retries; run again to resume",
    EXIT_USAGE: "wrong arguments",
    EXIT_UNREACHABLE: "server unreachable (refused, timed out, connection lost); run again to resume",
    EXIT_BAD_CREDENTIALS: "bad credentials (wrong username or password)",
    EXIT_TOKEN_REFUSED: "token expired or invalid (log in again)",
    EXIT_RATE_LIMITED: "rate limited (the message says how long to wait)",
    EXIT_REFUSED: "refused by the server (the message is the server's)",
    EXIT_FILE_MISSING: "a file to upload is missing or unreadable",
    EXIT_INTERRUPTED: "interrupted with Ctrl-C; run again to resume",
}

EPILOG = "exit status: 0 done; " + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items())


class CliError(Exception):
    """A failure reported as one line on stderr and exit status `code`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Transient(Exception):
    """A failure worth retrying (connection lost, 5xx, 423, a short 429); `final` if it is not."""

    def __init__(self, final: CliError, wait: float | None = None) -> None:
        super().__init__(final.message)
        self.final = final
        self.wait = wait


# -- arguments ----------------------------------------------------------------------------------


def _server_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=os.environ.get("MEDIASERVER_URL", "http://127.0.0.1:3000"),
                        help="gateway base URL, with or without a trailing slash (MEDIASERVER_URL, default http://127.0.0.1:3000)")


def add_register_arguments(parser: argparse.ArgumentParser) -> None:
    _server_argument(parser)
    parser.add_argument("--username", default=os.environ.get("MEDIASERVER_USERNAME"), help="the new user name (MEDIASERVER_USERNAME)")
    parser.add_argument("--email", help="an email address to log in with (optional)")
    parser.add_argument("--password", default=os.environ.get("MEDIASERVER_PASSWORD"),
                        help="the new password (MEDIASERVER_PASSWORD; asked for when missing and a terminal is attached)")
    parser.epilog = EPILOG


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="files to upload")
    _server_argument(parser)
    parser.add_argument("--token", default=os.environ.get("MEDIASERVER_TOKEN"), help="bearer token (MEDIASERVER_TOKEN); default: the token kept for this server by register or an earlier login")
    parser.add_argument("--username", default=os.environ.get("MEDIASERVER_USERNAME"), help="log in as this user when no token for it is kept (MEDIASERVER_USERNAME)")
    parser.add_argument("--password", default=os.environ.get("MEDIASERVER_PASSWORD"), help="password for --username (MEDIASERVER_PASSWORD; asked for when missing and a terminal is attached)")
    parser.add_argument("--chunk-size", type=int, default=8, metavar="MIB", help="MiB sent per PATCH (default 8)")
    parser.add_argument("--state", default=str(Path.home() / ".mediaserver-uploads.json"),
                        help="where unfinished upload URLs are kept for resuming")
    parser.add_argument("--retries", type=int, default=5, help="retries of a failed request (default 5)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.epilog = EPILOG


# -- HTTP ---------------------------------------------------------------------------------------


def _reason(exc: Exception) -> str:
    """A short reason for a failed connection ('Connection refused', 'timed out')."""
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    text = str(exc)
    found = re.search(r"\[Errno -?\d+\] ([^'\"\)]+)", text)
    if found:
        return found.group(1).strip()
    for phrase in ("Connection aborted", "RemoteDisconnected", "Connection reset", "Name or service not known"):
        if phrase in text:
            return phrase.lower().replace("remotedisconnected", "connection closed by the server")
    return type(exc).__name__


def server_error(response: Any) -> tuple[str, str]:
    """(code, message) of an error answer: `{"error": {"code", "message"}}`, or its text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("code") or ""), str(error.get("message") or error.get("code") or "")
        if isinstance(error, str):
            return "", error
    text = (response.text or "").strip().splitlines()
    return "", (text[0][:200] if text else f"HTTP {response.status_code}")


def retry_after(response: Any) -> int | None:
    """Seconds the Retry-After header asks to wait (delta seconds or an HTTP date), or None."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, int(when.timestamp() - time.time()))


def _clock(seconds_from_now: float) -> str:
    """'10:42 UTC' (with the date when it is not today)."""
    now = datetime.now(timezone.utc)
    when = now + timedelta(seconds=seconds_from_now)
    return when.strftime("%H:%M UTC" if when.date() == now.date() else "%Y-%m-%d %H:%M UTC")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        hours = seconds / 3600
        return f"{hours:.0f} h" if seconds % 3600 == 0 else f"{hours:.1f} h"
    if seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def failure(response: Any, doing: str) -> CliError:
    """The CliError for a refused or failed answer that is not a 401."""
    code, message = server_error(response)
    status = response.status_code
    if status == 429:
        wait = retry_after(response)
        when = f"retry in {wait} s (after {_clock(wait)})" if wait is not None else "retry later"
        return CliError(EXIT_RATE_LIMITED, f"{doing}: rate limited by the server; {when}")
    if status >= 500 or status == 423:
        return CliError(EXIT_SERVER_ERROR, f"{doing}: the server failed ({status} {code}: {message})")
    return CliError(EXIT_REFUSED, f"{doing}: refused by the server ({status}{' ' + code if code else ''}): {message}")


class Client:
    """One HTTP session with the gateway; connection failures become EXIT_UNREACHABLE."""

    def __init__(self, server: str, timeout: float = 60) -> None:
        self.server = server
        self.timeout = timeout
        self.session = requests.Session()
        self.answered = False  # whether the server has answered once in this run

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
            self.answered = True
            return response
        except requests.RequestException as exc:  # refused, timed out, cut off, garbled
            raise CliError(EXIT_UNREACHABLE, f"cannot reach the server at {self.server} ({_reason(exc)})") from None


# -- accounts and tokens ------------------------------------------------------------------------


def _password(args: argparse.Namespace, confirm: bool) -> str:
    if args.password:
        return args.password
    if not sys.stdin.isatty():
        raise CliError(EXIT_USAGE, "give --password (or MEDIASERVER_PASSWORD)")
    password = getpass.getpass(f"password for {args.username}: ")
    if confirm and getpass.getpass("again: ") != password:
        raise CliError(EXIT_USAGE, "the passwords differ")
    return password


class Credentials:
    """The token for one server: given (--token), kept from before, or from a login."""

    def __init__(self, client: Client, cache: TokenCache, args: argparse.Namespace) -> None:
        self.client = client
        self.cache = cache
        self.args = args
        self.token: str | None = None
        self.source = ""  # "given", "kept" or "login"

    def current(self) -> str:
        """A token to send: --token, else the kept one (unless kept for another --username),
        else a login with --username; CliError when there is none."""
        if self.token:
            return self.token
        args = self.args
        if args.token:
            expires = token_expiry(args.token)
            if expires is not None and expires <= time.time():
                raise CliError(EXIT_TOKEN_REFUSED, f"the token expired at {_stamp(expires)}; log in again with --username")
            self.token, self.source = args.token, "given"
            return self.token
        kept = self.cache.get(self.client.server)
        if kept and kept.usable() and (not args.username or kept.username == args.username):
            self.token, self.source = kept.token, "kept"
            return self.token
        if args.username:
            return self.login()
        if kept:
            raise CliError(EXIT_TOKEN_REFUSED, f"the token kept for {self.client.server} has expired; log in again with --username")
        raise CliError(EXIT_USAGE, f"no token for {self.client.server}: create an account with `mediaserver register`, "
                                   "or give --username (or --token)")

    def login(self) -> str:
        """Log in with --username and --password and keep the token for this server."""
        password = _password(self.args, confirm=False)
        response = self.client.request("POST", f"{self.client.server}/api/auth/login",
                                       json={"username": self.args.username, "password": password})
        if response.status_code == 401:
            raise CliError(EXIT_BAD_CREDENTIALS, f"login as {self.args.username} refused: wrong username or password")
        if response.status_code != 200:
            raise failure(response, f"login as {self.args.username}")
        self.token, self.source = _token_of(response), "login"
        self.cache.put(self.client.server, self.token, self.args.username)
        return self.token

    def refused(self, response: Any) -> str:
        """The server answered 401 to the current token: a fresh token (one login, when the
        refused token was a kept one and a username is given), or CliError saying why."""
        code, message = server_error(response)
        refused, source = self.token or "", self.source
        self.token = None
        if source == "kept":
            self.cache.drop(self.client.server)
            if self.args.username:
                return self.login()
        if code == "credentials_invalid":
            raise CliError(EXIT_BAD_CREDENTIALS, f"the server refused the credentials: {message}")
        expires = token_expiry(refused)
        expired = code == "token_expired" or (code not in ("token_invalid", "token_revoked")
                                              and expires is not None and expires <= time.time())
        which = {"given": "the token", "kept": f"the token kept for {self.client.server}",
                 "login": "the token just issued"}.get(source, "the token")
        reason = "has expired" if expired else f"was refused ({code or 'invalid'}: {message})"
        hint = "; log in again with --username" if source != "login" else ""
        raise CliError(EXIT_TOKEN_REFUSED, f"{which} {reason}{hint}")


def _token_of(response: Any) -> str:
    """The token of a register or login answer; CliError when the answer holds none."""
    try:
        token = response.json()["token"]
    except (ValueError, KeyError, TypeError):
        token = None
    if not isinstance(token, str) or not token:
        raise CliError(EXIT_SERVER_ERROR, f"the server's answer ({response.status_code}) holds no token; is --server a media gateway?")
    return token


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# -- uploads ------------------------------------------------------------------------------------


@dataclass
class Progress:
    """The file being sent: what Ctrl-C reports, and the progress bar (rate of this run's bytes)."""

    quiet: bool
    name: str = ""
    size: int = 0
    offset: int = 0
    started_at_offset: int = 0
    started: float = 0.0
    active: bool = False
    drawn: bool = False

    def begin(self, name: str, size: int, offset: int) -> None:
        self.name, self.size, self.offset, self.started_at_offset = name, size, offset, offset
        self.started, self.active = time.monotonic(), True
        self.draw()

    def advance(self, offset: int) -> None:
        self.offset = offset
        self.draw()

    def draw(self) -> None:
        if self.quiet:
            return
        width = 30
        share = self.offset / self.size if self.size else 1.0
        sent = self.offset - self.started_at_offset  # bytes of this run only
        rate = sent / max(time.monotonic() - self.started, 1e-3) / MiB
        bar = "#" * int(share * width)
        sys.stderr.write(f"\r{self.name[:30]:30} [{bar:{width}}] {share:6.1%} {self.offset / MiB:9.1f} MiB {rate:7.1f} MiB/s")
        sys.stderr.flush()
        self.drawn = True

    def end_line(self) -> None:
        """End the progress bar's line, so the next message starts on its own."""
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.drawn = False

    def position(self) -> str:
        """'interrupted at N of M bytes; run again to resume' (N: bytes the server confirmed)."""
        return f"interrupted at {self.offset} of {self.size} bytes; run again to resume"

    def interrupted(self) -> str:
        if not self.active:
            return "interrupted before any upload started"
        return f"{self.name}: {self.position()}"


def _header_offset(response: Any) -> int:
    """The Upload-Offset of a tus answer; CliError when it has none (not a tus server?)."""
    value = response.headers.get("Upload-Offset", "")
    if not (value.isascii() and value.isdigit()):
        raise CliError(EXIT_SERVER_ERROR, f"the server's answer ({response.status_code}) has no valid Upload-Offset; is --server a tus gateway?")
    return int(value)


def _metadata(name: str) -> str:
    return "filename " + base64.b64encode(name.encode("utf-8")).decode("ascii")


class Uploader:
    """Sends files with tus 1.0 (creation, HEAD, PATCH), resuming from kept upload URLs."""

    def __init__(self, client: Client, credentials: Credentials, storage: Any, fingerprint: Callable[[Any], str],
                 args: argparse.Namespace, progress: Progress) -> None:
        self.client = client
        self.credentials = credentials
        self.storage = storage
        self.fingerprint = fingerprint
        self.chunk = max(1, args.chunk_size) * MiB
        self.retries = max(0, args.retries)
        self.progress = progress

    def _send(self, method: str, url: str, doing: str, ok: tuple[int, ...], **kwargs: Any) -> Any:
        """One tus request with the current token; a 401 gets one fresh token and a second try;
        a transient failure raises Transient, any other answer not in `ok` CliError."""
        headers = kwargs.pop("headers", {})
        for attempt in (1, 2):
            token = self.credentials.current()
            try:
                response = self.client.request(method, url, headers={**TUS, **headers, "Authorization": f"Bearer {token}"}, **kwargs)
            except CliError as exc:
                raise Transient(exc) from None
            if response.status_code == 401 and attempt == 1:
                self.credentials.refused(response)  # raises unless there is a new token
                continue
            if response.status_code == 401:
                self.credentials.refused(response)
            break
        if response.status_code in ok:
            return response
        error = failure(response, doing)
        wait = retry_after(response)
        if response.status_code >= 500 or response.status_code == 423 or (response.status_code == 429 and wait is not None and wait <= SHORT_WAIT):
            raise Transient(error, wait)
        if response.status_code == 409 and server_error(response)[0] in ("mismatched_offset", "lease_lost"):
            raise Transient(error, 0)
        raise error

    def _offset(self, url: str, name: str) -> int | None:
        """The server's offset of the upload at `url`; None when the upload is gone."""
        response = self._send("HEAD", url, f"{name}: resuming", (200, 204, 403, 404, 410))
        if response.status_code in (403, 404, 410):
            return None
        return _header_offset(response)

    def upload(self, path: Path) -> str:
        """Upload (or resume) one file; return its upload URL once the server has every byte."""
        size = path.stat().st_size
        with path.open("rb") as stream:
            key = self.fingerprint(stream)
        url = self.storage.get_item(key)
        if url and not url.startswith(self.client.server + "/"):
            url = None  # kept for another server: never send this server's token there
        offset = 0
        if url:
            known = self._retrying(lambda: self._offset(url, path.name), path.name, size)
            if known is None:
                self._note(f"{path.name}: the earlier upload is gone from the server; starting over")
                self.storage.remove_item(key)
                url = None
            else:
                offset = known
                self._note(f"{path.name}: resuming at {offset} of {size} bytes")
        if url is None:
            created = self._retrying(lambda: self._send(
                "POST", f"{self.client.server}/files/", f"{path.name}: creating the upload", (201,),
                headers={"Upload-Length": str(size), "Upload-Metadata": _metadata(path.name)}), path.name, size)
            if not created.headers.get("Location"):
                raise CliError(EXIT_SERVER_ERROR, f"{path.name}: the server created the upload without a Location")
            url = urljoin(f"{self.client.server}/files/", created.headers["Location"])
            self.storage.set_item(key, url)
            offset = _header_offset(created) if "Upload-Offset" in created.headers else 0
        self.progress.begin(path.name, size, offset)
        with path.open("rb") as stream:
            while offset < size:
                offset = self._retrying(lambda: self._patch(url, stream, offset, size, path.name), path.name, size,
                                        resync=lambda: self._offset(url, path.name))
                self.progress.advance(offset)
        self.progress.end_line()
        self.progress.active = False
        self.storage.remove_item(key)
        return url

    def _patch(self, url: str, stream: Any, offset: int, size: int, name: str) -> int:
        stream.seek(offset)
        data = stream.read(min(self.chunk, size - offset))
        response = self._send("PATCH", url, f"{name}: sending bytes", (204, 200), data=data,
                              headers={"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
        return _header_offset(response)

    def _retrying(self, step: Callable[[], Any], name: str, size: int, resync: Callable[[], Any] | None = None) -> Any:
        """Run `step`, retrying transient failures up to --retries times (waiting Retry-After,
        else 1, 2, 4... s); when `resync` is given the server's offset is asked for again first
        (a PATCH that failed may have stored part of its bytes). A server that has not answered
        once in this run is not waited for: it is not running, or the URL is wrong."""
        attempt = 0
        while True:
            try:
                if attempt and resync is not None:
                    known = resync()
                    if known is None:
                        raise CliError(EXIT_REFUSED, f"{name}: the upload is gone from the server; run again to start over")
                    self.progress.offset = known
                return step()
            except Transient as exc:
                if attempt >= self.retries or not self.client.answered:
                    error = exc.final
                    if self.progress.active:
                        error = CliError(error.code, f"{error.message}; {self.progress.position()}")
                    raise error from None
                attempt += 1
                wait = exc.wait if exc.wait is not None else min(2 ** (attempt - 1), 30)
                self._note(f"{exc.final.message}; retry {attempt} of {self.retries} in {wait:g} s")
                time.sleep(wait)

    def _note(self, line: str) -> None:
        if not self.progress.quiet:
            self.progress.end_line()
            sys.stderr.write(line + "\n")

    def link(self, upload_url: str) -> str:
        """The media URL with how long it is valid, or the upload URL when there is none."""
        media_id = upload_url.rstrip("/").rsplit("/", 1)[1]
        try:
            response = self._send("GET", f"{self.client.server}/api/media/{media_id}", "media link", (200,))
        except (CliError, Transient):
            return f"{upload_url}\t(upload URL: read it with the token)"
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("url"), str):
            return f"{upload_url}\t(upload URL: read it with the token)"
        ttl = body.get("urlExpiresIn")
        if isinstance(ttl, (int, float)) and ttl > 0:
            return f"{body['url']}\t(valid for {_duration(ttl)}, until {_clock(ttl)}; GET /api/media/{media_id} for a new link)"
        return body["url"]


# -- commands -----------------------------------------------------------------------------------


def _needs_requests() -> CliError | None:
    if requests is None:
        return CliError(EXIT_USAGE, "the cli extra is not installed (requests): pip install 'mediaserver-gateway[cli]'")
    return None


def _server(args: argparse.Namespace) -> str:
    try:
        return normalise_server(args.server)
    except ValueError as exc:
        raise CliError(EXIT_USAGE, str(exc)) from None


def _report(command: str, run: Callable[[], int], progress: Progress | None = None) -> int:
    """Run a command: CliError and Ctrl-C end in one line on stderr and their exit status."""
    try:
        return run()
    except CliError as exc:
        if progress:
            progress.end_line()
        print(f"mediaserver {command}: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        if progress:
            progress.end_line()
            print(f"mediaserver {command}: {progress.interrupted()}", file=sys.stderr)
        else:
            print(f"\nmediaserver {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def register(args: argparse.Namespace) -> int:
    """POST /api/auth/register; keep the new account's token for the server."""
    def run() -> int:
        missing = _needs_requests()
        if missing:
            raise missing
        server = _server(args)
        if not args.username:
            raise CliError(EXIT_USAGE, "give --username (MEDIASERVER_USERNAME)")
        body = {"username": args.username, "password": _password(args, confirm=True)}
        if args.email:
            body["email"] = args.email
        response = Client(server).request("POST", f"{server}/api/auth/register", json=body)
        if response.status_code != 201:
            raise failure(response, f"registering {args.username}")
        cache = TokenCache()
        kept = cache.put(server, _token_of(response), args.username)
        until = f", valid until {_stamp(kept.expires)}" if kept.expires else ""
        print(f"registered {args.username} at {server}; signed in (token kept in {cache.path}{until})")
        return EXIT_OK

    return _report("register", run)


def run(args: argparse.Namespace) -> int:
    """`mediaserver upload`: every file, in order; the first failure that concerns them all
    (unreachable, credentials, rate limit, Ctrl-C) ends the run."""
    progress = Progress(quiet=args.quiet)

    def upload_all() -> int:
        missing_extra = _needs_requests()
        if missing_extra:
            raise missing_extra
        try:
            from tusclient.fingerprint.fingerprint import Fingerprint
            from tusclient.storage.filestorage import FileStorage
        except ImportError:
            raise CliError(EXIT_USAGE, "the cli extra is not installed (tuspy): pip install 'mediaserver-gateway[cli]'") from None
        server = _server(args)
        paths = [Path(name) for name in args.files]
        unreadable = [str(p) for p in paths if not p.is_file() or not os.access(p, os.R_OK)]
        if unreadable:
            raise CliError(EXIT_FILE_MISSING, f"no such readable file: {', '.join(unreadable)}")
        client = Client(server)
        credentials = Credentials(client, TokenCache(), args)
        uploader = Uploader(client, credentials, FileStorage(args.state), Fingerprint().get_fingerprint, args, progress)
        credentials.current()  # no token, an expired one or bad credentials: say so before any file
        status = EXIT_OK
        for path in paths:
            try:
                url = uploader.upload(path)
            except CliError as exc:
                if exc.code != EXIT_REFUSED:
                    raise
                progress.end_line()
                progress.active = False
                print(f"mediaserver upload: {exc.message}", file=sys.stderr)
                status = status or exc.code
                continue
            print(f"{path}\t{uploader.link(url)}", flush=True)
        return status

    return _report("upload", upload_all, progress)
