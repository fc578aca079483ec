"""The object store contract, for the local store and S3 over TCP (moto or a real server)."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import requests

from streaming.stores.base import CopiesParts, ObjectNotFound, PartRef, SignsUrls, StoreError, WritesPartsInPlace, store_part
from streaming.stores.local import LocalStore
from streaming.stores.s3 import S3Store
from streaming.stores.s3_model import trimmed_data
from tests.support import random_bytes

MiB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
async def store(request, tmp_path, s3_server):
    executor = ThreadPoolExecutor(4)
    if request.param == "local":
        instance = LocalStore(tmp_path, executor)
    else:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            if name in s3_server:
                os.environ.setdefault(name, s3_server[name])
        # the client reads the trimmed botocore data, as the gateway's does
        instance = S3Store(s3_server["S3_BUCKET"], executor, region=s3_server["AWS_REGION"],
                           endpoint_url=s3_server["S3_ENDPOINT_URL"] or None,
                           data_path=trimmed_data(Path(os.environ["S3_MODEL_DIR"])))
        await instance.ensure_bucket()
    yield instance
    await instance.close()
    executor.shutdown()


async def read_all(store, key, start, end):
    return b"".join([chunk async for chunk in store.read_range(key, start, end, 1000)])


async def test_multipart_round_trip(store):
    key = f"media/files/{uuid.uuid4().hex}.bin"
    data = random_bytes(11 * MiB + 3, seed=7)
    upload = await store.create_multipart(key, "application/octet-stream")
    first = await store.upload_part(key, upload, 1, memoryview(data)[: 5 * MiB])
    stale = await store.upload_part(key, upload, 2, memoryview(b"z" * (5 * MiB)))
    second = await store.upload_part(key, upload, 2, memoryview(data)[5 * MiB : 10 * MiB])
    third = await store.upload_part(key, upload, 3, memoryview(data)[10 * MiB :])
    assert stale != second
    await store.complete_multipart(key, upload, [PartRef(1, first, 5 * MiB), PartRef(2, second, 5 * MiB),
                                                 PartRef(3, third, MiB + 3)])
    assert await store.object_size(key) == len(data)
    assert await read_all(store, key, 0, len(data)) == data
    assert await read_all(store, key, 5 * MiB - 10, 5 * MiB + 10) == data[5 * MiB - 10 : 5 * MiB + 10]
    await store.delete_object(key)
    assert await store.object_size(key) is None


async def test_parts_with_their_offsets_in_any_order(store):
    """Parts that say where they go (the local store writes them in place), sent out of order
    and one of them twice: the object is the parts in number order."""
    key = f"media/files/{uuid.uuid4().hex}.bin"
    data = random_bytes(12 * MiB + 9, seed=11)
    view = memoryview(data)
    upload = await store.create_multipart(key, "application/octet-stream")
    await store_part(store, key, upload, 2, memoryview(b"q" * (5 * MiB)), 5 * MiB)
    second = await store_part(store, key, upload, 2, view[5 * MiB : 10 * MiB], 5 * MiB)
    first = await store_part(store, key, upload, 1, view[: 5 * MiB], 0)
    last = await store_part(store, key, upload, 3, view[10 * MiB :], 10 * MiB)
    await store.complete_multipart(key, upload, [PartRef(1, first, 5 * MiB), PartRef(2, second, 5 * MiB),
                                                 PartRef(3, last, len(data) - 10 * MiB)])
    assert await store.object_size(key) == len(data)
    assert await read_all(store, key, 0, len(data)) == data


async def test_parts_with_and_without_offsets_mixed(store):
    """A part of unknown position between parts written in place: assembled in number order."""
    key = f"media/files/{uuid.uuid4().hex}.bin"
    data = random_bytes(11 * MiB, seed=12)
    view = memoryview(data)
    upload = await store.create_multipart(key, "application/octet-stream")
    first = await store_part(store, key, upload, 1, view[: 5 * MiB], 0)
    second = await store.upload_part(key, upload, 2, view[5 * MiB : 10 * MiB])
    third = await store_part(store, key, upload, 3, view[10 * MiB :], 10 * MiB)
    await store.complete_multipart(key, upload, [PartRef(1, first, 5 * MiB), PartRef(2, second, 5 * MiB),
                                                 PartRef(3, third, MiB)])
    assert await read_all(store, key, 0, len(data)) == data


async def test_complete_with_a_stale_part_token_fails(store):
    key = f"media/files/{uuid.uuid4().hex}.bin"
    upload = await store.create_multipart(key, "application/octet-stream")
    old = await store.upload_part(key, upload, 1, memoryview(b"a" * 10))
    await store.upload_part(key, upload, 1, memoryview(b"b" * 10))
    with pytest.raises(StoreError):
        await store.complete_multipart(key, upload, [PartRef(1, old, 10)])
    await store.abort_multipart(key, upload)
    await store.abort_multipart(key, upload)


async def test_copy_part(store):
    source = f"media/files/{uuid.uuid4().hex}.bin"
    data = random_bytes(6 * MiB, seed=8)
    await store.put_object(source, data)
    key = f"media/files/{uuid.uuid4().hex}.bin"
    upload = await store.create_multipart(key, "application/octet-stream")
    first = await store.copy_part(key, upload, 1, source, 0, 5 * MiB - 1)
    second = await store.copy_part(key, upload, 2, source, 5 * MiB, 6 * MiB - 1)
    await store.complete_multipart(key, upload, [PartRef(1, first, 5 * MiB), PartRef(2, second, MiB)])
    assert await read_all(store, key, 0, 6 * MiB) == data


async def test_small_objects_and_prefixes(store):
    prefix = f"tus/{uuid.uuid4().hex}/"
    for name in ("a", "b", "c"):
        await store.put_object(prefix + name, name.encode())
    assert await store.get_object(prefix + "b") == b"b"
    assert await store.delete_prefix(prefix) == 3
    with pytest.raises(ObjectNotFound):
        await store.get_object(prefix + "a")
    await store.check()


async def test_missing_objects(store):
    with pytest.raises(ObjectNotFound):
        await store.get_object(f"media/files/{uuid.uuid4().hex}")
    with pytest.raises(ObjectNotFound):
        await read_all(store, f"media/files/{uuid.uuid4().hex}", 0, 10)
    await store.delete_object(f"media/files/{uuid.uuid4().hex}")


# What each store declares it can do beyond the core interface; the gateway's offer
# (Tus-Extension, media URLs, in-place parts) follows from these declarations.
ABILITIES = {
    "local": {CopiesParts, WritesPartsInPlace},
    "s3": {CopiesParts, SignsUrls},
}


async def test_declared_abilities(store):
    declared = {ability for ability in (CopiesParts, WritesPartsInPlace, SignsUrls) if isinstance(store, ability)}
    assert declared == ABILITIES[store.name]


async def test_a_signed_url_reads_the_object(store):
    if not isinstance(store, SignsUrls):
        assert not hasattr(store, "signed_url"), "a store that cannot sign has no signed_url at all"
        return
    key = f"media/files/{uuid.uuid4().hex}.bin"
    await store.put_object(key, b"signed bytes")
    url = await store.signed_url(key, 60, "name.bin")
    assert requests.get(url, timeout=10).content == b"signed bytes"


async def test_every_failure_is_a_store_error(store):
    """Whatever the library or system underneath says, a store answers with its own errors."""
    key = f"media/files/{uuid.uuid4().hex}.bin"
    with pytest.raises(StoreError):
        await store.complete_multipart(key, "0" * 32, [PartRef(1, "x", 1)])
    upload = await store.create_multipart(key, "application/octet-stream")
    with pytest.raises(StoreError):
        await store.copy_part(key, upload, 1, f"media/files/{uuid.uuid4().hex}", 0, 9)
    await store.abort_multipart(key, upload)


def _aligned_copy(data: bytes):
    from streaming.buffers import aligned_buffer

    buffer = aligned_buffer(len(data))
    buffer[:] = data
    return buffer


@pytest.mark.parametrize("direct_io_refused", [False, True])
async def test_local_parts_from_aligned_buffers(tmp_path, monkeypatch, direct_io_refused):
    """Whole parts in page-aligned buffers go to disk with O_DIRECT (the way the part writer
    sends them), a short last part and a rewritten part included; a file system that refuses
    O_DIRECT gets the same bytes through buffered writes, and direct I/O is off from then on."""
    import errno
    import os

    real_open = os.open
    direct_opens = []

    def open_spy(path, flags, *args, **kwargs):
        if flags & os.O_DIRECT:
            direct_opens.append(path)
            if direct_io_refused:
                raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_spy)
    executor = ThreadPoolExecutor(2)
    store = LocalStore(tmp_path, executor)
    key = f"media/files/{uuid.uuid4().hex}.bin"
    data = random_bytes(10 * MiB + 4097, seed=13)
    upload = await store.create_multipart(key, "application/octet-stream")
    parts = [_aligned_copy(data[i : i + 5 * MiB]) for i in range(0, len(data), 5 * MiB)]
    await store_part(store, key, upload, 2, memoryview(_aligned_copy(b"x" * (5 * MiB))), 5 * MiB)
    tokens = [await store_part(store, key, upload, number, memoryview(parts[number - 1]), (number - 1) * 5 * MiB)
              for number in (3, 2, 1)][::-1]
    await store.complete_multipart(key, upload, [PartRef(n + 1, tokens[n], len(parts[n])) for n in range(3)])
    assert await read_all(store, key, 0, len(data)) == data
    if direct_io_refused:
        assert len(direct_opens) == 1 and not store._direct_io
    else:
        assert len(direct_opens) == 3  # the two whole parts and the rewrite; the 4097-byte part is buffered
    await store.close()
    executor.shutdown()


async def test_local_completion_after_a_restart_copies_only_the_later_parts(tmp_path):
    """Parts written in place by one store instance, then (after a restart: a new instance with
    its own data file) by another: completion keeps the first instance's data file as the object
    and copies in only the later parts, and the object is the parts in order."""
    import os

    executor = ThreadPoolExecutor(2)
    before, after = LocalStore(tmp_path, executor), LocalStore(tmp_path, executor)
    key = f"media/files/{uuid.uuid4().hex}.bin"
    data = random_bytes(17 * MiB + 5, seed=14)
    view = memoryview(data)
    upload = await before.create_multipart(key, "application/octet-stream")
    tokens = [await store_part(before, key, upload, 1, view[: 5 * MiB], 0),
              await store_part(before, key, upload, 2, view[5 * MiB : 10 * MiB], 5 * MiB)]
    await store_part(before, key, upload, 3, memoryview(b"s" * (5 * MiB)), 10 * MiB)  # not committed
    first_file = next((tmp_path / "multipart" / upload).glob("data-*"))
    inode = first_file.stat().st_ino
    tokens += [await store_part(after, key, upload, 3, view[10 * MiB : 15 * MiB], 10 * MiB),
               await store_part(after, key, upload, 4, view[15 * MiB :], 15 * MiB)]
    sizes = [5 * MiB, 5 * MiB, 5 * MiB, len(data) - 15 * MiB]
    await after.complete_multipart(key, upload, [PartRef(n + 1, tokens[n], sizes[n]) for n in range(4)])
    assert await read_all(after, key, 0, len(data)) == data
    assert os.stat(tmp_path / "objects" / key).st_ino == inode  # renamed, not rebuilt
    assert not (tmp_path / "multipart" / upload).exists()
    executor.shutdown()


async def test_local_completion_without_copy_file_range(tmp_path, monkeypatch):
    """Where copy_file_range is refused (another file system, an old kernel), parts are copied
    by reading and writing: a part of unknown position between parts written in place, and a
    copied part, still give the bytes in order."""
    import errno
    import os

    def refused(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refused)
    executor = ThreadPoolExecutor(2)
    store = LocalStore(tmp_path, executor)
    source = f"media/files/{uuid.uuid4().hex}.bin"
    data = random_bytes(13 * MiB + 1, seed=15)
    await store.put_object(source, data)
    key = f"media/files/{uuid.uuid4().hex}.bin"
    upload = await store.create_multipart(key, "application/octet-stream")
    view = memoryview(data)
    parts = [await store_part(store, key, upload, 1, view[: 5 * MiB], 0),
             await store.upload_part(key, upload, 2, view[5 * MiB : 10 * MiB]),
             await store.copy_part(key, upload, 3, source, 10 * MiB, len(data) - 1)]
    sizes = [5 * MiB, 5 * MiB, len(data) - 10 * MiB]
    await store.complete_multipart(key, upload, [PartRef(n + 1, parts[n], sizes[n]) for n in range(3)])
    assert await read_all(store, key, 0, len(data)) == data
    executor.shutdown()
