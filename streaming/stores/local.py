"""An object store on the local disk with S3 multipart semantics.

Layout under the root folder:
  objects/<key>                         finished objects
  multipart/<upload id>/key             the key the upload will become
  multipart/<upload id>/<NNNNN>-<etag>  one file per part
Every write lands in a temporary file that is fsynced and renamed, so a
crash leaves either the old state or the new one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import AsyncIterator, Sequence

from streaming.stores.base import ObjectNotFound, PartRef, StoreError


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, chunks: Sequence[bytes | memoryview]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _append_file(dst, src_path: Path) -> None:
    with open(src_path, "rb") as src:
        size = os.fstat(src.fileno()).st_size
        copied = 0
        while copied < size:
            try:
                n = os.copy_file_range(src.fileno(), dst.fileno(), size - copied)
            except OSError:
                n = 0
            if n == 0:
                src.seek(copied)
                shutil.copyfileobj(src, dst, 1024 * 1024)
                return
            copied += n


class LocalStore:
    """Objects as files below `root`. Blocking file work runs in `executor`."""

    name = "local"

    def __init__(self, root: str | os.PathLike, executor: ThreadPoolExecutor) -> None:
        self.root = Path(root).resolve()
        self.objects = self.root / "objects"
        self.multipart = self.root / "multipart"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.multipart.mkdir(parents=True, exist_ok=True)
        self._executor = executor

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _object_path(self, key: str) -> Path:
        path = (self.objects / key).resolve()
        if not str(path).startswith(str(self.objects) + os.sep):
            raise StoreError(f"invalid key {key!r}")
        return path

    def _upload_dir(self, upload_id: str) -> Path:
        if not upload_id.isalnum():
            raise ObjectNotFound(upload_id)
        return self.multipart / upload_id

    async def create_multipart(self, key: str, content_type: str) -> str:
        self._object_path(key)
        upload_id = uuid.uuid4().hex
        await self._run(_write_durably, self._upload_dir(upload_id) / "key", [key.encode()])
        return upload_id

    def _existing_upload_dir(self, upload_id: str) -> Path:
        folder = self._upload_dir(upload_id)
        if not (folder / "key").exists():
            raise ObjectNotFound(f"no multipart upload {upload_id}")
        return folder

    async def upload_part(self, key: str, upload_id: str, number: int, data: memoryview) -> str:
        etag = uuid.uuid4().hex

        def write() -> None:
            folder = self._existing_upload_dir(upload_id)
            _write_durably(folder / f"{number:05d}-{etag}", [data])
            for old in folder.glob(f"{number:05d}-*"):
                if old.name != f"{number:05d}-{etag}":
                    old.unlink(missing_ok=True)

        await self._run(write)
        return etag

    async def copy_part(self, key: str, upload_id: str, number: int, source_key: str, first: int, last: int) -> str:
        etag = uuid.uuid4().hex
        source = self._object_path(source_key)

        def copy() -> None:
            folder = self._existing_upload_dir(upload_id)
            target = folder / f"{number:05d}-{etag}"
            tmp = folder / f".{target.name}.tmp"
            try:
                src = open(source, "rb")
            except FileNotFoundError:
                raise ObjectNotFound(source_key) from None
            with src, open(tmp, "wb") as dst:
                src.seek(first)
                remaining = last - first + 1
                while remaining:
                    chunk = src.read(min(remaining, 1024 * 1024))
                    if not chunk:
                        raise StoreError(f"{source_key} is shorter than {last + 1} bytes")
                    dst.write(chunk)
                    remaining -= len(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, target)

        await self._run(copy)
        return etag

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[PartRef]) -> None:
        target = self._object_path(key)

        def assemble() -> None:
            folder = self._existing_upload_dir(upload_id)
            files = []
            for part in parts:
                path = folder / f"{part.number:05d}-{part.etag}"
                if not path.exists():
                    raise StoreError(f"part {part.number} with etag {part.etag} is missing")
                files.append(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            with open(tmp, "wb") as dst:
                for path in files:
                    _append_file(dst, path)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, target)
            _fsync_dir(target.parent)
            shutil.rmtree(folder, ignore_errors=True)

        await self._run(assemble)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        if upload_id.isalnum():
            await self._run(shutil.rmtree, self.multipart / upload_id, True)

    async def put_object(self, key: str, data: bytes | memoryview, content_type: str = "application/octet-stream") -> None:
        await self._run(_write_durably, self._object_path(key), [data])

    async def get_object(self, key: str) -> bytes:
        path = self._object_path(key)

        def read() -> bytes:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                raise ObjectNotFound(key) from None

        return await self._run(read)

    async def read_range(self, key: str, start: int, end: int, chunk_size: int) -> AsyncIterator[bytes]:
        path = self._object_path(key)
        try:
            fh = await self._run(open, path, "rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        try:
            await self._run(fh.seek, start)
            position = start
            while position < end:
                chunk = await self._run(fh.read, min(chunk_size, end - position))
                if not chunk:
                    raise StoreError(f"{key} ended at {position}, expected {end}")
                position += len(chunk)
                yield chunk
        finally:
            fh.close()

    async def object_size(self, key: str) -> int | None:
        path = self._object_path(key)
        try:
            return (await self._run(os.stat, path)).st_size
        except FileNotFoundError:
            return None

    async def delete_object(self, key: str) -> None:
        await self._run(lambda: self._object_path(key).unlink(missing_ok=True))

    async def delete_prefix(self, prefix: str) -> int:
        def remove() -> int:
            base = self._object_path(prefix.rstrip("/") or ".") if prefix.strip("/") else self.objects
            if prefix.endswith("/"):
                if not base.is_dir():
                    return 0
                count = sum(1 for p in base.rglob("*") if p.is_file())
                shutil.rmtree(base, ignore_errors=True)
                return count
            count = 0
            for path in base.parent.glob(base.name + "*"):
                if path.is_file():
                    path.unlink(missing_ok=True)
                    count += 1
            return count

        return await self._run(remove)

    async def signed_url(self, key: str, expires_in: int, filename: str | None = None) -> str | None:
        return None

    async def check(self) -> None:
        def probe() -> None:
            probe_path = self.root / f".health-{uuid.uuid4().hex}"
            probe_path.write_bytes(b"ok")
            probe_path.unlink()

        try:
            await self._run(probe)
        except OSError as exc:
            raise StoreError(f"local store not writable: {exc}") from exc

    async def close(self) -> None:
        return None
