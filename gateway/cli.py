"""The `mediaserver` command: serve, worker, config, register, upload."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from gateway import __version__
from gateway.config import Settings, describe, describe_json

log = logging.getLogger("mediaserver")


async def serve(settings: Settings) -> None:
    """Run the gateway until SIGINT or SIGTERM."""
    from gateway import allocator
    from gateway.app import make_app, make_server

    allocator.tune()
    from gateway.services import Services

    services = await Services.start(settings)
    server = make_server(make_app(services), settings)
    server.listen(settings.port, address=settings.host)
    if settings.metrics_port:
        from gateway.app import make_metrics_app

        make_server(make_metrics_app(services), settings).listen(settings.metrics_port, address=settings.host)
    log.info("listening", extra={"host": settings.host, "port": settings.port,
                                 "store": services.store.name, "version": __version__})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    await stop.wait()
    await drain(services, server, settings.shutdown_timeout)
    await services.close()


def dump_tasks() -> None:
    """Log where every task of the event loop waits (SIGUSR1: for operators chasing a hang)."""
    import io

    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(limit=12, file=out)
        log.warning("task stack", extra={"task": task.get_name(), "stack": out.getvalue()[-4000:]})


async def drain(services, server, timeout: float) -> None:
    """Shut down without losing a received byte: health says 503 and new requests are refused at
    once, no new connection is accepted, requests in flight go on for up to `timeout` seconds;
    then every connection is closed, and bodies still running end at a durable point (their
    tails stored, counted in their offsets) before the services close."""
    log.info("draining", extra={"requests_in_flight": services.requests_in_flight, "timeout_seconds": timeout})
    services.draining = True
    server.stop()
    if not await services.requests_done(timeout):
        log.warning("requests still running at the shutdown timeout; ending them at a durable point",
                    extra={"requests_in_flight": services.requests_in_flight})
    try:
        await asyncio.wait_for(server.close_all_connections(), timeout=10)
    except asyncio.TimeoutError:
        log.warning("connections still open at shutdown")
    if not await services.uploads.sessions_closed(30):
        log.warning("uploads still ending at shutdown")
    log.info("shutting down")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mediaserver", description="Resumable media upload gateway (tus 1.0 into S3, state in MongoDB).")
    parser.add_argument("--version", action="version", version=f"mediaserver {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    run = commands.add_parser("serve", help="run the gateway", description="Run the HTTP gateway. Flags override the environment; `mediaserver config` lists every variable.")
    run.add_argument("--host", help="address to listen on (HOST)")
    run.add_argument("--port", type=int, help="TCP port (PORT, default 3000)")
    run.add_argument("--data-dir", help="folder for local objects, the embedded MongoDB and secrets (DATA_DIR)")

    config = commands.add_parser("config", help="print every setting with its default and help",
                                 description="Print every environment variable the gateway reads as NAME=value "
                                             "(its default, as you would write it in the environment) and what it does.")
    config.add_argument("--json", action="store_true", help="one JSON object: {NAME: {default, help}}")

    from gateway.upload_cli import add_arguments, add_register_arguments

    account = commands.add_parser("register", help="create an account on a gateway and keep its token",
                                  description="Create an account (POST /api/auth/register) and keep its token for "
                                              "`mediaserver upload` in the user's config folder.")
    add_register_arguments(account)

    upload = commands.add_parser("upload", help="upload files with tus, resuming interrupted uploads",
                                 description="Upload files to a gateway with the tus protocol. An interrupted upload resumes when the same command runs again. Prints each file's media URL.")
    add_arguments(upload)

    worker = commands.add_parser("worker", help="process media jobs from the queue (no public HTTP)",
                                 description="Take media processing jobs from PROCESSING_QUEUE_URL and run them, "
                                             "PROCESSING_CONCURRENCY at once; /health and /metrics on WORKER_PORT. "
                                             "Reads the same environment as `serve`.")
    worker.add_argument("--port", type=int, help="TCP port of /health and /metrics (WORKER_PORT, default 3001)")
    return parser


def print_to_pipe(text: str) -> int:
    """Print `text`; a reader that stops early (`mediaserver config | head`) ends it quietly."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "config":
        return print_to_pipe(describe_json() if args.json else describe())
    if args.command == "register":
        from gateway.upload_cli import register

        return register(args)
    if args.command == "upload":
        from gateway.upload_cli import run

        return run(args)
    try:
        if args.command == "worker":
            from gateway.worker_cli import check

            settings = Settings.from_env(worker_port=args.port)
            check(settings)
        else:
            settings = Settings.from_env(host=args.host, port=args.port, data_dir=args.data_dir)
    except ValueError as exc:  # including a worker refused for its settings
        print(f"mediaserver: configuration error: {exc}", file=sys.stderr)
        return 2
    from gateway.logs import configure

    configure(settings.log_level, settings.log_format)
    from metadata.errors import MetadataError
    from streaming.stores.base import StoreError

    try:
        if args.command == "worker":
            from gateway.worker_cli import run_worker

            asyncio.run(run_worker(settings))
        else:
            asyncio.run(serve(settings))
    except (StoreError, MetadataError, OSError) as exc:
        # a dependency that is unreachable or refuses us at start: one clear line, no traceback
        log.error("could not start", extra={"error": f"{type(exc).__name__}: {exc}"})
        print(f"mediaserver: could not start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
