"""Image thumbnails with Pillow: shrink-on-load, EXIF orientation, sRGB, no metadata, bomb guard.

`estimate` and `make_thumbnail` are pure functions of bytes, run in a worker process or thread;
any failure is an exception for the caller to record, never a crash of the gateway.
`estimate` reads only the image's header (and applies the same draft mode as `make_thumbnail`),
so a job's memory can be reserved before any pixel is decoded.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from dataclasses import dataclass
from typing import Iterator

from PIL import Image, ImageCms

from processing.errors import MediaRejected
from processing.jpeg import NotJpeg, strip_metadata

_heif_registered = False

NOT_AN_IMAGE = "the file is not a supported image"
DAMAGED = "the image is damaged or incomplete"

# Bytes per pixel of Pillow's storage by mode (3-band images are stored in 4 bytes per pixel).
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "BGR;15": 2, "BGR;16": 2,
                "BGR;24": 3}
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _register_heif() -> None:
    """HEIC/HEIF/AVIF decoding when the wheel is available (loaded where images are decoded only)."""
    global _heif_registered
    if not _heif_registered:
        _heif_registered = True
        try:
            from pillow_heif import register_heif_opener

            register_heif_opener()
        except ImportError:  # pragma: no cover - optional
            pass


class ImageRejected(MediaRejected):
    """The image cannot or must not be decoded (too large, corrupt, unsupported).

    `reason` is for the image's owner (plain words); `detail` is for the log. str() is the reason.
    """


def megapixels(pixels: int) -> str:
    """`pixels` in megapixels as people write it: '24', '0.3', '900'."""
    value = pixels / 1_000_000
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}".rstrip("0").rstrip(".")


def too_many_pixels(width: int, height: int, max_pixels: int) -> ImageRejected:
    return ImageRejected(f"the image is too large to process ({megapixels(width * height)} megapixels, "
                         f"limit {megapixels(max_pixels)} megapixels)", f"{width}x{height}")


@dataclass(frozen=True)
class ImageEstimate:
    """What decoding an image for its thumbnail takes, known from its header."""

    width: int  # stored size, before orientation
    height: int
    decoded_width: int  # the size it is decoded at (smaller for JPEG draft mode)
    decoded_height: int
    mode: str
    pixel_bytes: int  # decoded pixels as Pillow holds them (and the decoder's own canvas)


@dataclass(frozen=True)
class ImageResult:
    width: int
    height: int
    format: str
    thumbnail: bytes
    thumbnail_width: int
    thumbnail_height: int


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block only loses the orientation
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _draft(image: Image.Image, max_width: int, max_height: int, rotated: bool) -> None:
    """Shrink-on-load: JPEG decodes at 1/2, 1/4 or 1/8 scale directly, to no less than twice
    the final size (the resize that follows keeps the quality). No-op for other formats."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    stored_w, stored_h = image.size
    box_w, box_h = (max_height, max_width) if rotated else (max_width, max_height)
    scale = min(box_w / stored_w, box_h / stored_h, 1.0)
    image.draft("RGB", (max(1, int(stored_w * scale * 2)), max(1, int(stored_h * scale * 2))))


def _pixel_bytes(image: Image.Image) -> int:
    width, height = image.size
    return width * height * _PIXEL_BYTES.get(image.mode, 4)


def webp_size(head: bytes) -> tuple[int, int] | None:
    """The canvas size of a WebP file from its first 30 bytes (VP8X, VP8 or VP8L), else None."""
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    chunk = head[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    return None


def _bomb(exc: BaseException, max_pixels: int) -> ImageRejected:
    """Pillow's decompression bomb guard, in words with the figures ("Image size (N pixels) exceeds ...")."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{megapixels(int(found.group(1)))} megapixels, " if found else ""
    return ImageRejected(f"the image is too large to process ({size}limit {megapixels(max_pixels)} megapixels)",
                         str(exc))


class _Undecodable(ImageRejected):
    """Pillow could not read the file (damaged, cut short, or not an image it reads)."""


def _rejection(exc: BaseException) -> _Undecodable:
    if isinstance(exc, Image.UnidentifiedImageError):
        return _Undecodable(NOT_AN_IMAGE, str(exc))
    return _Undecodable(DAMAGED, f"{type(exc).__name__}: {exc}")


@contextlib.contextmanager
def _opened(data: bytes, max_pixels: int, doing: str) -> Iterator[Image.Image]:
    """`data` opened by Pillow (pixels not yet decoded), refused above `max_pixels` before any
    pixel is read; every way decoding can fail inside the block becomes an ImageRejected
    (`_Undecodable` for files Pillow cannot read)."""
    _register_heif()
    Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise too_many_pixels(width, height, max_pixels)
                yield image
        except ImageRejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb(exc, max_pixels) from None
        except (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError) as exc:
            raise _rejection(exc) from None
        except MemoryError:
            raise ImageRejected("the image is too large to process", f"MemoryError {doing}") from None


def estimate(head: bytes, complete: bool, max_width: int, max_height: int, max_pixels: int) -> ImageEstimate | None:
    """The decoded size of the image whose first bytes are `head`, read from its header only.

    `complete`: `head` is the whole file. Returns None when the header lies beyond `head`
    (read more and ask again). Raises ImageRejected for images above `max_pixels` and for
    files that are not images Pillow reads.
    """
    webp = webp_size(head)
    if webp is not None:  # libwebp allocates its canvas as soon as it opens a file: size from the header
        width, height = webp
        if width * height > max_pixels:
            raise too_many_pixels(width, height, max_pixels)
        return ImageEstimate(width, height, width, height, "RGBA", 2 * 4 * width * height)
    try:
        with _opened(head, max_pixels, "reading its header") as image:
            width, height = image.size
            _draft(image, max_width, max_height, _orientation(image) in (5, 6, 7, 8))
            return ImageEstimate(width, height, image.width, image.height, image.mode, _pixel_bytes(image))
    except _Undecodable:
        if not complete:
            return None  # perhaps only cut short: the caller reads the whole file
        raise


def make_thumbnail(data: bytes, max_width: int, max_height: int, max_pixels: int, quality: int = 82) -> ImageResult:
    """A JPEG thumbnail fitting max_width x max_height, and the image's upright size.

    The thumbnail is sRGB (converted from the image's ICC profile when it has one) and carries
    no metadata at all: no EXIF, XMP, IPTC, ICC profile or comment. Raises ImageRejected for
    images above `max_pixels` (checked before decoding pixel data), corrupt or unsupported images.
    """
    with _opened(data, max_pixels, "while decoding") as image:
        width, height = image.size
        source_format = image.format or "unknown"
        orientation = _orientation(image)
        rotated = orientation in (5, 6, 7, 8)
        icc = image.info.get("icc_profile")
        _draft(image, max_width, max_height, rotated)
        # resize first, turn upright after: the rotation then moves thumbnail pixels only
        image.thumbnail((max_height, max_width) if rotated else (max_width, max_height),
                        Image.Resampling.LANCZOS, reducing_gap=2.0)
        small = image.transpose(_TRANSPOSE[orientation]) if orientation != 1 else image
        small = _to_srgb(small, icc)
        if rotated:
            width, height = height, width
        thumbnail = _encode(small, quality)
        return ImageResult(width, height, source_format, thumbnail, small.width, small.height)


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """RGB in sRGB: transparency composited on white, colours moved from `icc` when given."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, mask=rgba.getchannel("A"))
    elif image.mode not in ("RGB", "CMYK", "L"):
        image = image.convert("RGB")
    if icc:
        try:
            return ImageCms.profileToProfile(image, ImageCms.ImageCmsProfile(io.BytesIO(icc)), _SRGB,
                                             outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass  # a profile that does not fit the pixels: take them as sRGB
    return image.convert("RGB")


def _encode(image: Image.Image, quality: int) -> bytes:
    """Baseline JPEG of `image` with nothing but pixels: no EXIF, XMP, ICC profile or comment."""
    bare = Image.new("RGB", image.size)
    bare.paste(image)  # an image with an empty `info`: the encoder finds nothing to copy
    out = io.BytesIO()
    bare.save(out, "JPEG", quality=quality)
    try:
        return strip_metadata(out.getvalue())
    except NotJpeg as exc:  # pragma: no cover - Pillow writes JPEGs
        raise ImageRejected(DAMAGED, f"the encoder wrote no JPEG: {exc}") from None
