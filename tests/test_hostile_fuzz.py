"""Property-based fuzzing of every route's request line and headers against a real gateway process.

For any method (served or made up), any route of `gateway.app.routes()` with any path parameter,
any query string (non-ASCII, percent-encoded control characters, huge numbers) and any header
values HTTP allows (non-ASCII bytes, tabs inside, numbers of thousands of digits): the gateway
never answers 5xx, every 4xx carries the JSON error body, and it keeps serving.

Requests are written byte by byte over TCP (tests/raw_http.py): requests and http.client refuse
some of these. Bounded and derandomized, so the run is the same on every machine.
"""

from __future__ import annotations

import io
import re
import uuid
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
import tornado.web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from gateway.app import routes
from gateway.metrics import RouteNamer
from tests.conftest import make_token
from tests.raw_http import request_bytes, send

MAX_EXAMPLES = 500

SERVED = ["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"]


def _methods_of(handler: type) -> list[str]:
    """The methods a handler class implements itself (OPTIONS: every route, for CORS)."""
    return [method for method in SERVED
            if getattr(handler, method.lower(), None) is not getattr(tornado.web.RequestHandler, method.lower())]


ROUTES = routes()
TEMPLATES = RouteNamer([rule[0] for rule in ROUTES]).templates
METHODS_OF = {template: _methods_of(rule[1]) or SERVED for template, rule in zip(TEMPLATES, ROUTES)}

HEADER_NAMES = [
    "Authorization", "Range", "Content-Type", "Tus-Resumable", "Upload-Offset", "Upload-Length",
    "Upload-Defer-Length", "Upload-Metadata", "Upload-Concat", "Upload-Checksum", "X-HTTP-Method-Override",
    "X-Request-Id", "Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers",
    "X-Forwarded-For", "X-Forwarded-Proto", "If-None-Match", "If-Modified-Since", "Accept", "Accept-Encoding",
    "Cookie", "Trailer", "Expect", "Referer", "User-Agent", "Last-Event-ID",
]
QUERY_NAMES = ["page", "limit", "type", "all", "expires", "signature", "access_token", "v", "id", "x"]


@pytest.fixture(scope="module")
def target(start_gateway) -> dict:
    """A gateway on the local store with one media item (and its signed URL) and one unfinished upload."""
    gateway = start_gateway("local")
    user = "fuzz-" + uuid.uuid4().hex[:8]
    token = make_token(user)
    out = io.BytesIO()
    Image.new("RGB", (32, 32), "white").save(out, "PNG")
    item = requests.post(gateway.url + "/api/media/upload", files={"file": ("f.png", out.getvalue())},
                         headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert item.status_code == 201, item.text
    signed = urlsplit(item.json()["url"])
    query = parse_qs(signed.query)
    upload = requests.post(gateway.files_url, timeout=30, headers={
        "Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0", "Upload-Length": "100"})
    assert upload.status_code == 201, upload.text
    return {
        "gateway": gateway, "port": int(gateway.env["PORT"]), "user": user,
        "ids": [item.json()["id"], upload.headers["Location"].rsplit("/", 1)[1]],
        "expires": query["expires"][0], "signature": query["signature"][0],
    }


# -- strategies ------------------------------------------------------------------------------

TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

digits = st.integers(1, 6000).map(lambda n: "9" * n) | st.integers(0, 2**70).map(str) | st.sampled_from(
    ["0", "-1", "1e999", "NaN", "0x10", "١٢٣", "１２", "+5", " 7", "00000000000000000000001"])
any_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
ranges = st.builds(lambda a, b: f"bytes={a}-{b}", st.one_of(st.just(""), digits), st.one_of(st.just(""), digits)) | \
    st.sampled_from(["bytes=0-0,5-9", "bytes=--1", "items=0-1", "bytes=", "BYTES=0-1"])


def header_value(text: str) -> bytes:
    """`text` as UTF-8, made a valid field value: no control bytes but tab, no leading/trailing blanks."""
    raw = text.encode("utf-8")
    raw = bytes(byte for byte in raw if byte >= 0x20 and byte != 0x7F or byte == 0x09)
    return raw.strip(b" \t")


header_texts = st.one_of(
    any_text, digits, ranges, st.sampled_from(["Bearer ", "Bearer é", "1.0.0", "application/json", "*", "\t", ""]),
    st.builds(lambda a, b: f"{a}\t{b}", any_text, any_text),
    st.text(st.characters(min_codepoint=0x80, max_codepoint=0x10FFFF, exclude_categories=("Cs",)), min_size=1, max_size=20),
)
NUMERIC_HEADERS = {"Upload-Offset", "Upload-Length", "Upload-Defer-Length"}


def values_for(name: str) -> st.SearchStrategy[bytes]:
    """Values of header `name`: any text, weighted towards what the gateway parses in it."""
    if name == "Range":
        texts = ranges | header_texts
    elif name in NUMERIC_HEADERS:
        texts = digits | header_texts
    else:
        texts = header_texts
    return texts.map(header_value)


header = st.sampled_from(HEADER_NAMES).flatmap(lambda name: st.tuples(st.just(name), values_for(name)))
headers = st.lists(header, max_size=8)


def query_value(text: str, raw: bool) -> str:
    """Percent-encoded, or as raw UTF-8 where the request target allows (no controls, spaces, '&', '#')."""
    if not raw:
        return quote(text, safe="")
    return "".join(ch if ch.isprintable() and ch not in " &#%+" and not ch.isspace() else quote(ch, safe="") for ch in text)


query_pairs = st.lists(st.tuples(st.sampled_from(QUERY_NAMES) | any_text, st.one_of(any_text, digits), st.booleans()),
                       max_size=4)
made_up_methods = st.text(TCHAR, min_size=1, max_size=12) | st.integers(1, 20_000).map(lambda n: "Q" * n)


def methods_for(template: str) -> st.SearchStrategy[str]:
    """Mostly methods the route serves (so its handler runs), sometimes any or a made-up one."""
    served = METHODS_OF.get(template, SERVED)
    return st.sampled_from(["route"] * 7 + ["any", "any", "made up"]).flatmap(
        lambda kind: st.sampled_from(served) if kind == "route" else
        st.sampled_from(SERVED) if kind == "any" else made_up_methods)


SIGNED = "signed download"  # the real media item's signed URL: its handler reads Range and the signature
SCENARIOS = TEMPLATES + ["/nowhere/{id}", "/api/{id}"] + [SIGNED] * 6 + ["/files/{id}"] * 3 + ["/api/media"] * 2


@st.composite
def requests_(draw, target: dict) -> tuple[str, str, list[tuple[str, bytes]]]:
    """(method, request target, headers) of one request."""
    scenario = draw(st.sampled_from(SCENARIOS))
    ids = target["ids"]
    pairs = draw(query_pairs)
    query = [f"{quote(name, safe='')}={query_value(value, raw)}" for name, value, raw in pairs]
    header_list = draw(headers)

    if scenario == SIGNED:
        template = "/media/{id}/{kind}"
        path = f"/media/{ids[0]}/original"
        signature, expires = target["signature"], target["expires"]
        mode = draw(st.sampled_from(["valid"] * 6 + ["bad signature"] * 3 + ["bad expires"]))
        if mode == "bad signature":
            signature = draw(st.sampled_from([signature + "é", "é" * 43, signature[:-1] + "\u0430"]) | any_text | digits)
        elif mode == "bad expires":
            expires = draw(any_text | digits)
        query += [f"expires={query_value(expires, False)}", f"signature={query_value(signature, draw(st.booleans()))}"]
        header_list.append(("Range", draw(ranges.map(header_value))))
    else:
        template = scenario

        def parameter(match: re.Match[str]) -> str:
            fuzzed = draw(st.sampled_from([False] * 7 + [True] * 3))  # mostly values the route matches
            if match.group(0) == "{kind}":
                value = draw(any_text if fuzzed else st.sampled_from(["original", "thumbnail"]))
            else:
                value = draw((any_text | digits) if fuzzed else (st.sampled_from(ids) | st.just(uuid.uuid4().hex)))
            return quote(value, safe="") or "x"

        path = re.sub(r"\{\w+\}", parameter, template)

    auth = draw(st.sampled_from(["token", "token", "token", "fuzzed or none"]))
    if auth == "token":
        header_list.append(("Authorization", f"Bearer {make_token(target['user'])}".encode()))
    if draw(st.booleans()):
        header_list.append(("Tus-Resumable", b"1.0.0"))
    return draw(methods_for(template)), path + ("?" + "&".join(query) if query else ""), header_list


# -- the property ----------------------------------------------------------------------------


def test_no_request_line_or_header_gets_a_5xx(target):
    seen: dict[int, int] = {}

    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(st.data())
    def check(data):
        method, target_text, header_list = data.draw(requests_(target))
        answer = send(target["port"], request_bytes(method, target_text, header_list))
        seen[answer.status] = seen.get(answer.status, 0) + 1
        assert answer.status < 500, (method[:40], target_text[:300], header_list, answer)
        as_head = method == "HEAD" or any(name == "X-HTTP-Method-Override" and value.strip().upper() == b"HEAD"
                                          for name, value in header_list)
        page = target_text.startswith("/static/") or target_text.split("?")[0] in ("/", "/upload")
        if answer.status >= 400 and not as_head and not page:  # the page and its assets answer plain text
            answer.error()
        if method not in SERVED:
            assert answer.status == 405, (method[:40], answer)

    check()
    assert requests.get(target["gateway"].url + "/health", timeout=10).status_code == 200
    # the fuzzing reached the handlers: answers of every kind (ranged downloads are checked one by
    # one in test_bounded_answers.py; whether the fuzz draws one depends on the ports and ids)
    assert any(status < 300 for status in seen) and any(400 <= status < 500 for status in seen), seen
