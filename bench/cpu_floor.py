"""What a GiB of upload must cost in CPU on this machine, and what the S3 store alone costs.

Prints, in CPU seconds per GiB (user + system of this process, all threads):
  * the floors: one sha256 pass (the file digest), one CRC32 pass as the store computes it
    (the S3 part checksum), one copy of the bytes (socket buffer -> part buffer), and the
    CRC32 of the standard library for comparison;
  * the network floors on loopback: receiving a GiB (recv_into a 1 MiB buffer, as the gateway
    takes a body) and sending one (one sendall per part, as the store sends a part), over plain
    TCP and over TLS (OpenSSL's default TLS 1.3 cipher; one write per 16 KiB record), the other
    end in its own process. On loopback the sender's system time also holds the kernel's
    receive path of the other end, so these floors are above what a NIC-bound send costs;
  * the S3 store alone: `S3Store.upload_part` of --parts parts of --part-size bytes from one
    in-memory buffer into moto, over plain HTTP and over TLS (moto served with a certificate
    made at run time), with the payload signed and unsigned where the transport allows both.
    moto runs in its own process, so its CPU is not counted.

These are the numbers the gateway's own figure (bench/peers.py --task-cpu ...) is compared with:
the gateway's CPU per GiB minus the floors it cannot avoid is what the rest of the path costs.

Usage: python -m bench.cpu_floor [--part-size 8MiB] [--parts 64] [--transports http,https]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import socket
import ssl
import sys
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3  # noqa: E402

from bench.task_limits import make_tls_certificate, start_moto_tls  # noqa: E402
from bench.upload import start_moto  # noqa: E402
from gateway.config import _size  # noqa: E402
from streaming.stores.s3 import S3Store, crc32  # noqa: E402
from tests.support import stop_process  # noqa: E402

GiB = 1024 ** 3


def cpu_now() -> float:
    """CPU seconds (user + system) of this process so far, all threads."""
    times = os.times()
    return times.user + times.system


def per_gib(seconds: float, nbytes: int) -> float:
    return seconds * GiB / nbytes


def floor_rows(view: memoryview, passes: int) -> list[tuple[str, float]]:
    """CPU s/GiB of sha256, the store's CRC32, zlib's CRC32 and one copy over `view`, `passes` times."""
    total = len(view) * passes
    target = bytearray(len(view))
    rows = []

    def measure(name: str, work) -> None:
        started = cpu_now()
        for _ in range(passes):
            work()
        rows.append((name, per_gib(cpu_now() - started, total)))

    digest = hashlib.sha256()
    measure("sha256 (file digest)", lambda: digest.update(view))
    state = [0]
    measure("CRC32 as the S3 store computes it", lambda: state.__setitem__(0, crc32(view, state[0])))
    measure("CRC32 of zlib (for comparison)", lambda: state.__setitem__(0, zlib.crc32(view, state[0])))

    def copy() -> None:
        target[:] = view

    measure("one copy of the bytes", copy)
    return rows


def _peer(role: str, tls: tuple[str, str] | None, size: int, part: int, ready) -> None:
    """The other end of a loopback floor: a sink reading everything (role 'sink') or a source
    sending `size` bytes in `part`-sized sendalls (role 'source'); reports its port on `ready`."""
    listener = socket.create_server(("127.0.0.1", 0))
    ready.put(listener.getsockname()[1])
    conn, _ = listener.accept()
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        conn = context.wrap_socket(conn, server_side=True)
    if role == "sink":
        buffer = memoryview(bytearray(1 << 20))
        while conn.recv_into(buffer):
            pass
    else:
        data = memoryview(bytearray(os.urandom(part)))
        for _ in range(size // part):
            conn.sendall(data)
    conn.close()


def network_rows(view: memoryview, passes: int, folder: Path) -> list[tuple[str, float]]:
    """CPU s/GiB of receiving and of sending `passes` x `view` over loopback TCP and TLS (this
    process's side only)."""
    ca, cert, key = make_tls_certificate(folder)
    total = len(view) * passes
    rows = []
    spawn = multiprocessing.get_context("fork")
    for tls in (None, (str(cert), str(key))):
        for role in ("receive", "send"):
            ready = spawn.Queue()
            peer = spawn.Process(target=_peer, args=("source" if role == "receive" else "sink", tls, total,
                                                     len(view), ready), daemon=True)
            peer.start()
            conn: socket.socket = socket.create_connection(("127.0.0.1", ready.get(timeout=30)))
            if tls:
                client = ssl.create_default_context(cafile=str(ca))
                conn = client.wrap_socket(conn, server_hostname="127.0.0.1")
            started = cpu_now()
            if role == "receive":
                buffer = memoryview(bytearray(1 << 20))
                while conn.recv_into(buffer):
                    pass
            else:
                for _ in range(passes):
                    conn.sendall(view)
            spent = cpu_now() - started
            conn.close()
            peer.join(60)
            name = f"{role} over loopback {'TLS' if tls else 'TCP'}"
            rows.append((name + (" (recv_into 1 MiB)" if role == "receive" else " (sendall per part)"),
                         per_gib(spent, total)))
    return rows


async def store_cost(endpoint: str, view: memoryview, parts: int, signing: str) -> float:
    """CPU s/GiB of uploading `parts` parts of `view` through S3Store (moto's CPU not counted)."""
    bucket = "floor"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="bench", aws_secret_access_key="bench")
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    executor = ThreadPoolExecutor(4)
    store = S3Store(bucket, executor, region="us-east-1", endpoint_url=endpoint, sse="",
                    payload_signing=signing)
    upload_id = await store.create_multipart("floor.bin", "application/octet-stream")
    await store.upload_part("floor.bin", upload_id, 1, view)  # warm the connection
    started = cpu_now()
    for number in range(2, parts + 2):
        await store.upload_part("floor.bin", upload_id, number, view)
    spent = cpu_now() - started
    await store.abort_multipart("floor.bin", upload_id)
    await store.close()
    executor.shutdown()
    return per_gib(spent, len(view) * parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part-size", default="8MiB")
    parser.add_argument("--parts", type=int, default=64)
    parser.add_argument("--transports", default="http,https")
    args = parser.parse_args()
    part_size = _size(args.part_size)
    view = memoryview(bytearray(os.urandom(part_size)))
    passes = max(1, GiB // part_size)

    print(f"CPU seconds per GiB on this machine ({os.cpu_count()} CPUs), parts of {args.part_size}")
    print("floors:")
    for name, value in floor_rows(view, passes):
        print(f"  {name:46s} {value:6.3f}")
    with tempfile.TemporaryDirectory() as folder:
        print("network floors (the other end in its own process, not counted):")
        for name, value in network_rows(view, passes, Path(folder)):
            print(f"  {name:46s} {value:6.3f}")
    print(f"S3 store alone ({args.parts} x {args.part_size} upload_part into moto; moto's CPU not counted):")
    with tempfile.TemporaryDirectory() as folder:
        servers = []
        try:
            for transport in args.transports.split(","):
                if transport == "http":
                    process, endpoint = start_moto()
                else:
                    process, endpoint = start_moto_tls(Path(folder))
                servers.append(process)
                for signing in ("auto", "off", "on"):
                    cost = asyncio.run(store_cost(endpoint, view, args.parts, signing))
                    print(f"  {transport:5s} S3_PAYLOAD_SIGNING={signing:4s} {cost:6.3f}")
        finally:
            for process in servers:
                stop_process(process)


if __name__ == "__main__":
    main()
