"""Uploads through tuspy, the real Python tus client, around part boundaries, on both stores."""

from __future__ import annotations

import pytest
from tusclient import client as tus_client

from tests.support import download, head, random_bytes, sha256

MiB = 1024 * 1024
SIZES = [0, 1, 5 * MiB - 1, 5 * MiB, 5 * MiB + 1, 23 * MiB]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
def test_tuspy_upload_is_byte_identical(gateway, token, tmp_path, size):
    data = random_bytes(size, seed=size)
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    client = tus_client.TusClient(gateway.files_url, headers={"Authorization": f"Bearer {token}"})
    uploader = client.uploader(str(path), chunk_size=4 * MiB, metadata={"filename": "upload.bin"})
    uploader.upload()
    assert head(uploader.url, token).headers["Upload-Offset"] == str(size)
    assert sha256(download(uploader.url, token)) == sha256(data)


def test_tuspy_single_request_upload(gateway, token, tmp_path):
    data = random_bytes(11 * MiB + 7, seed=99)
    path = tmp_path / "whole.bin"
    path.write_bytes(data)
    client = tus_client.TusClient(gateway.files_url, headers={"Authorization": f"Bearer {token}"})
    uploader = client.uploader(str(path))
    uploader.upload()
    assert sha256(download(uploader.url, token)) == sha256(data)


def test_tuspy_resumes_from_stored_url(gateway, token, tmp_path):
    data = random_bytes(9 * MiB, seed=5)
    path = tmp_path / "resume.bin"
    path.write_bytes(data)
    client = tus_client.TusClient(gateway.files_url, headers={"Authorization": f"Bearer {token}"})
    first = client.uploader(str(path), chunk_size=3 * MiB)
    first.upload_chunk()
    assert head(first.url, token).headers["Upload-Offset"] == str(3 * MiB)
    second = client.uploader(str(path), url=first.url, chunk_size=3 * MiB)
    assert second.offset == 3 * MiB
    second.upload()
    assert sha256(download(first.url, token)) == sha256(data)


def test_tuspy_sends_checksums_the_gateway_verifies(gateway, token, tmp_path):
    """tuspy's upload_checksum=True puts `Upload-Checksum: sha1 ...` on every PATCH."""
    data = random_bytes(7 * MiB + 3, seed=7)
    path = tmp_path / "checked.bin"
    path.write_bytes(data)
    client = tus_client.TusClient(gateway.files_url, headers={"Authorization": f"Bearer {token}"})
    uploader = client.uploader(str(path), chunk_size=3 * MiB, upload_checksum=True)
    assert uploader.checksum_algorithm_name == "sha1"
    uploader.upload()
    assert sha256(download(uploader.url, token)) == sha256(data)


def test_tuspy_chunk_with_a_wrong_checksum_is_refused(gateway, token, tmp_path):
    """The same client with a corrupted digest: 460, and the offset stays where it was."""
    import hashlib

    from tusclient.exceptions import TusCommunicationError
    from tusclient.uploader import Uploader

    class CorruptingUploader(Uploader):
        @property
        def checksum_algorithm(self):
            return lambda chunk: hashlib.sha1(bytes(chunk) + b"!")

    data = random_bytes(2 * MiB, seed=8)
    path = tmp_path / "corrupt.bin"
    path.write_bytes(data)
    client = tus_client.TusClient(gateway.files_url, headers={"Authorization": f"Bearer {token}"})
    uploader = CorruptingUploader(file_path=str(path), client=client, chunk_size=MiB, upload_checksum=True)
    with pytest.raises(TusCommunicationError) as refused:
        uploader.upload_chunk()
    assert refused.value.status_code == 460
    assert head(uploader.url, token).headers["Upload-Offset"] == "0"


def test_uploads_through_tornados_own_body_path(start_gateway, token, tmp_path):
    """IN_PLACE_BODIES=false: bodies take Tornado's data_received path, with the same result."""
    gateway = start_gateway("local", PART_SIZE="5MiB", IN_PLACE_BODIES="false")
    data = random_bytes(11 * MiB + 5, seed=9)
    path = tmp_path / "copied.bin"
    path.write_bytes(data)
    client = tus_client.TusClient(gateway.files_url, headers={"Authorization": f"Bearer {token}"})
    uploader = client.uploader(str(path), chunk_size=4 * MiB, upload_checksum=True)
    uploader.upload()
    assert sha256(download(uploader.url, token)) == sha256(data)
