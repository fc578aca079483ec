"""`mediaserver upload FILE...`: resumable uploads from the command line with tuspy.

The tus URL of each file is kept in a small local database keyed by the file's
fingerprint, so running the same command again after an interruption resumes
where the server's offset says, instead of starting over.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

try:
    import requests
except ImportError:  # the `cli` extra is missing: `serve` does not need it, `upload` says so in run()
    requests = None  # type: ignore[assignment]

MiB = 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="files to upload")
    parser.add_argument("--server", default=os.environ.get("MEDIASERVER_URL", "http://127.0.0.1:3000"),
                        help="gateway base URL (MEDIASERVER_URL, default http://127.0.0.1:3000)")
    parser.add_argument("--token", default=os.environ.get("MEDIASERVER_TOKEN"), help="bearer token (MEDIASERVER_TOKEN)")
    parser.add_argument("--username", default=os.environ.get("MEDIASERVER_USERNAME"), help="log in with this user instead of --token")
    parser.add_argument("--password", default=os.environ.get("MEDIASERVER_PASSWORD"), help="password for --username (MEDIASERVER_PASSWORD)")
    parser.add_argument("--chunk-size", type=int, default=8, metavar="MIB", help="MiB sent per PATCH (default 8)")
    parser.add_argument("--state", default=str(Path.home() / ".mediaserver-uploads.json"),
                        help="where unfinished upload URLs are kept for resuming")
    parser.add_argument("--retries", type=int, default=5, help="retries of a failed chunk (default 5)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _token(args: argparse.Namespace) -> str:
    if args.token:
        return args.token
    if args.username and args.password:
        response = requests.post(f"{args.server}/api/auth/login", json={"username": args.username, "password": args.password}, timeout=30)
        if response.status_code != 200:
            raise SystemExit(f"mediaserver upload: login failed ({response.status_code})")
        return response.json()["token"]
    raise SystemExit("mediaserver upload: give --token (or MEDIASERVER_TOKEN), or --username and --password")


def _progress(name: str, done: int, total: int, started: float, quiet: bool) -> None:
    if quiet:
        return
    width = 30
    share = done / total if total else 1.0
    rate = done / max(time.monotonic() - started, 1e-6) / MiB
    bar = "#" * int(share * width)
    sys.stderr.write(f"\r{name[:30]:30} [{bar:{width}}] {share:6.1%} {done / MiB:9.1f} MiB {rate:7.1f} MiB/s")
    sys.stderr.flush()


def upload_one(path: Path, args: argparse.Namespace, token: str, storage) -> str:
    """Upload (or resume) one file; return its media URL."""
    from tusclient import client as tus_client

    headers = {"Authorization": f"Bearer {token}"}
    client = tus_client.TusClient(f"{args.server}/files/", headers=headers)
    uploader = client.uploader(str(path), chunk_size=args.chunk_size * MiB, metadata={"filename": path.name},
                               store_url=True, url_storage=storage, retries=args.retries, retry_delay=2)
    size = path.stat().st_size
    resumed_at = uploader.offset
    if resumed_at and not args.quiet:
        sys.stderr.write(f"{path.name}: resuming at {resumed_at} of {size} bytes\n")
    started = time.monotonic()
    _progress(path.name, uploader.offset, size, started, args.quiet)
    while uploader.offset < size or uploader.url is None:
        uploader.upload_chunk()
        _progress(path.name, uploader.offset, size, started, args.quiet)
        if size == 0:
            break
    if not args.quiet:
        sys.stderr.write("\n")
    storage.remove_item(uploader.fingerprinter.get_fingerprint(uploader.get_file_stream()))
    media_id = uploader.url.rstrip("/").rsplit("/", 1)[1]
    response = requests.get(f"{args.server}/api/media/{media_id}", headers=headers, timeout=30)
    if response.status_code == 200 and response.json().get("url"):
        return response.json()["url"]
    return uploader.url


def run(args: argparse.Namespace) -> int:
    # tuspy is imported here, not at start-up: `mediaserver serve` never loads it
    try:
        if requests is None:
            raise ImportError(name="requests")
        from tusclient.exceptions import TusCommunicationError
        from tusclient.storage.filestorage import FileStorage
    except ImportError as exc:
        missing = "tuspy" if (exc.name or "").startswith("tusclient") else exc.name or exc
        print(f"mediaserver upload: the cli extra is not installed ({missing}): "
              "pip install 'mediaserver-gateway[cli]'", file=sys.stderr)
        return 2

    token = _token(args)
    paths = [Path(name) for name in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"mediaserver upload: not a file: {', '.join(missing)}", file=sys.stderr)
        return 2
    storage = FileStorage(args.state)
    failures = 0
    for path in paths:
        try:
            print(f"{path}\t{upload_one(path, args, token, storage)}")
        except (TusCommunicationError, requests.RequestException, OSError) as exc:
            failures += 1
            sys.stderr.write(f"\n{path}: upload interrupted ({exc}); run the same command again to resume\n")
    return 1 if failures else 0
