"""Video probing and thumbnails with the ffprobe/ffmpeg command-line tools.

Both run as subprocesses with a wall-clock timeout, an address-space limit
and a CPU-time limit, and read the video through a URL with HTTP range
requests, so taking one frame of a multi-GB file reads only what the demuxer
needs. Only network protocols are allowed (a hostile file cannot make
ffmpeg open local files).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import resource
import signal
from dataclasses import dataclass
from fractions import Fraction

from processing.errors import MediaRejected
from processing.jpeg import NotJpeg, strip_metadata

PROTOCOLS = "http,https,tcp,tls,crypto"
_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)

# why a video failed, in words for its owner (the tools' own words go to the log only)
UNREADABLE = "the video could not be read (the file is damaged, incomplete or not a supported video)"
NO_VIDEO = "the video could not be decoded (no video stream)"
NO_FRAME = "the video could not be decoded (no frame could be read)"
TOO_SLOW = "the video took too long to process"
INCOMPLETE = "the video could not be read (the file is incomplete: its index or its end is missing)"
_INCOMPLETE = re.compile(r"moov atom not found|partial file|end of file", re.IGNORECASE)
_OUT_OF_MEMORY = re.compile(r"cannot allocate memory|out of memory|get_buffer\(\) failed|failed to map segment"
                            r"|thread_encoder_init failed|malloc", re.IGNORECASE)


class VideoRejected(MediaRejected):
    """The video cannot be probed or decoded within the limits.

    `reason` is for the video's owner (plain words); `detail` is for the log (what the
    tool said, with URLs removed). str() is the reason.
    """


def without_urls(text: str) -> str:
    """`text` with every URL replaced by "<url>" (the tools name their signed input URL)."""
    return _URL.sub("<url>", text)


@dataclass(frozen=True)
class VideoInfo:
    duration: float | None
    codec: str | None
    width: int | None
    height: int | None
    frame_rate: float | None
    format: str | None


def _limits(memory_bytes: int, cpu_seconds: int, data_bytes: int | None):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        if data_bytes:
            resource.setrlimit(resource.RLIMIT_DATA, (data_bytes, data_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MiB"


async def run_limited(args: list[str], timeout: float, memory_bytes: int, max_output: int = 16 * 1024 * 1024,
                      failure: str = UNREADABLE, data_bytes: int | None = None) -> bytes:
    """Run a command with limits; return its stdout, or raise VideoRejected.

    Limits: `timeout` seconds of wall clock (and of CPU), `memory_bytes` of address space and,
    when given, `data_bytes` of heap and private memory (RLIMIT_DATA: what the job reserved).
    The reason is `failure`, or "too long" / "more memory than allowed" when that is what
    stopped the command; the detail is the command's last error line.
    """
    process = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=_limits(memory_bytes, int(timeout) + 1, data_bytes), limit=max_output)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise VideoRejected(f"{TOO_SLOW} (more than {timeout:.0f} seconds)",
                            f"{args[0]} took longer than {timeout:.0f} s") from None
    if process.returncode != 0:
        text = stderr.decode("utf-8", "replace")
        lines = [line for line in text.splitlines() if line.strip()]
        said = lines[-1][:300] if lines else f"exit {process.returncode}"
        detail = f"{args[0]} failed (exit {process.returncode}): {without_urls(said)}"
        if process.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
            raise VideoRejected(f"{TOO_SLOW} (more than {timeout:.0f} seconds)", detail)
        if _OUT_OF_MEMORY.search(text):
            limit = _mib(data_bytes) if data_bytes else _mib(memory_bytes)
            raise VideoRejected(f"the video needs more memory than processing allows (limit {limit})", detail)
        if _INCOMPLETE.search(text):
            raise VideoRejected(INCOMPLETE, detail)
        raise VideoRejected(failure, detail)
    if len(stdout) > max_output:
        raise VideoRejected(failure, f"{args[0]} wrote too much output")
    return stdout


def _rate(text: str | None) -> float | None:
    try:
        value = Fraction(text) if text else None
    except (ValueError, ZeroDivisionError):
        return None
    return round(float(value), 3) if value else None


async def probe(url: str, timeout: float, memory_bytes: int, data_bytes: int | None = None) -> VideoInfo:
    """Duration, video codec, upright dimensions and frame rate of the video at `url`."""
    output = await run_limited(
        ["ffprobe", "-v", "error", "-protocol_whitelist", PROTOCOLS, "-print_format", "json",
         "-show_format", "-show_streams", url], timeout, memory_bytes, data_bytes=data_bytes)
    try:
        data = json.loads(output)
    except ValueError:
        raise VideoRejected(UNREADABLE, "ffprobe printed no JSON") from None
    try:
        return _video_info(data)
    except (AttributeError, TypeError, ValueError, OverflowError) as exc:  # what the file made ffprobe print
        raise VideoRejected(UNREADABLE, f"unexpected ffprobe output: {type(exc).__name__}") from None


def _video_info(data: dict) -> VideoInfo:
    video = next((s for s in data.get("streams", []) if s.get("codec_type") == "video"), None)
    if video is None:
        raise VideoRejected(NO_VIDEO, "no video stream")
    width, height = video.get("width"), video.get("height")
    rotation = 0
    for side in video.get("side_data_list", []) or []:
        if "rotation" in side:
            rotation = int(side["rotation"])
    rotation = int(video.get("tags", {}).get("rotate", rotation) or 0)
    if rotation % 180 and width and height:
        width, height = height, width
    duration = data.get("format", {}).get("duration") or video.get("duration")
    seconds = float(duration) if duration not in (None, "N/A") else None
    return VideoInfo(
        duration=round(seconds, 3) if seconds is not None and math.isfinite(seconds) else None,
        codec=video.get("codec_name"),
        width=width,
        height=height,
        frame_rate=_rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate")),
        format=data.get("format", {}).get("format_name"),
    )


async def thumbnail(url: str, at: float, max_width: int, max_height: int, timeout: float, memory_bytes: int,
                    data_bytes: int | None = None) -> bytes:
    """A JPEG of the frame at `at` seconds (input seeking: only what is needed is read), with no
    metadata: no comment (ffmpeg's encoder name), EXIF, XMP or ICC profile.

    One thread decodes, filters and encodes: a single frame gains nothing from more, and each
    thread would hold its own frames.
    """
    scale = f"scale='min({max_width},iw)':'min({max_height},ih)':force_original_aspect_ratio=decrease"
    output = await run_limited(
        ["ffmpeg", "-v", "error", "-nostdin", "-protocol_whitelist", PROTOCOLS, "-threads", "1", "-ss", f"{at:.3f}",
         "-i", url, "-frames:v", "1", "-an", "-sn", "-dn", "-map_metadata", "-1", "-vf", scale,
         "-filter_threads", "1", "-threads", "1", "-flags", "+bitexact", "-fflags", "+bitexact",
         "-f", "image2", "-c:v", "mjpeg", "-q:v", "4", "pipe:1"],
        timeout, memory_bytes, failure=NO_FRAME, data_bytes=data_bytes)
    try:
        return strip_metadata(output)
    except NotJpeg as exc:
        raise VideoRejected(NO_FRAME, f"ffmpeg produced no frame ({exc})") from None
