"""An object store on the local disk with S3 multipart semantics.

Layout under the root folder:
  objects/<key>                         finished objects
  multipart/<upload id>/key             the key the upload will become
  multipart/<upload id>/<NNNNN>-<etag>  one file per part (parts of unknown position)
  multipart/<upload id>/data-<writer>   parts whose position in the object is known,
                                        written in place, one file per store instance
Every write is fsynced before its part token is returned (parts written in place
go around the page cache with O_DIRECT when their memory, length and position are
block-aligned, which spares the copy and most of the sync); files are written to a
temporary name and renamed, so a crash leaves either the old state or the new one.
Completion renames the data file that holds the first part into the object, after
copying in only the parts that are not already at their place in it (parts another
instance wrote, or this one before a restart, or parts of unknown position); with
no such file it copies all parts into a new file, in order.
Every OS error (a full disk, an I/O error, a refused permission) reaches callers as
StoreError with the OSError as its cause, and a failed write leaves no temporary file.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, AsyncIterator, Callable, Iterator, Sequence, TypeVar

from streaming.stores.base import ObjectNotFound, PartRef, StoreError

T = TypeVar("T")


def _store_error(exc: OSError) -> StoreError:
    """The StoreError that stands for `exc`; its message names the error, not the file."""
    if exc.errno is not None and exc.strerror:
        return StoreError(f"local store: {exc.strerror} ({errno.errorcode.get(exc.errno, exc.errno)})")
    return StoreError(f"local store: {exc}")


@contextmanager
def _removed_on_failure(path: Path) -> Iterator[Path]:
    """Yield `path`; if the block raises, `path` is removed (when it exists) before the error goes on."""
    try:
        yield path
    except BaseException:
        with suppress(OSError):
            path.unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, chunks: Sequence[bytes | memoryview]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with _removed_on_failure(path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")) as tmp:
        with open(tmp, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    _fsync_dir(path.parent)


IN_PLACE = "@"  # part tokens of parts written in place: "@<data file>:<offset>:<size>:<nonce>"
DATA_FILE = "data-"  # name prefix of the data files that hold parts written in place


def _in_place(etag: str) -> tuple[str, int, int] | None:
    """(data file name, offset, size) of a part token written in place, else None."""
    if not etag.startswith(IN_PLACE):
        return None
    name, offset, size, _ = etag[1:].split(":")
    if not name.startswith(DATA_FILE) or not name[len(DATA_FILE):].isalnum():
        raise StoreError(f"invalid part token {etag!r}")
    return name, int(offset), int(size)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written


DIRECT_ALIGNMENT = 4096  # covers the logical block size of common disks and file systems


def _aligned_for_direct_io(data: memoryview, offset: int) -> bool:
    """Whether `data` (its address and length) and `offset` are all multiples of DIRECT_ALIGNMENT."""
    if len(data) == 0 or len(data) % DIRECT_ALIGNMENT or offset % DIRECT_ALIGNMENT:
        return False
    if data.readonly or not data.c_contiguous:
        return False
    address = ctypes.addressof(ctypes.c_char.from_buffer(data))
    return address % DIRECT_ALIGNMENT == 0


def _pwrite_synced(path: Path, data: memoryview, offset: int, flags: int = 0) -> None:
    """Write `data` at `offset` of `path` (made if missing, opened with extra `flags`) and
    fdatasync it: the bytes and the file's size are on disk when this returns."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o644)
    try:
        _pwrite_all(fd, data, offset)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _copy_into(dst_fd: int, src_path: Path, src_offset: int, size: int, dst_offset: int) -> None:
    """Copy bytes src_offset..src_offset+size of `src_path` to dst_offset of `dst_fd`;
    StoreError if the source is shorter."""
    with open(src_path, "rb") as src:
        if os.fstat(src.fileno()).st_size < src_offset + size:
            raise StoreError(f"{src_path.name} is shorter than {src_offset + size} bytes")
        copied = 0
        while copied < size:
            try:
                n = os.copy_file_range(src.fileno(), dst_fd, size - copied, src_offset + copied, dst_offset + copied)
            except OSError:
                n = 0
            if n == 0:  # no copy_file_range here (or across file systems): read and write
                chunk = os.pread(src.fileno(), min(size - copied, 1024 * 1024), src_offset + copied)
                if not chunk:
                    raise StoreError(f"{src_path.name} is shorter than expected")
                _pwrite_all(dst_fd, memoryview(chunk), dst_offset + copied)
                n = len(chunk)
            copied += n


def _base_file(pieces: Sequence[tuple[Path, int, int]]) -> Path | None:
    """The data file that can become the object: it holds the first part at byte 0 and every
    part it holds lies at its own place in the object. None when there is no such file."""
    if not pieces or pieces[0][1] != 0:
        return None
    base = pieces[0][0]
    if not base.name.startswith(DATA_FILE):
        return None
    position = 0
    for path, start, size in pieces:
        if path == base and start != position:
            return None
        position += size
    return base


class LocalStore:
    """Objects as files below `root`. Blocking file work runs in `executor`."""

    name = "local"

    def __init__(self, root: str | os.PathLike, executor: ThreadPoolExecutor, *, direct_io: bool = True) -> None:
        self.root = Path(root).resolve()
        self.objects = self.root / "objects"
        self.multipart = self.root / "multipart"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.multipart.mkdir(parents=True, exist_ok=True)
        self._executor = executor
        # parts written in place by this instance go to their upload's data-<instance> file
        self._data_name = f"{DATA_FILE}{uuid.uuid4().hex}"
        # O_DIRECT for aligned in-place parts; turned off for good if the file system refuses it
        self._direct_io = direct_io and hasattr(os, "O_DIRECT")

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        """fn(*args) in the executor; an OSError it raises comes out as StoreError (chained)."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except OSError as exc:
            raise _store_error(exc) from exc

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

    async def upload_part_at(self, key: str, upload_id: str, number: int, data: memoryview, offset: int) -> str:
        """Write the part at `offset` of this instance's data file of the upload (in place)."""
        return await self._run(self._write_in_place, upload_id, data, offset)

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

    def _write_in_place(self, upload_id: str, data: memoryview, offset: int) -> str:
        folder = self._existing_upload_dir(upload_id)
        path = folder / self._data_name
        created = not path.exists()
        if self._direct_io and _aligned_for_direct_io(data, offset):
            try:
                _pwrite_synced(path, data, offset, os.O_DIRECT)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._direct_io = False  # the file system refuses direct I/O: buffered from now on
                _pwrite_synced(path, data, offset)
        else:
            _pwrite_synced(path, data, offset)
        if created:
            _fsync_dir(folder)
        return f"{IN_PLACE}{self._data_name}:{offset}:{len(data)}:{uuid.uuid4().hex[:8]}"

    async def copy_part(self, key: str, upload_id: str, number: int, source_key: str, first: int, last: int) -> str:
        etag = uuid.uuid4().hex
        source = self._object_path(source_key)

        def copy() -> None:
            folder = self._existing_upload_dir(upload_id)
            target = folder / f"{number:05d}-{etag}"
            if not source.is_file():
                raise ObjectNotFound(source_key)
            with _removed_on_failure(folder / f".{target.name}.tmp") as tmp:
                with open(tmp, "wb") as dst:
                    _copy_into(dst.fileno(), source, first, last - first + 1, 0)
                    os.fsync(dst.fileno())
                os.replace(tmp, target)

        await self._run(copy)
        return etag

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[PartRef]) -> None:
        target = self._object_path(key)

        def assemble() -> None:
            folder = self._existing_upload_dir(upload_id)
            pieces: list[tuple[Path, int, int]] = []  # (file, offset, size)
            for part in parts:
                placed = _in_place(part.etag)
                if placed is None:
                    path, start, size = folder / f"{part.number:05d}-{part.etag}", 0, None
                else:
                    name, start, size = placed
                    path = folder / name
                if not path.exists():
                    raise StoreError(f"part {part.number} with token {part.etag} is missing")
                pieces.append((path, start, path.stat().st_size if size is None else size))
            target.parent.mkdir(parents=True, exist_ok=True)
            base = _base_file(pieces)
            if base is not None:
                # the data file holding the first part becomes the object: only the parts that are
                # not already at their place in it (written by another instance, or before a
                # restart, or of unknown position) are copied in
                fd = os.open(base, os.O_WRONLY)
                try:
                    position = 0
                    for path, start, size in pieces:
                        if path != base:
                            _copy_into(fd, path, start, size, position)
                        position += size
                    os.ftruncate(fd, position)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(base, target)
            else:
                with _removed_on_failure(target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")) as tmp:
                    with open(tmp, "wb") as dst:
                        position = 0
                        for path, start, size in pieces:
                            _copy_into(dst.fileno(), path, start, size, position)
                            position += size
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

        def open_for_reading() -> IO[bytes]:
            try:
                return open(path, "rb")
            except FileNotFoundError:
                raise ObjectNotFound(key) from None

        fh = await self._run(open_for_reading)
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
            with suppress(OSError):  # closing a file opened for reading loses nothing
                fh.close()

    async def object_size(self, key: str) -> int | None:
        path = self._object_path(key)

        def size() -> int | None:
            try:
                return os.stat(path).st_size
            except FileNotFoundError:
                return None

        return await self._run(size)

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

    async def check(self) -> None:
        def probe() -> None:
            with _removed_on_failure(self.root / f".health-{uuid.uuid4().hex}") as probe_path:
                probe_path.write_bytes(b"ok")
                probe_path.unlink()

        try:
            await self._run(probe)
        except StoreError as exc:
            raise StoreError(f"local store not writable: {exc.__cause__ or exc}") from exc.__cause__

    async def close(self) -> None:
        return None
