"""Progress from any instance: a user's `/api/events` stream on one gateway shows the uploads and
media of that user handled by another gateway on the same MongoDB and S3 (read from MongoDB, not
from the memory of the instance that received the bytes), resumes with `Last-Event-ID`, and the
number of open streams is capped per user and per process.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from typing import Any, Callable, Iterator

import pytest
import requests
from PIL import Image

from bench.two_instances import RoundRobinProxy
from tests.conftest import make_token
from tests.support import GatewayProcess, auth, create_upload, patch, random_bytes
from tests.test_js_clients import access_log

MiB = 1024 * 1024
FAST_EVENTS = {"PART_SIZE": "5MiB", "EVENTS_POLL_SECONDS": "0.2", "EVENTS_CLOCK_SKEW": "0.5",
               "EVENTS_KEEPALIVE_SECONDS": "1"}  # a closed stream is noticed at its next write


@pytest.fixture(scope="module")
def pair(start_gateway) -> tuple[GatewayProcess, GatewayProcess]:
    """Two instances on one MongoDB database and one S3 bucket."""
    first = start_gateway("s3", **FAST_EVENTS)
    second = start_gateway("s3", share=first, **FAST_EVENTS)
    return first, second


class EventStream:
    """An `/api/events` stream read in a thread: every (id, event, data) it sent, in order."""

    def __init__(self, url: str, token: str, last_event_id: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.response = requests.get(url + "/api/events", headers=headers, stream=True, timeout=(10, 60))
        assert self.response.status_code == 200, self.response.text
        self.events: list[tuple[str | None, str, dict[str, Any]]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        event_id, name, data = None, None, []
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line.startswith("id:"):
                    event_id = line[3:].strip()
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and name is not None:
                    with self._changed:
                        self.events.append((event_id, name, json.loads("\n".join(data))))
                        self._changed.notify_all()
                    event_id, name, data = None, None, []
        except (requests.RequestException, AttributeError, ValueError):
            pass  # closed by the test

    def wait_for(self, predicate: Callable[[list], bool], timeout: float = 30) -> list:
        """The events once `predicate(events)` holds; fails with what came after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.events):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"not seen within {timeout} s; events: {self.events}")
                self._changed.wait(left)
            return list(self.events)

    def of(self, upload_id: str, name: str | None = None) -> list[dict[str, Any]]:
        with self._changed:
            return [data for _, event, data in self.events
                    if data.get("id") == upload_id and (name is None or event == name)]

    def close(self) -> None:
        self.response.close()


@pytest.fixture
def streams() -> Iterator[Callable[..., EventStream]]:
    opened: list[EventStream] = []

    def open_stream(url: str, token: str, last_event_id: str | None = None) -> EventStream:
        stream = EventStream(url, token, last_event_id)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


def metadata(name: str) -> str:
    return "filename " + base64.b64encode(name.encode()).decode()


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (20, 120, 200)).save(out, "JPEG")
    return out.getvalue()


def tus_upload(gateway: GatewayProcess, token: str, data: bytes, name: str) -> str:
    """One upload through `gateway`, in a single PATCH; its id."""
    url = create_upload(gateway, token, len(data), **{"Upload-Metadata": metadata(name)})
    assert patch(url, token, 0, data).status_code == 204
    return url.rstrip("/").rsplit("/", 1)[1]


def patches_to(gateway: GatewayProcess, upload_id: str) -> int:
    return sum(1 for e in access_log(gateway) if e.get("method") == "PATCH" and upload_id in e.get("path", ""))


def test_stream_on_one_instance_shows_progress_and_completion_of_patches_to_another(pair, streams):
    first, second = pair
    token = make_token("live-" + str(time.monotonic_ns())[-9:])
    stream = streams(first.url, token)
    data = random_bytes(12 * MiB, seed=7)
    url = create_upload(second, token, len(data), **{"Upload-Metadata": metadata("movie.bin")})
    upload_id = url.rstrip("/").rsplit("/", 1)[1]

    offsets_seen = []
    for start in range(0, len(data), 5 * MiB):
        chunk = data[start:start + 5 * MiB]
        assert patch(url, token, start, chunk).status_code == 204
        end = start + len(chunk)
        stream.wait_for(lambda events, end=end: any(
            e == "upload.progress" and d["id"] == upload_id and d["offset"] == end for _, e, d in events))
        offsets_seen.append(end)
    stream.wait_for(lambda events: any(e == "upload.completed" and d["id"] == upload_id for _, e, d in events))
    status = stream.wait_for(lambda events: any(
        e == "media.status" and d["id"] == upload_id and d["status"] == "ready" for _, e, d in events))

    progress = [d["offset"] for d in stream.of(upload_id, "upload.progress")]
    assert progress == sorted(set(progress)), "offsets only increase, each sent once"
    assert set(offsets_seen) <= set(progress) and progress[-1] == len(data)
    [completed] = stream.of(upload_id, "upload.completed")
    assert completed["length"] == len(data) and completed["filename"] == "movie.bin"
    statuses = [d["status"] for d in stream.of(upload_id, "media.status")]
    assert statuses[-1] == "ready" and statuses.count("ready") == 1
    assert all(event_id for event_id, _, _ in status), "every event has an id to resume from"
    # every byte went through the other instance: the stream's instance saw none of them
    assert patches_to(second, upload_id) == 3 and patches_to(first, upload_id) == 0


def test_media_failure_reaches_a_stream_on_another_instance(pair, streams):
    first, second = pair
    token = make_token("fail-" + str(time.monotonic_ns())[-9:])
    stream = streams(first.url, token)
    broken = b"\xff\xd8\xff\xe0" + random_bytes(40_000, seed=3)  # a JPEG's signature, then noise
    good = tus_upload(second, token, jpeg(), "fine.jpg")
    bad = tus_upload(second, token, broken, "broken.jpg")
    events = stream.wait_for(lambda events: {(d.get("id"), d.get("status")) for e, d in
                                             ((e, d) for _, e, d in events) if e == "media.status"}
                             >= {(good, "ready"), (bad, "failed")})
    [failed] = [d for _, e, d in events if e == "media.status" and d["id"] == bad and d["status"] == "failed"]
    assert failed["reason"], failed
    assert failed["filename"] == "broken.jpg" and failed["type"] == "images"


def test_stream_resumes_from_last_event_id(pair, streams):
    first, second = pair
    token = make_token("resume-" + str(time.monotonic_ns())[-9:])
    stream = streams(first.url, token)
    data = random_bytes(11 * MiB, seed=9)
    url = create_upload(second, token, len(data), **{"Upload-Metadata": metadata("resumed.bin")})
    upload_id = url.rstrip("/").rsplit("/", 1)[1]
    assert patch(url, token, 0, data[:5 * MiB]).status_code == 204
    events = stream.wait_for(lambda events: any(d.get("offset") == 5 * MiB for _, _, d in events))
    last_id = [i for i, e, d in events if e == "upload.progress" and d["id"] == upload_id][-1]
    stream.close()

    # while nobody listens: the upload goes on through the other instance
    assert patch(url, token, 5 * MiB, data[5 * MiB:]).status_code == 204
    time.sleep(1.0)  # past EVENTS_CLOCK_SKEW: a new stream without Last-Event-ID starts after these changes

    resumed = streams(first.url, token, last_event_id=last_id)
    resumed.wait_for(lambda events: any(e == "upload.completed" and d["id"] == upload_id for _, e, d in events))
    assert resumed.of(upload_id, "upload.progress")[-1]["offset"] == len(data)

    fresh = streams(first.url, token)
    marker = tus_upload(second, token, b"x" * 100, "marker.txt")  # a later change, to know the fresh stream has read
    fresh.wait_for(lambda events: any(d.get("id") == marker for _, _, d in events))
    assert fresh.of(upload_id) == [], "without Last-Event-ID a stream starts at the present"


def test_local_changes_are_pushed_and_sent_once(pair, streams):
    first, _ = pair
    token = make_token("local-" + str(time.monotonic_ns())[-9:])
    stream = streams(first.url, token)
    upload_id = tus_upload(first, token, jpeg(), "here.jpg")
    stream.wait_for(lambda events: any(e == "media.status" and d["id"] == upload_id and d["status"] == "ready"
                                       for _, e, d in events))
    time.sleep(1.0)  # several polls (0.2 s) that read the same documents again
    for name in ("upload.progress", "upload.completed"):
        assert len(stream.of(upload_id, name)) == 1, (name, stream.events)


def test_deleted_media_is_announced(pair, streams):
    first, second = pair
    token = make_token("del-" + str(time.monotonic_ns())[-9:])
    stream = streams(first.url, token)
    media_id = tus_upload(second, token, b"plain text " * 10, "note.txt")
    stream.wait_for(lambda events: any(e == "media.status" and d["id"] == media_id for _, e, d in events))
    assert requests.delete(f"{second.url}/api/media/{media_id}", headers=auth(token), timeout=30).status_code == 204
    stream.wait_for(lambda events: any(e == "media.deleted" and d["id"] == media_id for _, e, d in events))


def test_streams_through_the_round_robin_proxy_see_every_instances_patches(pair, streams):
    first, second = pair
    token = make_token("rr-" + str(time.monotonic_ns())[-9:])
    with RoundRobinProxy([first.url, second.url]) as proxy:
        stream = streams(proxy.url, token)
        data = random_bytes(16 * MiB, seed=11)
        response = requests.post(proxy.url + "/files/", timeout=30, headers=auth(
            token, **{"Upload-Length": str(len(data)), "Upload-Metadata": metadata("balanced.bin")}))
        assert response.status_code == 201, response.text
        upload_id = response.headers["Location"].rstrip("/").rsplit("/", 1)[1]
        url = proxy.url + "/files/" + upload_id
        for start in range(0, len(data), 4 * MiB):
            assert patch(url, token, start, data[start:start + 4 * MiB]).status_code == 204
        stream.wait_for(lambda events: any(e == "upload.completed" and d["id"] == upload_id for _, e, d in events))
    progress = [d["offset"] for d in stream.of(upload_id, "upload.progress")]
    assert progress == sorted(set(progress)) and progress[-1] == len(data)
    assert patches_to(first, upload_id) >= 1 and patches_to(second, upload_id) >= 1, "the PATCHes were shared"


def test_open_streams_are_capped_per_user_and_per_process(start_gateway, streams):
    gateway = start_gateway("local", EVENTS_MAX_STREAMS="3", EVENTS_MAX_STREAMS_PER_USER="2", EVENTS_KEEPALIVE_SECONDS="1")
    alice, bob = make_token("cap-a-" + str(time.monotonic_ns())[-6:]), make_token("cap-b-" + str(time.monotonic_ns())[-6:])
    first = streams(gateway.url, alice)
    streams(gateway.url, alice)
    refused = requests.get(gateway.url + "/api/events", headers={"Authorization": f"Bearer {alice}"}, timeout=10)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_streams"
    assert refused.headers["Retry-After"]
    streams(gateway.url, bob)
    full = requests.get(gateway.url + "/api/events", headers={"Authorization": f"Bearer {bob}"}, timeout=10)
    assert full.status_code == 503 and full.json()["error"]["code"] == "too_many_streams"
    first.close()  # the server notices the closed connection and frees its place
    deadline = time.monotonic() + 15
    while True:
        again = requests.get(gateway.url + "/api/events", headers={"Authorization": f"Bearer {alice}"},
                             stream=True, timeout=10)
        again.close()
        if again.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert again.status_code == 200


# -- the pure parts, without servers ------------------------------------------------------

def test_sent_versions_send_each_new_state_once_and_stay_bounded():
    from gateway.events import Change, SentVersions

    def change(version: int, offset: int, doc: str = "u1") -> Change:
        return Change("upload.progress", doc, version, float(version), "upload.progress",
                      {"id": doc, "offset": offset, "version": version})

    sent = SentVersions(size=2)
    assert sent.is_new(change(1, 0))
    assert not sent.is_new(change(1, 0)), "the same version twice"
    assert sent.is_new(change(3, 5))
    assert not sent.is_new(change(2, 3)), "an older version after a newer one"
    assert not sent.is_new(change(4, 5)), "a new version that changes nothing the client sees"
    assert sent.is_new(change(5, 9))
    assert sent.is_new(change(1, 0, "u2")) and sent.is_new(change(1, 0, "u3"))
    assert sent.is_new(change(5, 9)), "the oldest document was forgotten: at most `size` are remembered"


def test_resume_point_takes_a_valid_last_event_id_only():
    from gateway.events import resume_point

    assert resume_point("1700000000.250000", 1800000000.0) == 1700000000.25
    for bad in (None, "", "soon", "nan", "inf", "-5", "1900000000"):
        assert resume_point(bad, 1800000000.0) == 1800000000.0, bad


def test_change_feed_reads_in_batches_up_to_a_horizon_both_collections_reached():
    import asyncio

    from gateway.events import ChangeFeed
    from metadata.media import MediaItem
    from metadata.uploads import UploadRecord

    records = [UploadRecord(id=f"u{i}", owner="o", length=10, part_size=5, created_at=0, expires_at=9e9,
                            updated_at=float(i), version=i) for i in range(1, 6)]
    items = [MediaItem(id=f"m{i}", owner="o", category="files", key="k", size=1, content_type="x",
                       filename=None, created_at=0, updated_at=i + 0.5, version=1) for i in range(1, 6)]

    class Repository:
        def __init__(self, documents):
            self.documents = documents

        async def changed_since(self, owner, since, limit):
            return [d for d in self.documents if d.updated_at >= since][:limit]

    feed = ChangeFeed(Repository(records), Repository(items), batch=3)
    changes, horizon = asyncio.run(feed.since("o", 0))
    # uploads 1..3 (a full batch, up to 3.0) and media 1.5..3.5: complete up to 3.0 only
    assert horizon == 3.0
    assert [(c.id, c.event) for c in changes] == [
        ("u1", "upload.progress"), ("m1", "media.status"), ("u2", "upload.progress"), ("m2", "media.status"),
        ("u3", "upload.progress")]
    changes, horizon = asyncio.run(feed.since("o", 4.0))
    assert horizon is None and [c.id for c in changes] == ["u4", "m4", "u5", "m5"]
