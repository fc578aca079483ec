"""Checks on thumbnail bytes, read independently of the code under test, and the metadata the
tests put into the pictures they check."""

from __future__ import annotations

import io
import struct

from PIL import Image, ImageCms

XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="Jane Owner"/></rdf:RDF></x:xmpmeta>')


def swapped_profile() -> bytes:
    """An RGB profile whose red and blue primaries are sRGB's swapped: a pure red pixel is sRGB blue."""
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    tags = {bytes(icc[132 + 12 * i:136 + 12 * i]): 132 + 12 * i for i in range(struct.unpack(">I", icc[128:132])[0])}
    red, blue = tags[b"rXYZ"], tags[b"bXYZ"]
    icc[red + 4:red + 12], icc[blue + 4:blue + 12] = icc[blue + 4:blue + 12], icc[red + 4:red + 12]
    return bytes(icc)


def jpeg_markers(data: bytes) -> list[int]:
    """The markers of a JPEG, up to its first scan."""
    assert data[:2] == b"\xff\xd8", data[:16]
    markers, pos = [0xD8], 2
    while pos < len(data):
        assert data[pos] == 0xFF, f"no marker at {pos}"
        marker = data[pos + 1]
        markers.append(marker)
        if marker == 0xDA:
            return markers
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    raise AssertionError("no scan")


def assert_no_metadata(thumbnail: bytes) -> None:
    """No APPn segment but a plain JFIF header, no comment, no EXIF/XMP/ICC bytes, nothing Pillow
    reads as metadata."""
    markers = jpeg_markers(thumbnail)
    assert not [m for m in markers if 0xE1 <= m <= 0xEF or m == 0xFE], [hex(m) for m in markers]
    for needle in (b"Exif", b"ICC_PROFILE", b"xmpmeta", b"Acacia", b"Lavc", b"Photoshop"):
        assert needle not in thumbnail, needle
    with Image.open(io.BytesIO(thumbnail)) as decoded:
        assert not decoded.getexif() and "icc_profile" not in decoded.info and "comment" not in decoded.info
