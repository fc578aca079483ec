"""Resuming after cut-off bodies, killed gateways and second instances; leases; expiry."""

from __future__ import annotations

import threading
import time

import boto3
import pytest

from tests.support import create_upload, download, head, patch, random_bytes, raw_patch, sha256, wait_for_offset

MiB = 1024 * 1024
FAST_LEASES = {"PART_SIZE": "5MiB", "LEASE_TTL": "2", "LEASE_WAIT": "4"}


@pytest.fixture(params=["local", "s3"])
def store(request) -> str:
    return request.param


def test_cut_off_patch_keeps_what_arrived(gateway, token):
    data = random_bytes(12 * MiB, seed=10)
    url = create_upload(gateway, token, len(data))
    sent = 7 * MiB + 1234
    sock = raw_patch(url, token, 0, len(data), data[:sent])
    time.sleep(0.3)
    sock.close()
    offset = wait_for_offset(url, token, lambda o: o == sent)
    response = patch(url, token, offset, data[offset:])
    assert response.status_code == 204, response.text
    assert sha256(download(url, token)) == sha256(data)


def test_cut_off_twice_inside_one_part(gateway, token):
    data = random_bytes(6 * MiB, seed=11)
    url = create_upload(gateway, token, len(data))
    for end in (1 * MiB, 2 * MiB + 17):
        start = int(head(url, token).headers["Upload-Offset"])
        sock = raw_patch(url, token, start, len(data) - start, data[start:end])
        time.sleep(0.2)
        sock.close()
        wait_for_offset(url, token, lambda o, end=end: o == end)
    start = int(head(url, token).headers["Upload-Offset"])
    assert patch(url, token, start, data[start:]).status_code == 204
    assert download(url, token) == data


@pytest.mark.parametrize("takeover", ["restart", "second-instance"])
def test_killed_gateway_resumes(start_gateway, token, store, takeover):
    first = start_gateway(store, **FAST_LEASES)
    data = random_bytes(31 * MiB, seed=12)
    url = create_upload(first, token, len(data))
    sock = raw_patch(url, token, 0, len(data), data[: 17 * MiB])
    committed = wait_for_offset(url, token, lambda o: o >= 10 * MiB)
    first.kill()
    sock.close()
    if takeover == "restart":
        first.start()
        survivor = first
    else:
        survivor = start_gateway(store, share=first)
    new_url = url.replace(first.url, survivor.url) if takeover == "restart" else url.replace(first.url, survivor.url)
    response = head(new_url, token)
    assert response.status_code == 200
    offset = int(response.headers["Upload-Offset"])
    assert committed <= offset <= 17 * MiB
    assert offset % (5 * MiB) == 0, "only whole durable parts survive a SIGKILL mid-body"
    response = patch(new_url, token, offset, data[offset:])
    assert response.status_code == 204, response.text
    assert sha256(download(new_url, token)) == sha256(data)


def test_embedded_defaults_survive_sigkill(start_gateway, token, tmp_path):
    gateway = start_gateway("local", MONGODB_URI="", **FAST_LEASES)
    data = random_bytes(8 * MiB, seed=13)
    url = create_upload(gateway, token, len(data))
    assert patch(url, token, 0, data[: 6 * MiB]).status_code == 204
    gateway.kill()
    gateway.start()
    assert head(url, token).headers["Upload-Offset"] == str(6 * MiB)
    assert patch(url, token, 6 * MiB, data[6 * MiB :]).status_code == 204
    assert download(url, token) == data


def test_concurrent_patches_never_corrupt(start_gateway, token, store):
    gateway = start_gateway(store, **FAST_LEASES)
    other = start_gateway(store, share=gateway)
    data = random_bytes(12 * MiB, seed=14)
    url = create_upload(gateway, token, len(data))
    results: list[int] = []

    def send(base: str) -> None:
        target = url.replace(gateway.url, base)
        results.append(patch(target, token, 0, data).status_code)

    threads = [threading.Thread(target=send, args=(base,)) for base in (gateway.url, other.url)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results)[0] == 204
    assert sorted(results)[1] in (409, 423, 204)
    assert download(url, token) == data


def test_held_lease_answers_423(start_gateway, token, store):
    gateway = start_gateway(store, **FAST_LEASES)
    url = create_upload(gateway, token, 10 * MiB)
    sock = raw_patch(url, token, 0, 10 * MiB, b"x" * MiB)
    try:
        time.sleep(0.3)
        started = time.monotonic()
        response = patch(url, token, 0, b"y" * 10)
        assert response.status_code == 423
        assert response.headers["Retry-After"]
        assert time.monotonic() - started >= 3, "waits LEASE_WAIT before giving up"
    finally:
        sock.close()
    wait_for_offset(url, token, lambda o: o == MiB)


def test_expired_upload_is_reaped(start_gateway, token, store, s3_server):
    gateway = start_gateway(store, UPLOAD_EXPIRATION="2", REAPER_INTERVAL="0.5", PART_SIZE="5MiB")
    url = create_upload(gateway, token, 20 * MiB)
    assert patch(url, token, 0, random_bytes(6 * MiB)).status_code == 204
    deadline = time.monotonic() + 20
    while head(url, token).status_code != 410 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert head(url, token).status_code == 410
    assert patch(url, token, 6 * MiB, b"x").status_code == 410
    upload_id = url.rsplit("/", 1)[1]
    if store == "s3":
        s3 = boto3.client("s3", endpoint_url=s3_server["S3_ENDPOINT_URL"] or None, region_name=s3_server["AWS_REGION"],
                          aws_access_key_id=s3_server.get("AWS_ACCESS_KEY_ID"), aws_secret_access_key=s3_server.get("AWS_SECRET_ACCESS_KEY"))

        def leftovers() -> int:
            pending = s3.list_multipart_uploads(Bucket=s3_server["S3_BUCKET"]).get("Uploads", [])
            staged = s3.list_objects_v2(Bucket=s3_server["S3_BUCKET"], Prefix=f"tus/{upload_id}/").get("KeyCount", 0)
            return len([u for u in pending if upload_id in u["Key"]]) + staged
    else:
        def leftovers() -> int:
            return len(list((gateway.data_dir / "store" / "multipart").iterdir())) + len(
                list((gateway.data_dir / "store" / "objects").glob(f"tus/{upload_id}/*")))
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftovers() == 0, "the reaper left the multipart upload or staged objects:\n" + gateway.log()
