"""A full file system under a local-store gateway: 503 storage_unavailable, never a reset or a 500.

The gateway runs as a real process with DATA_DIR on a small tmpfs mounted here (root only;
skipped elsewhere). Each test fills the tmpfs with a filler file so that little room is left,
sends more than fits, checks the answer, the committed offset and the process's health, then
deletes the filler and finishes the upload from HEAD's offset, comparing the bytes.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests

from tests.support import GatewayProcess, auth, create_upload, download, head, patch, random_bytes, sha256

MiB = 1024 * 1024
PART = 5 * MiB
TMPFS_SIZE = "48m"


class Disk:
    """The tmpfs under the gateway's DATA_DIR, and a filler file that takes its free space."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def free(self) -> int:
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def fill(self, room: int = 0) -> int:
        """Grow the filler until at most `room` bytes are free (or the disk is full); return what is free."""
        target = self.free() - room
        chunk = b"\0" * MiB
        with open(self.filler, "ab", buffering=0) as fh:  # unbuffered: no write is left for close()
            while target > 0:
                try:
                    written = fh.write(chunk[:target])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
                target -= written
        return self.free()

    def empty(self) -> None:
        self.filler.unlink(missing_ok=True)

    def temporary_files(self) -> list[str]:
        """Names of temporary files the store left anywhere on the disk."""
        return sorted(p.name for p in self.root.rglob("*.tmp"))


@pytest.fixture(scope="module")
def tmpfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A freshly mounted tmpfs of TMPFS_SIZE; lazily unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root")
    mountpoint = tmp_path_factory.mktemp("full-disk")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


@pytest.fixture(scope="module")
def small_disk_gateway(start_gateway: Callable[..., GatewayProcess], tmpfs: Path) -> Iterator[GatewayProcess]:
    """A local-store gateway whose DATA_DIR is the tmpfs (5 MiB parts); stopped before the unmount."""
    gateway = start_gateway("local", DATA_DIR=str(tmpfs), PART_SIZE="5MiB")
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def disk(tmpfs: Path, small_disk_gateway: GatewayProcess) -> Iterator[Disk]:
    """The disk under the gateway; every test leaves it without the filler."""
    full = Disk(tmpfs)
    yield full
    full.empty()


def assert_storage_unavailable(response: requests.Response, gateway: GatewayProcess) -> None:
    assert response.status_code == 503, (response.status_code, response.text[:300], gateway.log()[-3000:])
    assert response.headers.get("Retry-After"), "a 503 says when to retry"
    assert response.json()["error"]["code"] == "storage_unavailable", response.text[:300]


def assert_alive(gateway: GatewayProcess) -> None:
    assert gateway.process is not None and gateway.process.poll() is None, gateway.log()[-3000:]
    assert requests.get(gateway.url + "/health", timeout=10).status_code == 200


def offset_of(url: str, token: str) -> int:
    response = head(url, token)
    assert response.status_code == 200, response.status_code
    return int(response.headers["Upload-Offset"])


def test_patch_larger_than_the_room_is_503_and_resumes(small_disk_gateway, disk, token):
    """A PATCH of two parts and a tail with room for one part: 503 storage_unavailable; the
    offset counts only whole parts that fit; with space back the upload finishes intact."""
    gateway = small_disk_gateway
    data = random_bytes(2 * PART + 2 * MiB + 5, seed=61)
    url = create_upload(gateway, token, len(data))
    room = disk.fill(PART + 2 * MiB)
    assert PART <= room < 2 * PART, room

    assert_storage_unavailable(patch(url, token, 0, data), gateway)
    offset = offset_of(url, token)
    assert offset <= room, (offset, room)  # never a byte that could not have been stored
    assert offset % PART == 0, offset  # no tail could be stored, so only whole parts count
    assert disk.temporary_files() == []
    assert_alive(gateway)

    disk.empty()
    response = patch(url, token, offset, data[offset:])
    assert response.status_code == 204, (response.status_code, response.text[:300])
    assert int(response.headers["Upload-Offset"]) == len(data)
    assert sha256(download(url, token)) == sha256(data)


def test_tail_writes_on_a_full_disk_are_503_and_resume(small_disk_gateway, disk, token):
    """With no room at all, a small PATCH (only a tail to store) and a creation-with-upload both
    answer 503 storage_unavailable and commit nothing; with space back both finish intact."""
    gateway = small_disk_gateway
    small = random_bytes(300 * 1024, seed=62)
    patched = create_upload(gateway, token, len(small))
    created = random_bytes(200 * 1024, seed=63)
    disk.fill(0)

    assert_storage_unavailable(patch(patched, token, 0, small[: 100 * 1024]), gateway)
    assert offset_of(patched, token) == 0

    response = requests.post(gateway.files_url, data=created, timeout=30, headers=auth(
        token, **{"Upload-Length": str(len(created)), "Content-Type": "application/offset+octet-stream"}))
    assert_storage_unavailable(response, gateway)
    location = response.headers.get("Location")
    assert location, "a refused creation-with-upload still names the upload to resume"
    assert offset_of(location, token) == 0

    assert disk.temporary_files() == []
    assert_alive(gateway)
    detailed = requests.get(gateway.url + "/health/detailed", timeout=10)
    assert detailed.status_code == 503 and detailed.json()["checks"]["store"]["status"] == "error", detailed.text

    disk.empty()
    assert requests.get(gateway.url + "/health/detailed", timeout=10).status_code == 200
    for url, data in ((patched, small), (location, created)):
        response = patch(url, token, 0, data)
        assert response.status_code == 204, (response.status_code, response.text[:300])
        assert download(url, token) == data
