"""Issue 14, items 4, 6 and 8: what unauthenticated clients can do to metrics and error answers,
and what media owners are told when processing fails.

- Made-up request methods answer 405 with a JSON error and add no metric series: every label
  of /metrics has bounded values whatever clients send.
- Client text that used to raise inside the gateway (a non-ASCII signature, Range numbers past
  Python's 4,300-digit int() limit, JSON nested deeper than the recursion limit, huge query
  numbers, non-Latin-1 header bytes) answers 4xx with the JSON error body.
- A failed item's `reason` is plain words: no URL, signature, path or object repr; the detail
  is in the log.
- PUBLIC_URL, when set, is the only origin in Location headers and media URLs.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import string
import subprocess
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_token
from tests.raw_http import Answer, request_bytes, send
from tests.support import TUS, random_bytes

MiB = 1024 * 1024
METHODS = ("GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS")  # every other method is labelled "other"


@pytest.fixture(scope="module")
def local(start_gateway):
    """One gateway on the local store (its media URLs are gateway-signed)."""
    return start_gateway("local")


def port_of(gateway) -> int:
    return int(gateway.env["PORT"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def metrics_text(gateway) -> str:
    response = requests.get(gateway.url + "/metrics", timeout=30)
    assert response.status_code == 200
    return response.text


def upload_png(gateway, token: str, name: str = "picture.png") -> dict:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), "white").save(out, "PNG")
    response = requests.post(gateway.url + "/api/media/upload", files={"file": (name, out.getvalue())},
                             headers=bearer(token), timeout=60)
    assert response.status_code == 201, response.text
    return response.json()


def settled(gateway, token: str, media_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = requests.get(f"{gateway.url}/api/media/{media_id}", headers=bearer(token), timeout=30).json()
        if item["status"] != "processing":
            return item
        time.sleep(0.1)
    raise TimeoutError(f"{media_id} still processing")


# -- item 4: metric labels -------------------------------------------------------------------


def made_up_method(rng: random.Random, length: int) -> str:
    """An HTTP token that is no method anyone serves."""
    return "X" + "".join(rng.choice(string.ascii_uppercase + string.digits + "-_.!") for _ in range(length - 1))


PATHS = ["/health", "/api/media", "/files/", f"/files/{uuid.uuid4().hex}", "/metrics", "/no/such/route"]


def test_made_up_methods_answer_405_and_add_no_metric_series(local):
    port = port_of(local)
    rng = random.Random(14)
    for path in PATHS:  # the one "other" series of each route exists from here on
        assert send(port, request_bytes(made_up_method(rng, 8), path)).status == 405
    metrics_text(local)
    before = len(metrics_text(local))
    for number in range(300):
        path = PATHS[number % len(PATHS)] + ("" if number % 3 else f"?n={number}")
        answer = send(port, request_bytes(made_up_method(rng, rng.randint(3, 40)), path))
        assert answer.status == 405, answer
        assert answer.error()["code"] == "method_not_allowed"
        assert set(answer.headers["allow"].replace(" ", "").split(",")) == set(METHODS)
    after_short = len(metrics_text(local))
    # 30 KB method names: the request line is still under MAX_HEADER_SIZE
    for _ in range(20):
        answer = send(port, request_bytes(made_up_method(rng, 30_000), rng.choice(PATHS)))
        assert answer.status == 405 and answer.error()["code"] == "method_not_allowed"
    text = metrics_text(local)
    # only counters and bucket counts grew (a few digits each), no new series
    assert after_short - before < 2_000, (before, after_short)
    assert len(text) - after_short < 2_000, (after_short, len(text))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "method" in sample.labels:
                assert sample.labels["method"] in METHODS + ("other",), sample
            for value in sample.labels.values():
                assert len(value) <= 64, sample


def test_every_label_value_is_a_template_or_a_name(local):
    """Paths full of ids, odd methods and odd paths: routes stay templates, methods a fixed set."""
    port = port_of(local)
    token = make_token("labels-" + uuid.uuid4().hex[:6])
    for number in range(40):
        for method in ("GET", "PUT", "BREW", "HEAD", "DELETE"):
            target = f"/files/{uuid.uuid4().hex}" if number % 2 else f"/static/{uuid.uuid4().hex}/{number}"
            answer = send(port, request_bytes(method, target, [("Authorization", f"Bearer {token}"), *TUS.items()]))
            assert answer.status < 500, answer
        send(port, request_bytes("GET", f"/{uuid.uuid4().hex}/é/{number}"))
    allowed_routes = {"unmatched", "/health", "/health/detailed", "/metrics", "/api/events", "/api/openapi.json",
                      "/api/media", "/api/media/upload", "/api/media/{id}", "/media/{id}/{kind}", "/files",
                      "/files/{id}", "/", "/upload", "/static/{path}"}
    for family in text_string_to_metric_families(metrics_text(local)):
        for sample in family.samples:
            route = sample.labels.get("route")
            if route is not None:
                assert route in allowed_routes or route.startswith("/api/auth/"), sample
            assert sample.labels.get("method", "GET") in METHODS + ("other",), sample


# -- item 6: client text that used to raise ---------------------------------------------------


@pytest.fixture(scope="module")
def signed(local) -> dict:
    """A media item on the local store and its gateway-signed URL's parts."""
    token = make_token("signed-" + uuid.uuid4().hex[:6])
    item = upload_png(local, token)
    url = urlsplit(item["url"])
    query = parse_qs(url.query)
    return {"path": url.path, "expires": query["expires"][0], "signature": query["signature"][0],
            "id": item["id"], "token": token, "size": item["size"]}


@pytest.mark.parametrize("signature", ["%C3%A9", "é", "%E2%82%AC" * 20, "%00%01", "a" * 5000, "%FF"])
def test_non_ascii_signatures_are_403_not_500(local, signed, signature):
    target = f"{signed['path']}?expires={signed['expires']}&signature={signature}"
    answer = send(port_of(local), request_bytes("GET", target))
    assert answer.status in (400, 403), answer
    answer.error()


@pytest.mark.parametrize("expires", ["9" * 5000, "1" * 17, "-1", "%C3%A9", "１２３", "1e9", ""])
def test_odd_expires_are_403_not_500(local, signed, expires):
    target = f"{signed['path']}?expires={expires}&signature={signed['signature']}"
    answer = send(port_of(local), request_bytes("GET", target))
    assert answer.status == 403, answer
    assert answer.error()["code"] == "invalid_signature"


def test_the_signed_url_itself_still_works(local, signed):
    target = f"{signed['path']}?expires={signed['expires']}&signature={signed['signature']}"
    answer = send(port_of(local), request_bytes("GET", target, [("Range", "bytes=0-3")]), read_body=True)
    assert answer.status == 206 and answer.body == b"\x89PNG"


HUGE = "9" * 5000


@pytest.mark.parametrize("header,expected", [
    (f"bytes={HUGE}-", 416),
    (f"bytes={HUGE}-{HUGE}", 416),
    (f"bytes=0-{HUGE}", 206),
    (f"bytes=-{HUGE}", 206),
    ("bytes=" + "0" * 5000 + "1-" + "0" * 5000 + "3", 206),
    ("bytes=é-", 200),
    ("bytes=¹-²", 200),
])
def test_range_numbers_of_any_length(local, signed, header, expected):
    signed_target = f"{signed['path']}?expires={signed['expires']}&signature={signed['signature']}"
    for target, headers in ((signed_target, []), (f"/files/{signed['id']}", [("Authorization", f"Bearer {signed['token']}")])):
        answer = send(port_of(local), request_bytes("GET", target, [("Range", header), *headers]))
        assert answer.status == expected, (target, answer)
        if expected == 416:
            assert answer.error()["code"] == "range_not_satisfiable"
            assert answer.headers["content-range"] == f"bytes */{signed['size']}"
        if expected == 206 and header.endswith("3"):
            assert answer.headers["content-range"] == f"bytes 1-3/{signed['size']}"


@pytest.mark.parametrize("body", [
    "[" * 5000 + "]" * 5000,
    '{"username":' * 5000 + '"x"' + "}" * 5000,
    '{"username": "a", "password": ' + "[" * 3000 + "]" * 3000 + "}",
    '{"username": "a", "password": ' + "9" * 5000 + "}",  # past int()'s digit limit
])
@pytest.mark.parametrize("route", ["/api/auth/login", "/api/auth/register"])
def test_deeply_nested_json_and_huge_numbers_are_400(local, route, body):
    answer = send(port_of(local), request_bytes("POST", route, [("Content-Type", "application/json")], body.encode()))
    assert 400 <= answer.status < 500, answer
    answer.error()


@pytest.mark.parametrize("query", [
    f"page={HUGE}", f"limit={HUGE}", "page=-1", "limit=0", "page=1e3", "page=%C3%A9", "limit=%00",
    "page=" + "0" * 5000 + "1", "type=%FF", "type=" + "é" * 100,
])
def test_huge_and_odd_query_numbers_are_400(local, query):
    token = make_token("query-" + uuid.uuid4().hex[:6])
    answer = send(port_of(local), request_bytes("GET", f"/api/media?{query}", [("Authorization", f"Bearer {token}")]))
    assert answer.status == 400, answer
    answer.error()


@pytest.mark.parametrize("name,value", [
    ("Authorization", "Bearer é".encode()),
    ("Authorization", b"Bearer \xff\xfe"),
    ("Authorization", "Bearer " + "x" * 10_000),
    ("Range", "bytes=0-€".encode()),
    ("X-Request-Id", "é".encode()),
    ("Origin", "https://é.example".encode()),
    ("Content-Type", "application/json; charset=é".encode()),
    ("Tus-Resumable", "1.0.0\té".encode()),
    ("Upload-Length", HUGE.encode()),
    ("Upload-Offset", HUGE.encode()),
    ("Upload-Metadata", "filename ".encode() + "é".encode()),
    ("If-Modified-Since", "é".encode()),
    ("If-None-Match", b"\xff"),
])
def test_non_latin1_and_huge_header_values_are_never_500(local, signed, name, value):
    port = port_of(local)
    token = signed["token"]
    targets = [("GET", "/api/media"), ("GET", "/api/auth/verify"), ("POST", "/files/"), ("HEAD", f"/files/{signed['id']}"),
               ("PATCH", f"/files/{signed['id']}"), ("GET", f"{signed['path']}?expires={signed['expires']}&signature={signed['signature']}"),
               ("GET", "/static/app.js"), ("OPTIONS", "/files/")]
    for method, target in targets:
        headers = [(name, value)]
        if name != "Authorization":
            headers.append(("Authorization", f"Bearer {token}"))
        if name != "Tus-Resumable":
            headers.append(("Tus-Resumable", "1.0.0"))
        answer = send(port, request_bytes(method, target, headers))
        assert answer.status < 500, (method, target, answer)
        if answer.status >= 400 and method != "HEAD":
            answer.error()


# -- item 8: failure reasons and PUBLIC_URL ---------------------------------------------------


def assert_plain(reason: str) -> None:
    assert reason and isinstance(reason, str)
    lowered = reason.lower()
    for word in ("http", "signature", "<", ">", "object at", "0x", "/", "\\", "error", "ffprobe", "ffmpeg", "pil"):
        assert word not in lowered, (word, reason)


def processed_records(gateway) -> list[dict]:
    records = []
    for line in gateway.log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("message") == "media processed":
            records.append(record)
    return records


def test_failure_reasons_are_plain_words(local, tmp_path):
    token = make_token("reasons-" + uuid.uuid4().hex[:6])
    bomb = io.BytesIO()
    Image.new("1", (30000, 30000)).save(bomb, "PNG")
    files = {
        "corrupt.jpg": b"\xff\xd8\xff\xe0" + random_bytes(50_000, seed=60),
        "broken.png": b"\x89PNG\r\n\x1a\n" + random_bytes(5_000, seed=61),
        "bomb.png": bomb.getvalue(),
    }
    if shutil.which("ffmpeg"):
        files["fake.mp4"] = b"\x00\x00\x00\x18ftypisom" + random_bytes(100_000, seed=62)
        video = tmp_path / "whole.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=duration=2:size=160x120:rate=10",
                        "-c:v", "libx264", "-pix_fmt", "yuv420p", str(video)], check=True, timeout=120)
        whole = video.read_bytes()
        files["truncated.mp4"] = whole[: len(whole) // 3]
    ids = {}
    for name, data in files.items():
        response = requests.post(local.url + "/api/media/upload", files={"file": (name, data)}, headers=bearer(token), timeout=60)
        assert response.status_code == 201, response.text
        ids[name] = response.json()["id"]
    for name, media_id in ids.items():
        item = settled(local, token, media_id)
        assert item["status"] == "failed", (name, item)
        assert_plain(item["reason"])
        listed = requests.get(local.url + "/api/media?limit=100", headers=bearer(token), timeout=30).json()["items"]
        assert [entry["reason"] for entry in listed if entry["id"] == media_id] == [item["reason"]]
    assert "pixels" in settled(local, token, ids["bomb.png"])["reason"]
    # the detail stays in the log, without the signed URL the tools were given
    details = {record.get("media_id"): record.get("detail", "") for record in processed_records(local)}
    for name, media_id in ids.items():
        assert details.get(media_id), (name, "no detail in the log")
        assert "signature=" not in details[media_id], details[media_id]


def test_public_url_is_the_only_origin(start_gateway):
    public = "https://media.example.test/gw"
    gateway = start_gateway("local", PUBLIC_URL=public + "/", TRUSTED_PROXY_HOPS="1")
    token = make_token("origin-" + uuid.uuid4().hex[:6])
    spoof = [("Host", "evil.example:666"), ("X-Forwarded-Host", "evil.example"),
             ("X-Forwarded-Proto", "http"), ("Forwarded", "host=evil.example;proto=http"),
             ("X-Forwarded-For", "203.0.113.9")]

    def raw(method: str, target: str, headers: list, body: bytes = b"") -> Answer:
        data = request_bytes(method, target, [("Authorization", f"Bearer {token}"), *headers], body)
        data = data.replace(b"Host: 127.0.0.1\r\n", b"", 1)  # the spoofed Host is the only one
        return send(port_of(gateway), data, read_body=True)

    created = raw("POST", "/files/", [*spoof, ("Tus-Resumable", "1.0.0"), ("Upload-Length", "5")])
    assert created.status == 201, created
    assert created.headers["location"].startswith(public + "/files/"), created.headers

    out = io.BytesIO()
    Image.new("RGB", (64, 48), "white").save(out, "PNG")
    boundary = "b0undary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"o.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + out.getvalue() + f"\r\n--{boundary}--\r\n".encode()
    uploaded = raw("POST", "/api/media/upload", [*spoof, ("Content-Type", f"multipart/form-data; boundary={boundary}")], form)
    assert uploaded.status == 201, uploaded
    media_id = uploaded.json()["id"]
    settled(gateway, token, media_id)
    for answer in (uploaded, raw("GET", f"/api/media/{media_id}", spoof), raw("GET", "/api/media", spoof)):
        assert answer.status in (200, 201), answer
        text = answer.body.decode()
        urls = [value for value in _strings(answer.json()) if "://" in value]
        assert urls, text
        for url in urls:
            assert url.startswith(public + "/"), url
        assert "evil.example" not in text and "127.0.0.1" not in text


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []
