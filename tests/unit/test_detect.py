"""Type detection from magic numbers."""

import io

import pytest
from PIL import Image

from processing.detect import detect, object_key


def image_bytes(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt,category,ext", [("JPEG", "images", "jpg"), ("PNG", "images", "png"),
                                              ("GIF", "images", "gif"), ("WEBP", "images", "webp"),
                                              ("TIFF", "images", "tiff"), ("BMP", "images", "bmp")])
def test_images(fmt, category, ext):
    detected = detect(image_bytes(fmt))
    assert (detected.category, detected.extension) == (category, ext)


@pytest.mark.parametrize("head,ext", [
    (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00", "mp4"),
    (b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00", "mov"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82\x84webm", "webm"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x82\x88matroska", "mkv"),
    (b"RIFF\x00\x00\x00\x00AVI LIST", "avi"),
])
def test_videos(head, ext):
    detected = detect(head)
    assert (detected.category, detected.extension) == ("videos", ext)


def test_heic_is_an_image():
    assert detect(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00").category == "images"


def test_names_never_make_a_type():
    text = detect(b"hello, I am text", filename="photo.jpg")
    assert (text.category, text.extension, text.mime) == ("files", "bin", "application/octet-stream")
    assert detect(b"plain", filename="notes.txt").extension == "txt"
    assert detect(b"plain", filename="weird.$$$").extension == "bin"
    assert detect(b"", filename=None).extension == "bin"


def test_object_key_layout():
    assert object_key("abc", detect(image_bytes("PNG"))) == "media/images/abc.png"
