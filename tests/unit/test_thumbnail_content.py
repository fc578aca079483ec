"""What a thumbnail holds (pixels in sRGB, no metadata) and what its job costs, from real Pillow files."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from gateway.downloads import derived_filename
from processing.images import ImageRejected, estimate, make_thumbnail
from processing.jpeg import NotJpeg, strip_metadata
from tests.jpeg_checks import XMP, assert_no_metadata, swapped_profile

HOME = "Comment: 12 Acacia Avenue, Springfield"


def tagged_photo(fmt: str, size=(800, 600)) -> bytes:
    picture = Image.new("RGB", size, (255, 0, 0))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x010E] = "at home, 12 Acacia Avenue"  # ImageDescription
    out = io.BytesIO()
    extra = {"comment": HOME} if fmt == "JPEG" else {}
    picture.save(out, fmt, exif=exif, icc_profile=swapped_profile(), xmp=XMP, **extra)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "PNG", "TIFF"])
def test_thumbnail_drops_exif_xmp_comment_and_profile_and_keeps_the_colours(fmt):
    source = tagged_photo(fmt)
    with Image.open(io.BytesIO(source)) as check:  # the source really carries them
        assert check.info.get("icc_profile") and check.getexif()
    result = make_thumbnail(source, 320, 320, 50_000_000)
    assert_no_metadata(result.thumbnail)
    with Image.open(io.BytesIO(result.thumbnail)) as thumb:
        r, g, b = thumb.convert("RGB").getpixel((10, 10))
    assert b > 200 and r < 60, "the pixels were moved from the source profile into sRGB"


def test_a_profile_that_does_not_fit_the_pixels_is_dropped_not_fatal():
    out = io.BytesIO()
    Image.new("L", (64, 64), 128).save(out, "JPEG", icc_profile=swapped_profile(), comment=HOME)
    assert_no_metadata(make_thumbnail(out.getvalue(), 320, 320, 50_000_000).thumbnail)


def test_strip_metadata_keeps_a_decodable_image_without_appn_or_comments():
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (0, 128, 0)).save(out, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00",
                                                 comment=HOME, icc_profile=swapped_profile(), progressive=True)
    stripped = strip_metadata(out.getvalue())
    assert_no_metadata(stripped)
    with Image.open(io.BytesIO(stripped)) as image:
        assert image.size == (64, 48) and image.convert("RGB").getpixel((5, 5))[1] > 100
    with pytest.raises(NotJpeg):
        strip_metadata(b"not a jpeg at all")


def test_estimate_reads_the_header_only_and_applies_jpeg_draft_mode():
    out = io.BytesIO()
    Image.new("RGB", (6000, 4000), "white").save(out, "JPEG", quality=50)
    data = out.getvalue()
    shape = estimate(data[:64 * 1024], False, 320, 320, 50_000_000)
    assert (shape.width, shape.height) == (6000, 4000)
    assert (shape.decoded_width, shape.decoded_height) == (750, 500), "decoded at 1/8, twice the thumbnail"
    assert shape.pixel_bytes == 750 * 500 * 4  # Pillow keeps RGB in 4 bytes a pixel
    png = io.BytesIO()
    Image.new("RGB", (3000, 2000), "white").save(png, "PNG")
    assert estimate(png.getvalue(), True, 320, 320, 50_000_000).pixel_bytes == 3000 * 2000 * 4


def test_estimate_asks_for_more_when_the_header_is_cut_and_refuses_what_is_not_an_image():
    out = io.BytesIO()
    Image.new("RGB", (64, 64)).save(out, "JPEG", exif=b"Exif\x00\x00" + bytes(60_000))  # header past 4 KiB
    assert estimate(out.getvalue()[:4096], False, 320, 320, 50_000_000) is None
    with pytest.raises(ImageRejected) as refused:
        estimate(b"\xff\xd8\xff\xe0 this is not really a JPEG", True, 320, 320, 50_000_000)
    assert refused.value.reason in ("the file is not a supported image", "the image is damaged or incomplete")


def test_too_many_pixels_is_refused_from_the_header_with_the_figures():
    bomb = io.BytesIO()
    Image.new("1", (12000, 10000)).save(bomb, "PNG")  # 120 MP of zeros, small on disk
    with pytest.raises(ImageRejected) as refused:
        estimate(bomb.getvalue()[:4096], False, 320, 320, 50_000_000)
    assert refused.value.reason == "the image is too large to process (120 megapixels, limit 50 megapixels)"
    with pytest.raises(ImageRejected):
        make_thumbnail(bomb.getvalue(), 320, 320, 50_000_000)


@pytest.mark.parametrize("original,expected", [
    ("holiday.heic", "holiday-thumbnail.jpg"),
    ("a.b.c.png", "a.b.c-thumbnail.jpg"),
    ("../../secret/фото.png", "фото-thumbnail.jpg"),
    ('say "cheese".jpg', "say cheese-thumbnail.jpg"),
    (None, "abc123-thumbnail.jpg"),
    ("", "abc123-thumbnail.jpg"),
])
def test_derived_files_are_named_after_the_original(original, expected):
    assert derived_filename(original, "thumbnail", "jpg", "abc123") == expected
