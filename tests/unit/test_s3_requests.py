"""What the S3 store puts on the wire for a part: one CRC32 computed by the store, the body sent as
is (never re-framed as aws-chunked), and its sha256 signed only where the setting says.

botocore's `before-send` event hands over the request exactly as it would be sent and lets the
test answer it, so no server is needed: this checks the request's shape, not S3's behaviour
(tests/test_stores.py does that against a real S3 server).
"""

from __future__ import annotations

import asyncio
import base64
import os
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.awsrequest import AWSResponse
from botocore.httpchecksum import Crc32Checksum

from streaming.stores.s3 import S3Store, crc32_header, signs_payload


class RecordedResponse:
    """The raw response botocore reads: headers, status and an empty body."""

    def __init__(self) -> None:
        self.headers = {"ETag": '"etag-1"', "x-amz-checksum-crc32": "AAAAAA=="}

    def stream(self, *args, **kwargs):
        return iter(())


def text_headers(request) -> dict[str, str]:
    """The request's headers, lower-case names and text values (botocore keeps some as bytes)."""
    return {name.lower(): value.decode() if isinstance(value, bytes) else value for name, value in request.headers.items()}


def sent_request(endpoint: str, signing: str, data: bytes, monkeypatch: pytest.MonkeyPatch):
    """The prepared request of one `upload_part` of `data` through an S3Store at `endpoint`."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    executor = ThreadPoolExecutor(1)
    store = S3Store("bucket", executor, region="eu-west-2", endpoint_url=endpoint, sse="", payload_signing=signing)
    seen = []

    def answer(request, **kwargs):
        body = request.body
        seen.append((request, bytes(body.read()) if hasattr(body, "read") else bytes(body)))
        return AWSResponse(request.url, 200, {"ETag": '"etag-1"'}, RecordedResponse())

    store._client.meta.events.register("before-send.s3.UploadPart", answer)
    try:
        asyncio.run(store.upload_part("key", "upload-1", 1, memoryview(data)))
    finally:
        executor.shutdown()
    assert len(seen) == 1
    return seen[0]


def test_crc32_header_is_what_botocore_and_s3_compute():
    data = os.urandom(1 << 20) + b"tail"
    reference = Crc32Checksum()
    reference.update(data)
    assert crc32_header(memoryview(data)) == base64.b64encode(reference.digest()).decode()
    assert base64.b64decode(crc32_header(memoryview(b""))) == (0).to_bytes(4, "big")
    assert int.from_bytes(base64.b64decode(crc32_header(memoryview(data))), "big") == zlib.crc32(data)


@pytest.mark.parametrize(("signing", "endpoint", "signed"), [
    ("auto", "https://s3.example.com", False),
    ("auto", None, False),  # AWS's own endpoints: HTTPS
    ("auto", "http://127.0.0.1:9000", True),
    ("AUTO".lower(), "HTTP://127.0.0.1:9000", True),
    ("on", "https://s3.example.com", True),
    ("off", "http://127.0.0.1:9000", False),
])
def test_which_transports_sign_the_payload(signing, endpoint, signed):
    assert signs_payload(signing, endpoint) is signed


def test_unknown_signing_mode_is_refused():
    with pytest.raises(ValueError):
        signs_payload("sometimes", "https://s3.example.com")


@pytest.mark.parametrize(("endpoint", "signing", "content_sha256"), [
    ("https://s3.example.com", "auto", "UNSIGNED-PAYLOAD"),
    ("http://127.0.0.1:9000", "off", "UNSIGNED-PAYLOAD"),
])
def test_a_part_goes_out_raw_with_one_crc32_and_an_unsigned_payload(endpoint, signing, content_sha256, monkeypatch):
    data = os.urandom(300_000)
    request, body = sent_request(endpoint, signing, data, monkeypatch)
    headers = text_headers(request)
    assert body == data  # not aws-chunked: no chunk sizes, no trailer
    assert "aws-chunked" not in headers.get("content-encoding", "")
    assert "x-amz-trailer" not in headers
    assert headers["content-length"] == str(len(data))
    assert headers["x-amz-checksum-crc32"] == crc32_header(memoryview(data))
    assert headers["x-amz-content-sha256"] == content_sha256
    assert "x-amz-checksum-crc32" in headers["authorization"]  # the checksum header is signed


def test_over_plain_http_auto_signs_the_payload(monkeypatch):
    import hashlib

    data = os.urandom(100_000)
    request, body = sent_request("http://127.0.0.1:9000", "auto", data, monkeypatch)
    headers = text_headers(request)
    assert body == data
    assert headers["x-amz-content-sha256"] == hashlib.sha256(data).hexdigest()
    assert headers["x-amz-checksum-crc32"] == crc32_header(memoryview(data))
