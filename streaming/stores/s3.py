"""An object store on Amazon S3 (or an S3-compatible server) through boto3.

boto3 is blocking, so every call runs in a bounded thread pool: the pool size
bounds how many S3 requests the process has open at once.
"""

from __future__ import annotations

import asyncio
import base64
import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable, Sequence
from urllib.parse import quote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from streaming.stores.base import ObjectNotFound, PartRef, StoreError
from streaming.stores.s3_model import client_session

try:  # ISA-L's CRC32 is the same function as zlib's, about 15x faster (carry-less multiply)
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - isal is a runtime requirement; zlib gives the same values
    from zlib import crc32

_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchUpload", "404", "NotFound"}
CHECKSUM = "CRC32"
PAYLOAD_SIGNING = ("auto", "on", "off")


def crc32_header(data: memoryview) -> str:
    """The base64 big-endian CRC32 of `data`, as S3 expects it in x-amz-checksum-crc32."""
    return base64.b64encode((crc32(data) & 0xFFFFFFFF).to_bytes(4, "big")).decode("ascii")


def signs_payload(signing: str, endpoint_url: str | None) -> bool:
    """Whether requests sign their body's sha256: 'on', 'off', or 'auto' = only over plain HTTP.

    Over TLS the body is protected in transit and its CRC32 travels in a signed header, which
    is what the AWS SDKs rely on for streaming uploads (UNSIGNED-PAYLOAD); over plain HTTP the
    SDKs sign the payload, and so does 'auto'.
    """
    if signing not in PAYLOAD_SIGNING:
        raise ValueError(f"payload signing must be one of {PAYLOAD_SIGNING}, not {signing!r}")
    if signing != "auto":
        return signing == "on"
    return bool(endpoint_url) and not endpoint_url.lower().startswith("https://")


def _part_token(etag: str, checksum: str | None) -> str:
    """The opaque part reference handed to callers: ETag plus the part's CRC32."""
    return f"{etag}|{checksum or ''}"


def _part_entry(number: int, token: str) -> dict[str, Any]:
    etag, _, checksum = token.partition("|")
    entry: dict[str, Any] = {"PartNumber": number, "ETag": etag}
    if checksum:
        entry[f"Checksum{CHECKSUM}"] = checksum
    return entry


class MemoryReader(io.RawIOBase):
    """A seekable, read-only file over a memoryview whose reads are views (no copy of the buffer)."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        view = view.cast("B") if view.format != "B" else view
        self._view = view.toreadonly()
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, target) -> int:  # type: ignore[override]
        n = min(len(target), len(self._view) - self._pos)
        target[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def read(self, size: int = -1) -> memoryview:  # type: ignore[override]
        """The next `size` bytes as a read-only view into the buffer, not a copy.

        botocore and urllib3 only hash, measure, concatenate or send what they read,
        all of which take any bytes-like object, so a part costs no copies however
        many times it is read (checksum, send, retries).
        """
        if size is None or size < 0:
            size = len(self._view) - self._pos
        data = self._view[self._pos : self._pos + size]
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, min(len(self._view), base + offset))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return len(self._view)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Store:
    """Objects in one S3 bucket. Calls run in `executor`; `on_call(operation, seconds, ok, retries)` observes them.

    Bodies are sent once, from the caller's buffer, with a CRC32 computed here in one pass and
    sent as a header: botocore then neither computes its own checksum nor re-frames the body as
    aws-chunked (whose reader copies the rest of each 1 MiB chunk on every 16 KiB read), and the
    payload is sha256-signed only where `payload_signing` says so (see `signs_payload`).
    """

    name = "s3"

    def __init__(
        self,
        bucket: str,
        executor: ThreadPoolExecutor,
        *,
        region: str,
        endpoint_url: str | None = None,
        sse: str = "AES256",
        max_attempts: int = 5,
        max_connections: int = 16,
        payload_signing: str = "auto",
        data_path: str | None = None,
        on_call: Callable[[str, float, bool, int], None] | None = None,
    ) -> None:
        self.bucket = bucket
        self._executor = executor
        self._sse = {"ServerSideEncryption": sse} if sse else {}
        self._on_call = on_call
        # `data_path`: botocore data trimmed to the operations called here (see s3_model)
        self._client = boto3.session.Session(botocore_session=client_session(data_path)).client(
            "s3",
            region_name=region,
            endpoint_url=endpoint_url or None,
            config=Config(
                retries={"total_max_attempts": max_attempts, "mode": "standard"},
                max_pool_connections=max_connections,
                connect_timeout=10,
                read_timeout=120,
                request_checksum_calculation="when_required",
                s3={
                    "payload_signing_enabled": signs_payload(payload_signing, endpoint_url),
                    **({"addressing_style": "path"} if endpoint_url else {}),
                },
            ),
        )

    async def _call(self, operation: str, **kwargs: Any) -> Any:
        method = getattr(self._client, operation)
        loop = asyncio.get_running_loop()
        started = loop.time()
        ok = False
        retries = 0
        try:
            result = await loop.run_in_executor(self._executor, lambda: method(**kwargs))
            ok = True
            retries = int(result.get("ResponseMetadata", {}).get("RetryAttempts", 0)) if isinstance(result, dict) else 0
            return result
        except ClientError as exc:
            retries = int(exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0))
            if _code(exc) in _NOT_FOUND_CODES:
                raise ObjectNotFound(f"{operation}: {_code(exc)}") from exc
            raise StoreError(f"{operation}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"{operation}: {exc}") from exc
        finally:
            if self._on_call is not None:
                self._on_call(operation, loop.time() - started, ok, retries)

    async def create_multipart(self, key: str, content_type: str) -> str:
        result = await self._call(
            "create_multipart_upload", Bucket=self.bucket, Key=key, ContentType=content_type,
            ChecksumAlgorithm=CHECKSUM, **self._sse,
        )
        return result["UploadId"]

    async def upload_part(self, key: str, upload_id: str, number: int, data: memoryview) -> str:
        result = await self._call(
            "upload_part",
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=MemoryReader(data),
            ContentLength=len(data),
            ChecksumCRC32=crc32_header(data),
        )
        return _part_token(result["ETag"], result.get(f"Checksum{CHECKSUM}"))

    async def copy_part(self, key: str, upload_id: str, number: int, source_key: str, first: int, last: int) -> str:
        result = await self._call(
            "upload_part_copy",
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": self.bucket, "Key": source_key},
            CopySourceRange=f"bytes={first}-{last}",
        )
        copied = result["CopyPartResult"]
        return _part_token(copied["ETag"], copied.get(f"Checksum{CHECKSUM}"))

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[PartRef]) -> None:
        await self._call(
            "complete_multipart_upload",
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [_part_entry(p.number, p.etag) for p in parts]},
        )

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            await self._call("abort_multipart_upload", Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ObjectNotFound:
            pass

    async def put_object(self, key: str, data: bytes | memoryview, content_type: str = "application/octet-stream") -> None:
        view = memoryview(data)
        await self._call(
            "put_object",
            Bucket=self.bucket,
            Key=key,
            Body=MemoryReader(view),
            ContentLength=len(view),
            ContentType=content_type,
            ChecksumCRC32=crc32_header(view),
            **self._sse,
        )

    async def get_object(self, key: str) -> bytes:
        result = await self._call("get_object", Bucket=self.bucket, Key=key)
        body = result["Body"]
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, body.read)
        finally:
            body.close()

    async def read_range(self, key: str, start: int, end: int, chunk_size: int) -> AsyncIterator[bytes]:
        """Successive ranged GETs growing from `chunk_size` to 16 x `chunk_size`: a reader that
        stops early (a video probe) costs at most one window, a full read only a few requests."""
        window = chunk_size
        position = start
        loop = asyncio.get_running_loop()
        while position < end:
            last = min(end, position + window)
            result = await self._call("get_object", Bucket=self.bucket, Key=key, Range=f"bytes={position}-{last - 1}")
            body = result["Body"]
            try:
                while position < last:
                    chunk = await loop.run_in_executor(self._executor, body.read, min(chunk_size, last - position))
                    if not chunk:
                        raise StoreError(f"{key}: body ended {end - position} bytes early")
                    position += len(chunk)
                    yield chunk
            finally:
                body.close()
            window = min(window * 2, chunk_size * 16)

    async def object_size(self, key: str) -> int | None:
        try:
            result = await self._call("head_object", Bucket=self.bucket, Key=key)
        except ObjectNotFound:
            return None
        return int(result["ContentLength"])

    async def delete_object(self, key: str) -> None:
        try:
            await self._call("delete_object", Bucket=self.bucket, Key=key)
        except ObjectNotFound:
            pass

    async def delete_prefix(self, prefix: str) -> int:
        count = 0
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = await self._call("list_objects_v2", **kwargs)
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                await self._call("delete_objects", Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                count += len(keys)
            if not page.get("IsTruncated"):
                return count
            token = page.get("NextContinuationToken")

    async def signed_url(self, key: str, expires_in: int, filename: str | None = None) -> str:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f"inline; filename*=UTF-8''{quote(filename)}"
        return await asyncio.get_running_loop().run_in_executor(
            self._executor,
            lambda: self._client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in),
        )

    def url_origin(self) -> str:
        """The origin of this store's signed URLs (signing needs no request: computed locally)."""
        url = self._client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": "origin"},
                                                  ExpiresIn=60)
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}"

    async def check(self) -> None:
        """HEAD the bucket: reachable, and ours to use (writes nothing, leaves no versions)."""
        await self._call("head_bucket", Bucket=self.bucket)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._client.close)

    async def ensure_bucket(self) -> None:
        """Create the bucket when it is missing (for local S3-compatible servers)."""
        try:
            await self._call("head_bucket", Bucket=self.bucket)
        except (ObjectNotFound, StoreError):
            config = {}
            region = self._client.meta.region_name
            if region and region != "us-east-1":
                config = {"CreateBucketConfiguration": {"LocationConstraint": region}}
            await self._call("create_bucket", Bucket=self.bucket, **config)
