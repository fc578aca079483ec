"""The checksum extension: Upload-Checksum parsing and the supported algorithms."""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from typing import Callable, Protocol

from gateway.tus.headers import HeaderError


class Hasher(Protocol):
    def update(self, data: bytes) -> None: ...

    def digest(self) -> bytes: ...


class Crc32:
    """CRC-32 (as zlib computes it), digest as 4 big-endian bytes."""

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes) -> None:
        self._value = zlib.crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


ALGORITHMS: dict[str, Callable[[], Hasher]] = {
    "sha1": hashlib.sha1,
    "md5": hashlib.md5,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
    "crc32": Crc32,
}


def parse_checksum(header: str | None) -> tuple[str, bytes] | None:
    """(algorithm, expected digest) of an Upload-Checksum header, None when absent.

    Raises HeaderError for a malformed header or an unsupported algorithm. The digest's
    length is not checked here: a digest of the wrong length is a mismatch, not a syntax error.
    """
    if header is None:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in ALGORITHMS:
        raise HeaderError(f"Upload-Checksum algorithm must be one of {', '.join(ALGORITHMS)}")
    if not encoded.strip():
        raise HeaderError("Upload-Checksum needs a base64 digest after the algorithm")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise HeaderError("Upload-Checksum value is not base64") from None
    return algorithm, digest
