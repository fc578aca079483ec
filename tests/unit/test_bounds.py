"""Bounded metric labels, client text that must never raise, and failure reasons for people
(issue 14, items 4, 6 and 8): the pure parts, without servers."""

from __future__ import annotations

import asyncio
import logging
import random
import string
import sys
import time

import pytest

from gateway.app import routes
from gateway.config import Settings
from gateway.metrics import METHODS, BoundedLabel, GatewayMetrics, RouteNamer, method_label
from gateway.ranges import RangeNotSatisfiable, parse_range
from gateway.signed_urls import UrlSigner
from metadata.media import FAILED, PROCESSING, MediaConflict, MediaItem
from processing.images import ImageRejected
from processing.jobs import CANNOT_PROCESS, CANNOT_READ_STORED, MediaProcessor, ProcessingLimits, failure_of, plain_reason
from processing.video import UNREADABLE, VideoRejected, run_limited, without_urls
from streaming.stores.base import StoreError
from tests.unit.fakes import MemoryLeaseRepository

HUGE = "9" * 5000  # past Python's 4,300-digit limit of int(str)


# -- item 4: labels ----------------------------------------------------------------------------


def test_route_labels_are_templates_of_the_routes_or_unmatched():
    namer = RouteNamer([rule[0] for rule in routes()])
    templates = set(namer.templates)
    assert {"/files", "/files/{id}", "/media/{id}/{kind}", "/api/media/{id}", "/static/{path}", "/upload"} <= templates
    for template in templates:
        assert not set(template) & set("()[]^$\\?*+|"), template
    rng = random.Random(4)
    alphabet = string.printable + "é€\u0000/"
    for _ in range(2000):
        path = "/" + "/".join("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(rng.randint(0, 4)))
        assert namer(path) in templates | {"unmatched"}
    assert namer("/files/" + "a" * 32) == "/files/{id}"
    assert namer("/media/" + "0" * 32 + "/original") == "/media/{id}/{kind}"
    assert namer("/media/" + "0" * 32 + "/other") == "unmatched"
    assert namer("/static/vendor/uppy.min.js") == "/static/{path}"


@pytest.mark.parametrize("method", ["PUT", "TRACE", "CONNECT", "get", "X" * 30_000, "", None, "PROPFIND"])
def test_unknown_methods_are_labelled_other(method):
    assert method_label(method) == "other"


def test_known_methods_keep_their_name():
    assert [method_label(method) for method in METHODS] == list(METHODS)
    assert set(METHODS) == {"GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"}


def test_bounded_labels():
    closed = BoundedLabel(("images", "videos"))
    assert [closed("images"), closed("videos"), closed("files"), closed(None)] == ["images", "videos", "other", "other"]
    open_set = BoundedLabel(limit=3)
    assert [open_set(name) for name in ("put_object", "get_object", "Bad Name", "x" * 100, "head_object")] == \
        ["put_object", "get_object", "other", "other", "head_object"]
    assert open_set("list_parts") == "other" and open_set("get_object") == "get_object"


def test_gateway_metrics_never_take_client_text_as_a_label():
    metrics = GatewayMetrics()
    for number in range(200):
        metrics.observe_request("unmatched", f"M{number}" * 50, 405, 0.001)
        metrics.observe_store_call(f"op {number}", 0.01, ok=number % 2 == 0, retries=1)
        metrics.observe_processing(f"kind{number}", f"outcome{number}", 0.1)
    text = metrics.exposition().decode()
    assert "M1M1" not in text and "op 1" not in text and "kind1" not in text and "outcome1" not in text
    assert len(text) < 60_000, len(text)


# -- item 6: client text ------------------------------------------------------------------------


@pytest.mark.parametrize("header,expected", [
    (f"bytes=0-{HUGE}", (0, 100)),
    (f"bytes=-{HUGE}", (0, 100)),
    ("bytes=" + "0" * 5000 + "5-" + "0" * 5000 + "9", (5, 10)),
    (f"bytes={HUGE}-1", None),  # last before first: ignored
    ("bytes=\u0661-\u0662", None),  # Arabic-Indic digits are not HTTP digits
    ("Bytes=0-1", (0, 2)),
])
def test_ranges_with_numbers_of_any_length(header, expected):
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", [f"bytes={HUGE}-", f"bytes={HUGE}-{HUGE}", "bytes=" + "1" * 20 + "-"])
def test_ranges_starting_past_any_file_are_unsatisfiable(header):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)


def test_signatures_and_expiries_clients_make_up_are_refused_without_raising():
    signer = UrlSigner("secret")
    now = 1_000_000.0
    url = signer.sign("https://h", "a" * 32, "original", 60, now=now)
    expires = url.split("expires=")[1].split("&")[0]
    signature = url.split("signature=")[1]
    assert signer.verify("a" * 32, "original", expires, signature, now=now)
    for bad_signature in ("é", signature[:-1] + "é", "\u0000", "€" * 43, HUGE, "", signature + "A", signature.lower()):
        assert signer.verify("a" * 32, "original", expires, bad_signature, now=now) is False
    for bad_expires in (HUGE, "-1", "１２３", "1e9", "", None, "0" * 20, str(int(now) - 1)):
        assert signer.verify("a" * 32, "original", bad_expires, signature, now=now) is False
    assert signer.verify("b" * 32, "original", expires, signature, now=now) is False
    assert signer.verify("a" * 32, "thumbnail", expires, signature, now=now) is False


@pytest.mark.parametrize("value", ["example.com", "ftp://media.example", "https://", "https://h?x=1", "https://h#f",
                                   "https://user@h", "https://h x", "https://é.example"])
def test_public_url_must_be_an_http_origin(value):
    with pytest.raises(ValueError, match="PUBLIC_URL"):
        Settings.from_env({"PUBLIC_URL": value})


def test_public_url_is_kept_without_its_trailing_slash():
    assert Settings.from_env({"PUBLIC_URL": "https://media.example/gw/"}).public_url == "https://media.example/gw"
    assert Settings.from_env({"PUBLIC_URL": ""}).public_url == ""


# -- item 8: failure reasons -----------------------------------------------------------------------


def assert_plain(reason: str) -> None:
    lowered = reason.lower()
    for word in ("http", "signature", "<", ">", "object at", "0x", "/", "\\", "error", "ffprobe", "ffmpeg"):
        assert word not in lowered, (word, reason)


@pytest.mark.parametrize("text", [
    "cannot identify image file <_io.BytesIO object at 0x7f00aa>",
    "ffprobe failed: http://127.0.0.1:3000/media/ab/original?expires=1&signature=abc: Invalid data",
    "media/images/abcdef.jpg is missing",
    "KeyError: 'x'",
    "x" * 201,
    "",
    None,
])
def test_plain_reason_refuses_internal_text(text):
    assert plain_reason(text) == CANNOT_PROCESS


def test_plain_reason_keeps_words():
    assert plain_reason("the image is too large to process (30000x30000 pixels)") == \
        "the image is too large to process (30000x30000 pixels)"


def test_rejections_split_reason_and_detail():
    reason, detail = failure_of(ImageRejected("the image could not be read", "OSError: cannot identify <x object at 0x1>"))
    assert reason == "the image could not be read" and "object at" in detail
    reason, detail = failure_of(VideoRejected(UNREADABLE, "ffprobe failed: <url>: bad"))
    assert (reason, detail) == (UNREADABLE, "ffprobe failed: <url>: bad")
    assert str(VideoRejected(UNREADABLE, "detail")) == UNREADABLE
    assert failure_of(ImageRejected("cannot decode <_io.BytesIO object at 0x1>"))[0] == CANNOT_PROCESS


def test_urls_are_taken_out_of_tool_output():
    said = "[http @ 0x55] http://127.0.0.1:3000/media/x/original?expires=1&signature=abc: Invalid data found"
    assert without_urls(said) == "[http @ 0x55] <url> Invalid data found"


def test_a_failing_tool_is_a_plain_reason_and_a_detail_without_urls():
    script = "import sys; sys.stderr.write('https://h/media/x?signature=SECRET: Invalid data\\n'); sys.exit(1)"

    async def run() -> VideoRejected:
        with pytest.raises(VideoRejected) as caught:
            await run_limited([sys.executable, "-c", script], 30, 1 << 31)
        return caught.value

    rejected = asyncio.run(run())
    assert rejected.reason == UNREADABLE
    assert "SECRET" not in rejected.detail and "Invalid data" in rejected.detail


class MemoryMedia:
    """The parts of MediaRepository a processor uses."""

    def __init__(self, item: MediaItem) -> None:
        self.items = {item.id: item}

    async def get(self, media_id: str) -> MediaItem | None:
        return self.items.get(media_id)

    async def save(self, item: MediaItem) -> MediaItem:
        current = self.items.get(item.id)
        if current is None or current.version != item.version:
            raise MediaConflict(item.id)
        self.items[item.id] = item.evolve(version=item.version + 1)
        return self.items[item.id]

    async def with_status(self, status: str, limit: int = 100) -> list[MediaItem]:
        return [item for item in self.items.values() if item.status == status]


def _limits(timeout: float = 5) -> ProcessingLimits:
    return ProcessingLimits(concurrency=1, job_timeout=timeout, max_image_pixels=1000, max_image_bytes=1000,
                            max_video_duration=10, subprocess_memory=1 << 30, thumbnail_width=10,
                            thumbnail_height=10, executor_kind="thread", file_sha256=False)


async def _failed_reason(failure: BaseException | None, timeout: float = 5) -> str:
    item = MediaItem(id="m" * 32, owner="u", category="images", key="media/images/x.png", size=10,
                     content_type="image/png", filename="x.png", created_at=time.time(), status=PROCESSING)
    media = MemoryMedia(item)

    async def source_url(item: MediaItem) -> str:
        return "http://127.0.0.1:1/media/x/original?expires=1&signature=SECRET"

    processor = MediaProcessor(store=None, media=media, leases=MemoryLeaseRepository(),  # type: ignore[arg-type]
                               limits=_limits(timeout), source_url=source_url, store_failures=(StoreError,))

    async def process(item: MediaItem) -> dict:
        if failure is None:
            await asyncio.sleep(10)
        raise failure

    processor._process = process  # type: ignore[method-assign]
    processor.submit(item.id)
    await processor.wait_idle()
    saved = media.items[item.id]
    assert saved.status == FAILED
    return saved.reason


@pytest.mark.parametrize("failure,expected", [
    (ImageRejected("cannot identify image file <_io.BytesIO object at 0x7f>"), CANNOT_PROCESS),
    (ImageRejected("the image could not be read", "cannot identify <_io.BytesIO object at 0x7f>"), "the image could not be read"),
    (VideoRejected(UNREADABLE, "ffprobe failed: <url>"), UNREADABLE),
    (VideoRejected("ffprobe failed: http://127.0.0.1/media/x?signature=SECRET"), CANNOT_PROCESS),
    (StoreError("GET https://bucket.s3.amazonaws.com/media/x.png?X-Amz-Signature=SECRET failed"), CANNOT_READ_STORED),
    (KeyError("<object object at 0x7f>"), CANNOT_PROCESS),
    (None, "processing took too long (more than 0 seconds)"),
])
async def test_a_failed_job_tells_its_owner_plain_words_and_logs_the_detail(failure, expected, caplog):
    caplog.set_level(logging.INFO, logger="mediaserver.processing")
    reason = await _failed_reason(failure, timeout=0.2 if failure is None else 5)
    assert reason == expected
    assert_plain(reason)
    records = [record for record in caplog.records if record.getMessage() == "media processed"]
    assert records and records[-1].reason == reason
    if failure is not None:
        assert records[-1].detail, "the detail is logged"
