"""Deterministic fault cases: S3 failing through bench/fault_proxy.py, MongoDB going away.

The long randomised versions are `python bench/faults.py`. Here every fault is chosen
by a fixed rule (every UploadPart fails once, part 2 fails, all of S3 is down, MongoDB
is killed at a known point), so each test does the same thing on every run.
"""

from __future__ import annotations

import threading
import time
from typing import Iterator

import pytest
import requests

from bench.fault_proxy import FailAll, FailOnce, FaultProxy, Request, no_faults
from bench.faults import MongoServer
from tests.support import auth, create_upload, download, head, patch, random_bytes, raw_patch, sha256, wait_for_offset

MiB = 1024 * 1024
PART = 5 * MiB


@pytest.fixture(scope="module")
def proxy(s3_server) -> Iterator[FaultProxy]:
    endpoint = s3_server["S3_ENDPOINT_URL"]
    if not endpoint.startswith("http://"):
        pytest.skip("the fault proxy forwards plain http:// S3 endpoints only")
    with FaultProxy(endpoint) as running:
        yield running


@pytest.fixture(autouse=True)
def healthy_s3(request) -> Iterator[None]:
    """Every test starts and ends with the proxy passing everything."""
    running = request.getfixturevalue("proxy") if "proxy" in request.fixturenames else None
    if running is not None:
        running.policy = no_faults
        running.reset_stats()
    yield
    if running is not None:
        running.policy = no_faults


@pytest.fixture(scope="module")
def retrying(start_gateway, proxy):
    """A gateway whose S3 calls go through the proxy, with the default S3 retries."""
    return start_gateway("s3", S3_ENDPOINT_URL=proxy.url, PART_SIZE="5MiB", LEASE_TTL="3", LEASE_WAIT="4")


@pytest.fixture(scope="module")
def not_retrying(start_gateway, retrying):
    """A second instance on the same proxy, database and bucket, with one attempt per S3 call
    (documented meaning of S3_MAX_ATTEMPTS=1; see test_s3_max_attempts_counts_attempts)."""
    return start_gateway("s3", share=retrying, S3_MAX_ATTEMPTS="1")


def assert_503(response: requests.Response, code: str | None = None) -> None:
    assert response.status_code == 503, (response.status_code, response.text[:300])
    assert response.headers.get("Retry-After"), "a 503 says when to retry"
    if response.request.method != "HEAD":
        error = response.json()["error"]
        assert set(error) == {"code", "message"}
        if code is not None:
            assert error["code"] == code


# -- S3 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["500", "slowdown", "reset", "lost"])
def test_every_s3_write_failing_once_is_retried(retrying, proxy, token, kind):
    """Each UploadPart, PutObject (the tail), CreateMultipartUpload and
    CompleteMultipartUpload fails on its first attempt; botocore's retries carry the upload."""
    proxy.policy = FailOnce({"UploadPart", "PutObject", "CreateMultipartUpload", "CompleteMultipartUpload"}, kind)
    data = random_bytes(12 * MiB + 5, seed=21)
    url = create_upload(retrying, token, len(data))
    first = 7 * MiB + 3  # one part plus a tail, then the rest: every kind of write happens
    assert patch(url, token, 0, data[:first]).status_code == 204
    assert int(head(url, token).headers["Upload-Offset"]) == first
    response = patch(url, token, first, data[first:])
    assert response.status_code == 204, response.text
    faults = proxy.stats()["faulted_operations"]
    assert faults.get("UploadPart", 0) >= 2 and faults.get("CompleteMultipartUpload") == 1, faults
    proxy.policy = no_faults
    assert sha256(download(url, token)) == sha256(data)


def fail_part(number: int, times: int, kind: str = "503"):
    """A policy failing the first `times` attempts of UploadPart number `number`."""
    failed = []
    lock = threading.Lock()

    def policy(request: Request) -> str | None:
        if request.operation == "UploadPart" and request.query.get("partNumber") == str(number):
            with lock:
                if len(failed) < times:
                    failed.append(request.target)
                    return kind
        return None

    return policy


def test_a_failed_part_fails_the_patch_cleanly_and_it_resumes(not_retrying, proxy, token):
    proxy.policy = fail_part(2, times=1_000_000)  # part 2 fails on every attempt
    data = random_bytes(17 * MiB, seed=22)
    url = create_upload(not_retrying, token, len(data))
    response = patch(url, token, 0, data)
    assert_503(response, "storage_unavailable")
    offset = int(head(url, token).headers["Upload-Offset"])
    assert offset == PART, "part 1 was durable and stays counted; nothing from part 2 on"
    proxy.policy = no_faults
    response = patch(url, token, offset, data[offset:])
    assert response.status_code == 204, response.text
    assert sha256(download(url, token)) == sha256(data)


def test_s3_max_attempts_counts_attempts(not_retrying, proxy, token):
    """S3_MAX_ATTEMPTS is documented as "Attempts per S3 call": with 1, a failed UploadPart is not retried."""
    proxy.policy = fail_part(1, times=1)
    data = random_bytes(6 * MiB, seed=25)
    url = create_upload(not_retrying, token, len(data))
    response = patch(url, token, 0, data)
    assert proxy.stats()["requests"]["UploadPart"] == 1, "S3_MAX_ATTEMPTS=1 sent the part more than once"
    assert_503(response, "storage_unavailable")


def test_store_failure_during_a_download_is_503(not_retrying, proxy, token):
    data = random_bytes(1000, seed=26)
    url = create_upload(not_retrying, token, len(data))
    assert patch(url, token, 0, data).status_code == 204
    proxy.policy = FailAll("503", {"GetObject"})
    response = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert_503(response, "storage_unavailable")
    proxy.policy = no_faults
    assert download(url, token) == data


def test_s3_down_then_back(not_retrying, proxy, token):
    data = random_bytes(11 * MiB, seed=23)
    url = create_upload(not_retrying, token, len(data))
    assert patch(url, token, 0, data[:6 * MiB]).status_code == 204  # a part and a tail
    proxy.policy = FailAll("503")
    for _ in range(2):
        response = patch(url, token, 6 * MiB, data[6 * MiB:])
        assert_503(response, "storage_unavailable")
        assert int(head(url, token).headers["Upload-Offset"]) == 6 * MiB
    health = requests.get(not_retrying.url + "/health/detailed", timeout=30)
    assert health.status_code == 503 and health.json()["checks"]["store"]["status"] == "error"
    proxy.policy = no_faults
    assert patch(url, token, 6 * MiB, data[6 * MiB:]).status_code == 204
    assert sha256(download(url, token)) == sha256(data)


def test_a_download_cut_mid_body_never_passes_wrong_bytes(not_retrying, proxy, token):
    """The first ranged read of the object works, the next ones are reset: the gateway has
    already sent the head, so the client must see a short body, never other bytes."""
    data = random_bytes(6 * MiB, seed=24)
    url = create_upload(not_retrying, token, len(data))
    assert patch(url, token, 0, data).status_code == 204
    proxy.policy = lambda request: (
        "reset" if request.operation == "GetObject" and not request.headers.get("range", "").startswith("bytes=0-")
        else None)
    received = b""
    try:
        with requests.get(url, headers={"Authorization": f"Bearer {token}"}, stream=True, timeout=60) as response:
            assert response.status_code == 200
            for chunk in response.iter_content(256 * 1024):
                received += chunk
    except requests.RequestException:
        pass  # the transfer broke: a clean failure
    assert len(received) < len(data), "the cut-off must show"
    assert data.startswith(received), "every byte that arrived is right"
    assert proxy.stats()["faults"].get("reset"), "the fault happened"
    proxy.policy = no_faults
    assert download(url, token) == data


# -- MongoDB ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mongo(tmp_path_factory) -> Iterator[MongoServer]:
    """An nx-27017 server of these tests alone, to stop and start."""
    server = MongoServer(tmp_path_factory.mktemp("mongo-faults")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fragile(start_gateway, mongo):
    # frequent heartbeats: the driver notices a frozen server within about a second
    # a lease renewed every 3 s: a writer's part commit fails (after 1 s) before its lease renewal does;
    # a lease its holder could not give back while MongoDB was away expires within 9 s
    return start_gateway("local", MONGODB_URI=mongo.uri + "?heartbeatFrequencyMS=500", MONGODB_TIMEOUT="1",
                         PART_SIZE="5MiB", LEASE_TTL="9", LEASE_WAIT="12")


@pytest.fixture
def running_mongo(mongo) -> Iterator[MongoServer]:
    yield mongo
    if mongo.frozen:
        mongo.thaw()
    if mongo.process is None or mongo.process.poll() is not None:
        mongo.restart()


def test_mongodb_killed_then_restarted(fragile, running_mongo, token):
    data = random_bytes(7 * MiB, seed=31)
    url = create_upload(fragile, token, len(data))
    assert patch(url, token, 0, data[:3]).status_code == 204
    running_mongo.kill()
    assert_503(head(url, token))
    assert_503(patch(url, token, 3, data[3:1000]))  # small: refused before the body is read
    assert_503(requests.post(fragile.files_url, headers=auth(token, **{"Upload-Length": "5"}), timeout=30))
    assert requests.get(fragile.url + "/health", timeout=10).status_code == 200, "liveness does not need MongoDB"
    anonymous = requests.get(fragile.url + "/api/media", timeout=30)
    assert anonymous.status_code == 401, "the shared rate limit falls back to this instance's count"
    assert anonymous.headers.get("RateLimit-Limit")
    assert requests.get(fragile.url + "/health/detailed", timeout=30).status_code == 503
    running_mongo.restart()
    assert wait_for_offset(url, token, lambda o: True, timeout=30) == 3
    response = patch(url, token, 3, data[3:])
    assert response.status_code == 204, response.text
    assert download(url, token) == data


def test_mongodb_frozen_then_thawed(fragile, running_mongo, token):
    data = random_bytes(100_000, seed=32)
    url = create_upload(fragile, token, len(data))
    assert patch(url, token, 0, data[:10]).status_code == 204
    running_mongo.freeze()
    started = time.monotonic()
    response = requests.head(url, headers=auth(token), timeout=60)
    assert_503(response)
    # a frozen server answers nothing; the driver gives up once its heartbeat notices
    assert time.monotonic() - started < 30
    running_mongo.thaw()
    assert wait_for_offset(url, token, lambda o: True, timeout=30) == 10
    assert patch(url, token, 10, data[10:]).status_code == 204
    assert download(url, token) == data


def test_mongodb_lost_mid_patch_answers_503(fragile, running_mongo, token):
    """MongoDB goes away while a PATCH body streams in: the part cannot be committed.
    The client must get 503 + Retry-After (not a dropped connection), and nothing uncommitted counts."""
    data = random_bytes(12 * MiB, seed=33)
    url = create_upload(fragile, token, len(data))
    sock = raw_patch(url, token, 0, len(data), data[:MiB])
    try:
        time.sleep(0.5)  # the writer is open: lease taken, upload read
        running_mongo.kill()
        status = None
        try:
            sock.sendall(data[MiB:])
        except OSError:
            pass
        sock.settimeout(30)
        received = b""
        try:
            while b"\r\n\r\n" not in received:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except OSError:
            pass
        if received.startswith(b"HTTP/1.1 "):
            status = int(received.split(b" ", 2)[1])
        assert status == 503, f"the client got {received[:200]!r} instead of a 503"
        assert b"retry-after:" in received.lower()
        assert b"application/json" in received.lower()
    finally:
        sock.close()
        if running_mongo.process is None or running_mongo.process.poll() is not None:
            running_mongo.restart()
    offset = wait_for_offset(url, token, lambda o: True, timeout=30)
    assert offset == 0, "no part could be committed while MongoDB was away"
    # the writer could not give its lease back to a dead MongoDB: this PATCH waits for it to expire
    response = patch(url, token, offset, data[offset:])
    assert response.status_code == 204, response.text
    assert download(url, token) == data
