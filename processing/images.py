"""Image thumbnails with Pillow: shrink-on-load, EXIF orientation, no metadata, bomb guard.

`make_thumbnail` is a pure function of bytes, run in a worker process or thread;
any failure is an exception for the caller to record, never a crash of the gateway.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

_heif_registered = False


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


class ImageRejected(Exception):
    """The image cannot or must not be decoded (too large, corrupt, unsupported)."""


@dataclass(frozen=True)
class ImageResult:
    width: int
    height: int
    format: str
    thumbnail: bytes
    thumbnail_width: int
    thumbnail_height: int


def make_thumbnail(data: bytes, max_width: int, max_height: int, max_pixels: int, quality: int = 82) -> ImageResult:
    """A JPEG thumbnail fitting max_width x max_height, and the image's upright size.

    Raises ImageRejected for images above `max_pixels` (checked before decoding
    pixel data), corrupt or unsupported images.
    """
    _register_heif()
    Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageRejected(f"the image is too large to process ({width}x{height} pixels)")
                source_format = image.format or "unknown"
                orientation = image.getexif().get(0x0112, 1)
                rotated = orientation in (5, 6, 7, 8)
                if rotated:
                    width, height = height, width
                if getattr(image, "n_frames", 1) > 1:
                    image.seek(0)
                # shrink-on-load: JPEG decodes at 1/2, 1/4 or 1/8 scale directly, to no less
                # than twice the final size (the resize that follows keeps the quality)
                stored_w, stored_h = image.size
                box_w, box_h = (max_height, max_width) if rotated else (max_width, max_height)
                scale = min(box_w / stored_w, box_h / stored_h, 1.0)
                image.draft("RGB", (max(1, int(stored_w * scale * 2)), max(1, int(stored_h * scale * 2))))
                image = ImageOps.exif_transpose(image)
                image.thumbnail((max_width, max_height), Image.Resampling.LANCZOS, reducing_gap=2.0)
                image = _flatten(image)
                out = io.BytesIO()
                image.save(out, "JPEG", quality=quality)
                return ImageResult(width, height, source_format, out.getvalue(), image.width, image.height)
        except ImageRejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected("the image has too many pixels to process", str(exc)) from None
        except (OSError, ValueError, SyntaxError, EOFError, Image.UnidentifiedImageError) as exc:
            raise ImageRejected("the image could not be read", f"{type(exc).__name__}: {exc}") from None
        except MemoryError:
            raise ImageRejected("the image is too large to process") from None


def _flatten(image: Image.Image) -> Image.Image:
    """RGB, with transparency composited on white."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
