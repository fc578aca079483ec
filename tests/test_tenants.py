"""Many users on one gateway: one careless or hostile user cannot take what the others need.

Scaled-down reproductions of the attacks of a shared task: a user holding the upload memory
with trickling bodies, a user joining one partial many times, a user creating uploads without
end. `bench/tenants.py` runs the stall attack at full size.
"""

from __future__ import annotations

import base64
import secrets
import socket
import time
from pathlib import Path

import pytest
import requests

from tests.support import (
    GatewayProcess, auth, create_upload, download, head, patch, random_bytes, raw_patch, read_status,
)

MiB = 1024 * 1024
PASSWORD = "tenant-password-1234"


def account(gateway: GatewayProcess) -> str:
    """A registered user's token."""
    name = "t" + secrets.token_hex(5)
    response = requests.post(gateway.url + "/api/auth/register", timeout=30,
                             json={"username": name, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return response.json()["token"]


@pytest.fixture(scope="module")
def shared(start_gateway) -> GatewayProcess:
    """A small shared gateway: 6 parts of memory, at most 2 per user, short deadlines and windows."""
    return start_gateway("local", PART_SIZE="5MiB", UPLOAD_MEMORY_BUDGET="30MiB", UPLOAD_MEMORY_PER_USER="10MiB",
                         UPLOAD_MEMORY_WAIT="2", MIN_BODY_RATE="16KiB", MIN_BODY_RATE_WINDOW="3",
                         MAX_UNFINISHED_UPLOADS="12", MAX_CONCAT_PARTS="3", MAX_UPLOAD_METADATA="512",
                         TUS_MAX_SIZE="64MiB")


def trickle(sockets: list[socket.socket], seconds: float) -> None:
    """Send one byte on every open socket every half second for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for sock in sockets:
            try:
                sock.send(b"x")
            except OSError:
                pass
        time.sleep(0.5)


def answer_of(sock: socket.socket) -> int | None:
    """The status the gateway answered on `sock`, or None when it closed it without one."""
    sock.settimeout(10)
    try:
        return read_status(sock)
    except (OSError, ValueError, AssertionError):
        return None
    finally:
        sock.close()


def test_a_trickling_user_does_not_stall_the_others(shared):
    """User A opens more trickling PATCHes than the memory budget has parts; user B's tus and REST
    uploads still go through; A gets at most its share, waits past the deadline get 503, and the
    trickling bodies are closed for being too slow, keeping every byte that arrived."""
    a, b = account(shared), account(shared)
    a_urls = [create_upload(shared, a, 10 * MiB) for _ in range(8)]
    a_socks = [raw_patch(url, a, 0, 10 * MiB, b"x") for url in a_urls]
    trickle(a_socks, 1.5)

    data = random_bytes(12 * MiB + 5, seed=140)
    started = time.monotonic()
    b_url = create_upload(shared, b, len(data))
    response = patch(b_url, b, 0, data)
    assert response.status_code == 204, response.text
    rest = requests.post(shared.url + "/api/media/upload", headers=auth(b), timeout=60,
                         files={"file": ("b.bin", data[: 3 * MiB])})
    assert rest.status_code == 201, rest.text
    b_seconds = time.monotonic() - started
    assert download(b_url, b) == data

    trickle(a_socks, 4)  # past the rate window: the trickles are closed
    answers = [answer_of(sock) for sock in a_socks]
    assert 503 in answers, f"waits for A's third buffer end in 503: {answers}"
    assert all(answer in (None, 503) for answer in answers), answers
    offsets = [int(head(url, a).headers["Upload-Offset"]) for url in a_urls]
    assert any(offsets), f"the trickles that had a buffer kept what arrived: {offsets}"
    for url, offset in zip(a_urls, offsets):  # what arrived was kept, and nothing else
        assert offset == 0 or set(download_prefix(shared, url, a, offset)) == {ord("x")}
    health = requests.get(shared.url + "/health", timeout=10)
    assert health.status_code == 200
    print(f"B's uploads took {b_seconds:.1f} s under the attack; A's offsets {offsets}")


def download_prefix(gateway: GatewayProcess, url: str, token: str, size: int) -> bytes:
    """The first `size` bytes of an unfinished upload, resumed to the end with filler and read back."""
    info = head(url, token)
    length, offset = int(info.headers["Upload-Length"]), int(info.headers["Upload-Offset"])
    assert patch(url, token, offset, b"y" * (length - offset)).status_code == 204
    return download(url, token)[:size]


def test_memory_waits_have_a_deadline_and_keep_durable_bytes(shared):
    """A user at its memory share whose next body waits past UPLOAD_MEMORY_WAIT gets 503 with
    Retry-After; nothing of that body is counted, and the upload continues afterwards."""
    a = account(shared)
    holders = [raw_patch(create_upload(shared, a, 10 * MiB), a, 0, 10 * MiB, b"h") for _ in range(2)]
    time.sleep(0.5)
    url = create_upload(shared, a, 6 * MiB)
    response = patch(url, a, 0, random_bytes(6 * MiB, seed=141))
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "server_busy"
    assert response.headers["Retry-After"]
    assert head(url, a).headers["Upload-Offset"] == "0"
    for sock in holders:
        sock.close()
    time.sleep(0.5)
    data = random_bytes(6 * MiB, seed=142)
    assert patch(url, a, 0, data).status_code == 204
    assert download(url, a) == data


def _partial(gateway: GatewayProcess, token: str, data: bytes) -> str:
    url = create_upload(gateway, token, len(data), **{"Upload-Concat": "partial"})
    assert patch(url, token, 0, data).status_code == 204
    return url


def _final(gateway: GatewayProcess, token: str, urls: list[str]) -> requests.Response:
    return requests.post(gateway.files_url, timeout=60, headers=auth(token, **{"Upload-Concat": "final;" + " ".join(urls)}))


def test_concatenation_is_bounded(shared):
    """A partial joins once and one final only; a final joins at most MAX_CONCAT_PARTS partials;
    refusals are 400 JSON errors that leave the partials usable."""
    token = account(shared)
    first, second = _partial(shared, token, b"a" * 1000), _partial(shared, token, b"b" * 1000)
    twice = _final(shared, token, [first, first])
    assert twice.status_code == 400 and twice.json()["error"]["code"] == "invalid_concat", twice.text
    many = _final(shared, token, [_partial(shared, token, bytes([65 + i]) * 10) for i in range(4)])
    assert many.status_code == 400 and "at most 3" in many.json()["error"]["message"], many.text
    joined = _final(shared, token, [first, second])
    assert joined.status_code == 201, joined.text
    assert download(joined.headers["Location"], token) == b"a" * 1000 + b"b" * 1000
    again = _final(shared, token, [second])
    assert again.status_code == 400 and "already joined" in again.json()["error"]["message"], again.text


def test_a_final_past_the_maximum_size_is_refused(shared):
    token = account(shared)
    big = [_partial(shared, token, random_bytes(30 * MiB, seed=143 + i)) for i in range(3)]
    response = _final(shared, token, big)
    assert response.status_code == 413, response.text
    assert _final(shared, token, big[:2]).status_code == 201, "the refused final claimed nothing"


def test_unfinished_uploads_and_metadata_are_capped_per_user(shared):
    token, other = account(shared), account(shared)
    urls = [create_upload(shared, token, 100) for _ in range(12)]
    refused = requests.post(shared.files_url, timeout=30, headers=auth(token, **{"Upload-Length": "100"}))
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "too_many_uploads" and refused.headers["Retry-After"]
    create_upload(shared, other, 100)  # another user is not affected
    assert requests.delete(urls[0], timeout=30, headers=auth(token)).status_code == 204
    create_upload(shared, token, 100)  # room again
    for url in urls[1:]:
        assert requests.delete(url, timeout=30, headers=auth(token)).status_code == 204

    metadata = "filename " + base64.b64encode(b"n" * 600).decode()
    response = requests.post(shared.files_url, timeout=30, headers=auth(token, **{
        "Upload-Length": "100", "Upload-Metadata": metadata}))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "metadata_too_large" and "Location" not in response.headers


def _status_kib(path: Path, field: str) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in {path}")


def test_parallel_concatenations_wait_for_the_upload_memory(start_gateway):
    """Joining small partials takes its buffers from the upload memory budget: with room for one
    joined part at a time, many finals at once all complete, correct, one after another."""
    from concurrent.futures import ThreadPoolExecutor

    gateway = start_gateway("local", PART_SIZE="5MiB", UPLOAD_MEMORY_BUDGET="10MiB", UPLOAD_MEMORY_PER_USER="10MiB",
                            UPLOAD_MEMORY_WAIT="60", PROCESSING_CONCURRENCY="0")
    token = account(gateway)
    pieces = [[random_bytes(3 * MiB, seed=150 + 2 * i), random_bytes(3 * MiB, seed=151 + 2 * i)] for i in range(10)]
    partials = [[_partial(gateway, token, piece) for piece in pair] for pair in pieces]
    status = Path(f"/proc/{gateway.process.pid}/status")
    Path(f"/proc/{gateway.process.pid}/clear_refs").write_text("5")  # peak RSS from here on
    before = _status_kib(status, "VmRSS")
    with ThreadPoolExecutor(len(partials)) as pool:
        finals = list(pool.map(lambda urls: _final(gateway, token, urls), partials))
    grown = (_status_kib(status, "VmHWM") - before) / 1024
    assert [final.status_code for final in finals] == [201] * len(finals), [final.text for final in finals]
    # ten joins of 6 MiB at once would take 60 MiB; through the 10 MiB budget, about one at a time
    assert grown < 10 + 20, f"peak RSS grew {grown:.0f} MiB during the joins"
    for final, pair in zip(finals, pieces):
        assert download(final.headers["Location"], token) == b"".join(pair)
    metrics = requests.get(gateway.url + "/metrics", timeout=10).text
    assert "mediaserver_upload_buffer_bytes 0.0" in metrics, "every joined part's buffer was given back"
