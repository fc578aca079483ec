"""Hostile requests: each gets the right 4xx (or a closed connection) and changes nothing stored.

Status codes follow tus 1.0 (https://tus.io/protocols/resumable-upload): 412 for an
unsupported Tus-Resumable, 415 for a PATCH that is not application/offset+octet-stream,
409 for a mismatched Upload-Offset "without modifying the upload resource", 413 past
Tus-Max-Size or the upload's length, 404 for an unknown (or someone else's) upload
without an Upload-Offset header. After every rejected request the victim upload's
offset and bytes are checked.
"""

from __future__ import annotations

import base64
import json
import socket
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
import requests

from tests.conftest import JWT_SECRET, make_token
from tests.raw_http import Answer as RawAnswer
from tests.support import TUS, auth, create_upload, download, head, patch, random_bytes, wait_for_offset

MiB = 1024 * 1024
OCTETS = "application/offset+octet-stream"
MAX_JSON_BODY = 64 * 1024  # the gateway's default MAX_JSON_BODY


# -- helpers --------------------------------------------------------------------------------


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def raw_request(gateway, data: bytes, *, timeout: float = 15, head_only: bool = False) -> RawAnswer | None:
    """Send `data` as is on a new connection and read one response; None when the server
    closed or reset the connection without answering."""
    sock = socket.create_connection(("127.0.0.1", int(gateway.env["PORT"])), timeout=timeout)
    try:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server may stop reading and answer (or close) while we send
        received = b""
        try:
            while b"\r\n\r\n" not in received:
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                received += chunk
            head_bytes, _, body = received.partition(b"\r\n\r\n")
            lines = head_bytes.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = 0 if head_only else int(headers.get("content-length", "0"))
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
            return RawAnswer(status, headers, body)
        except ConnectionResetError:
            return None
    finally:
        sock.close()


def request_head(method: str, path: str, token: str | None = None, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def path_of(url: str) -> str:
    return url[url.index("/files/"):]


def assert_json_error(response, status: int | tuple[int, ...], code: str | None = None) -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message"} and isinstance(error["message"], str)
    if code is not None:
        assert error["code"] == code, error
    return error


def assert_tus_error(response, status: int | tuple[int, ...], code: str | None = None) -> dict:
    error = assert_json_error(response, status, code)
    assert response.headers.get("Tus-Resumable") == "1.0.0", "tus answers carry Tus-Resumable, errors too"
    return error


def offset_of(url: str, token: str) -> int:
    response = head(url, token)
    assert response.status_code == 200, response.status_code
    return int(response.headers["Upload-Offset"])


def alive(gateway) -> None:
    assert requests.get(gateway.url + "/health", timeout=10).status_code == 200


@dataclass
class Victim:
    """An upload of 10 bytes with 3 written, and a finished one: what hostile requests must not change."""

    url: str
    done_url: str
    token: str
    done_data: bytes

    def unchanged(self) -> None:
        assert offset_of(self.url, self.token) == 3, "a rejected request moved the offset"
        assert offset_of(self.done_url, self.token) == len(self.done_data)
        assert download(self.done_url, self.token) == self.done_data


@pytest.fixture
def victim(gateway, token) -> Victim:
    url = create_upload(gateway, token, 10)
    assert patch(url, token, 0, b"abc").status_code == 204
    data = random_bytes(100 * 1024 + 5, seed=77)
    done = create_upload(gateway, token, len(data))
    assert patch(done, token, 0, data).status_code == 204
    return Victim(url, done, token, data)


def tus_patch(url: str, token: str, offset: str, data: bytes = b"de", **headers: str) -> requests.Response:
    return requests.patch(url, data=data, timeout=30, headers=auth(token, **{
        "Upload-Offset": offset, "Content-Type": OCTETS, **headers}))


# -- oversize bodies --------------------------------------------------------------------------


def test_json_bodies_over_max_json_body_are_413_json(gateway):
    login = gateway.url + "/api/auth/login"
    body = json.dumps({"username": "x" * (MAX_JSON_BODY + 10), "password": "y"})
    assert_json_error(requests.post(login, data=body, headers={"Content-Type": "application/json"}, timeout=30),
                      413, "body_too_large")
    register = gateway.url + "/api/auth/register"
    assert_json_error(requests.post(register, data=body, headers={"Content-Type": "application/json"}, timeout=30),
                      413, "body_too_large")

    def chunks():  # no Content-Length: the limit must hold for chunked bodies too
        yield b'{"username": "'
        for _ in range(20):
            yield b"x" * 8192
        yield b'", "password": "y"}'

    assert_json_error(requests.post(login, data=chunks(), headers={"Content-Type": "application/json"}, timeout=30),
                      413, "body_too_large")
    # a declared body far over the limit is refused before it is sent
    answer = raw_request(gateway, request_head("POST", "/api/auth/login", **{
        "Content-Type": "application/json", "Content-Length": str(20 * MiB)}))
    assert answer is not None and answer.status == 413
    assert answer.json()["error"]["code"] == "body_too_large"
    alive(gateway)


def test_patch_body_past_upload_length_is_413(gateway, victim):
    url, token = victim.url, victim.token
    assert_tus_error(tus_patch(url, token, "3", b"0123456789"), 413, "max_size_exceeded")
    victim.unchanged()
    # declared far past the length: refused from the head, before any body byte
    answer = raw_request(gateway, request_head("PATCH", path_of(url), token, **{
        "Tus-Resumable": "1.0.0", "Content-Type": OCTETS, "Upload-Offset": "3", "Content-Length": str(2**40)}))
    assert answer is not None and answer.status == 413
    assert answer.json()["error"]["code"] == "max_size_exceeded"
    victim.unchanged()
    # creation-with-upload whose body is longer than its Upload-Length
    response = requests.post(gateway.files_url, data=b"x" * 11, timeout=30, headers=auth(token, **{
        "Upload-Length": "10", "Content-Type": OCTETS}))
    assert_tus_error(response, 413, "max_size_exceeded")
    assert "Location" not in response.headers
    # a deferred-length upload cannot take more than Tus-Max-Size
    maximum = int(requests.options(gateway.files_url, timeout=10).headers["Tus-Max-Size"])
    deferred = create_upload(gateway, token, None)
    answer = raw_request(gateway, request_head("PATCH", path_of(deferred), token, **{
        "Tus-Resumable": "1.0.0", "Content-Type": OCTETS, "Upload-Offset": "0", "Content-Length": str(maximum + 1)}))
    assert answer is not None and answer.status == 413
    assert offset_of(deferred, token) == 0
    alive(gateway)


def test_chunked_patch_past_upload_length_is_413_json(gateway, victim):
    """A PATCH body without Content-Length (chunked) that runs past Upload-Length."""
    url, token = victim.url, victim.token
    body = b"4\r\ndefg\r\n6\r\nhijklm\r\n0\r\n\r\n"  # 10 bytes at offset 3 of 10
    answer = raw_request(gateway, request_head("PATCH", path_of(url), token, **{
        "Tus-Resumable": "1.0.0", "Content-Type": OCTETS, "Upload-Offset": "3",
        "Transfer-Encoding": "chunked"}) + body)
    assert answer is not None, "closed without an answer"
    assert answer.status == 413, (answer.status, answer.body[:200])
    assert answer.json()["error"]["code"] == "max_size_exceeded"
    assert answer.headers.get("tus-resumable") == "1.0.0"
    offset = offset_of(url, token)
    assert offset in (3, 7), "at most the bytes within the length are kept"
    assert patch(url, token, offset, b"defghij"[offset - 3 :]).status_code == 204
    assert download(url, token) == b"abcdefghij"


# -- numbers --------------------------------------------------------------------------------

BAD_NUMBERS = ["-1", "+1", "1.0", "0x10", "1e3", "abc", "", "1 2", "0b1", "1_000",
               "99999999999999999999", "9223372036854775808", "18446744073709551616"]


@pytest.mark.parametrize("value", BAD_NUMBERS)
def test_bad_upload_offset_is_400(gateway, victim, value):
    response = tus_patch(victim.url, victim.token, value)
    assert_tus_error(response, 400)
    victim.unchanged()


def test_repeated_upload_offset_headers_are_refused(gateway, victim):
    data = request_head("PATCH", path_of(victim.url), victim.token, **{
        "Tus-Resumable": "1.0.0", "Content-Type": OCTETS, "Content-Length": "2"})
    data = data[:-2] + b"Upload-Offset: 3\r\nUpload-Offset: 0\r\n\r\nde"
    answer = raw_request(gateway, data)
    assert answer is None or answer.status == 400
    victim.unchanged()


@pytest.mark.parametrize("offset", ["8", "9223372036854775807"])
def test_mismatched_offset_is_409_even_if_the_body_would_overflow(gateway, victim, offset):
    """tus 1.0: "If the offsets do not match, the Server MUST respond with the 409 Conflict
    status without modifying the upload resource" - also when offset + body passes the length."""
    response = tus_patch(victim.url, victim.token, offset, b"01234")
    assert_tus_error(response, 409, "mismatched_offset")
    victim.unchanged()


@pytest.mark.parametrize("value", BAD_NUMBERS)
def test_bad_upload_length_is_400(gateway, token, value):
    response = requests.post(gateway.files_url, timeout=30, headers=auth(token, **{"Upload-Length": value}))
    assert_tus_error(response, 400)
    assert "Location" not in response.headers


def test_upload_length_limits(gateway, token, victim):
    maximum = int(requests.options(gateway.files_url, timeout=10).headers["Tus-Max-Size"])
    for value in (str(maximum + 1), "9223372036854775807"):
        response = requests.post(gateway.files_url, timeout=30, headers=auth(token, **{"Upload-Length": value}))
        assert_tus_error(response, 413, "max_size_exceeded")
    for value in ("0", "true", "-1", "01", "1,1"):
        response = requests.post(gateway.files_url, timeout=30, headers=auth(token, **{"Upload-Defer-Length": value}))
        assert_tus_error(response, 400)
    # Upload-Length on PATCH: must not change a known length, must be a valid number
    for value in ("11", "9", "-1", "abc", str(maximum + 1)):
        assert_tus_error(tus_patch(victim.url, victim.token, "3", b"de", **{"Upload-Length": value}), (400, 413))
    victim.unchanged()
    deferred = create_upload(gateway, token, None)
    assert patch(deferred, token, 0, b"abc").status_code == 204
    for value, status in (("-1", 400), ("x", 400), ("2", 400), (str(maximum + 1), 413)):
        assert_tus_error(tus_patch(deferred, token, "3", b"", **{"Upload-Length": value}), status)
    assert offset_of(deferred, token) == 3
    assert "Upload-Defer-Length" in head(deferred, token).headers


# -- content types ------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream", "application/json",
                                          "application/offset+octet-streamx", "multipart/form-data; boundary=x",
                                          "application/offset", "application/offset+octet-stream/x"])
def test_patch_with_wrong_content_type_is_415(gateway, victim, content_type):
    headers = auth(victim.token, **{"Upload-Offset": "3"})
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = requests.patch(victim.url, data=b"de", headers=headers, timeout=30)
    assert_tus_error(response, 415, "unsupported_media_type")
    victim.unchanged()


def test_content_type_parameters_and_case_are_accepted(gateway, token):
    url = create_upload(gateway, token, 4)
    response = requests.patch(url, data=b"ab", timeout=30, headers=auth(token, **{
        "Upload-Offset": "0", "Content-Type": "Application/Offset+Octet-Stream; charset=binary"}))
    assert response.status_code == 204
    assert offset_of(url, token) == 2


def test_rest_routes_with_wrong_content_types(gateway, token):
    login = gateway.url + "/api/auth/login"
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=a"):
        assert_json_error(requests.post(login, data=b'{"username": "a", "password": "b"}',
                                        headers={"Content-Type": content_type}, timeout=30), 415)
    assert_json_error(requests.post(login, data=b'{"username": "\xff\xfe"}', headers={"Content-Type": "application/json"},
                                    timeout=30), 400, "invalid_json")
    upload = gateway.url + "/api/media/upload"
    bearer = {"Authorization": f"Bearer {token}"}
    for content_type in ("application/json", "application/octet-stream", "multipart/form-data", "text/plain"):
        assert_json_error(requests.post(upload, data=b"{}", headers={**bearer, "Content-Type": content_type}, timeout=30),
                          415, "unsupported_media_type")
    # a creation body that is not application/offset+octet-stream is refused like such a PATCH, and
    # nothing is created
    response = requests.post(gateway.files_url, data=b"hello", timeout=30, headers=auth(token, **{
        "Upload-Length": "5", "Content-Type": "text/plain"}))
    assert_json_error(response, 415, "unsupported_media_type")
    assert "Location" not in response.headers


# -- Upload-Metadata ---------------------------------------------------------------------------

MALFORMED_METADATA = [
    "filename !!!!",                      # not base64
    "filename YQ",                        # base64 without padding
    "filename YQ===",                     # too much padding
    "filename " + b64("a") + " extra",    # three parts
    "dup YQ==,dup Yg==",                  # duplicate key
    "dup,dup",                            # duplicate key without values
    "a YQ==,,b Yg==",                     # an empty pair
    ",",                                  # nothing but separators
    "=YQ== YQ== YQ==",                    # three parts again
    "k " + b64(b"\xff\xfe\xfd"),          # value is not UTF-8
    ",".join(f"k{i} YQ==" for i in range(65)),  # more pairs than allowed
]


@pytest.mark.parametrize("metadata", MALFORMED_METADATA)
def test_malformed_upload_metadata_is_400(gateway, token, metadata):
    response = requests.post(gateway.files_url, timeout=30, headers=auth(token, **{
        "Upload-Length": "3", "Upload-Metadata": metadata}))
    assert_tus_error(response, 400, "invalid_header")
    assert "Location" not in response.headers


@pytest.mark.parametrize("raw_value", [b"a\x01b YQ==", b"filename YQ==\x00", b"a\x7fb YQ==", b"k\x1b[31m YQ=="])
def test_control_characters_in_metadata_header_are_refused(gateway, token, raw_value):
    data = request_head("POST", "/files/", token, **{"Tus-Resumable": "1.0.0", "Upload-Length": "3"})
    data = data[:-2] + b"Upload-Metadata: " + raw_value + b"\r\n\r\n"
    answer = raw_request(gateway, data)
    if answer is not None and answer.status == 201:
        # accepted: then every later answer about it must still be well-formed
        url = answer.headers["location"]
        response = head(url, token)
        assert response.status_code == 200, "an accepted upload must stay readable"
    else:
        assert answer is None or answer.status == 400
    alive(gateway)


@pytest.mark.parametrize("key", ["$where", "a.b", "__proto__", "constructor", "\u00ff", "k" * 10_000])
def test_unusual_metadata_keys_round_trip(gateway, token, key):
    metadata = f"{key} {b64('v')},filename {b64('f.bin')}"
    response = requests.post(gateway.files_url, timeout=30, headers=auth(token, **{
        "Upload-Length": "3", "Upload-Metadata": metadata}))
    assert response.status_code in (201, 400), response.text
    if response.status_code == 400:
        assert_tus_error(response, 400)
        return
    url = response.headers["Location"]
    answer = head(url, token)
    assert answer.status_code == 200
    assert answer.headers["Upload-Metadata"] == metadata
    assert patch(url, token, 0, b"abc").status_code == 204
    assert download(url, token) == b"abc"


def test_huge_metadata_header(gateway, token):
    metadata = "filename " + b64("x" * 45_000)  # 60 KB: at the edge of the head limit
    try:
        response = requests.post(gateway.files_url, timeout=30, headers=auth(token, **{
            "Upload-Length": "3", "Upload-Metadata": metadata}))
    except requests.ConnectionError:
        response = None
    assert response is None or response.status_code in (201, 400, 413, 431)
    if response is not None and response.status_code == 201:
        url = response.headers["Location"]
        assert patch(url, token, 0, b"abc").status_code == 204
        disposition = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30).headers["Content-Disposition"]
        assert len(disposition) < 2000, "the download name is bounded"
    alive(gateway)


DANGEROUS_NAMES = [
    "../../../../../../{unique}",
    "..\\..\\..\\{unique}",
    "/{unique}",
    "a\r\nSet-Cookie: stolen=1\r\n\r\n{unique}",
    "x\x00y{unique}",
    "\u202egnp.{unique}.exe",
    "..",
    ".",
    "",
    "\x7f\x1b[31m{unique}",
    'quote"semi;colon{unique}',
    "ünï cødé 日本語 {unique}.txt",
]


def assert_safe_name(name: str | None) -> None:
    if name is None:
        return  # no name at all is safe
    assert name, "an empty name"
    assert "/" not in name and "\\" not in name, name
    assert name not in (".", ".."), name
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in name), repr(name)
    assert "\u202e" not in name


def assert_safe_disposition(value: str) -> None:
    assert "\r" not in value and "\n" not in value and "\x00" not in value
    assert value.startswith(("inline;", "attachment;"))
    plain = value.split('filename="', 1)[1].split('"', 1)[0]
    assert_safe_name(plain)
    assert all(32 <= ord(ch) < 127 for ch in plain), "the plain filename= is ASCII"


def assert_nothing_outside(gateway, unique: str) -> None:
    """No file named `unique` anywhere near the data folder or in the temp folder."""
    for folder in {Path(tempfile.gettempdir()), gateway.data_dir.parent, gateway.data_dir.parent.parent, Path.cwd()}:
        assert not list(folder.glob(f"*{unique}*")), f"a file escaped into {folder}"
    store = gateway.data_dir / "store" / "objects"
    if store.exists():
        for path in store.rglob("*"):
            assert unique not in path.name
            assert path.resolve().is_relative_to(store.resolve())


@pytest.mark.parametrize("template", DANGEROUS_NAMES)
def test_tus_file_names_are_made_safe(gateway, token, template):
    unique = uuid.uuid4().hex
    name = template.format(unique=unique)
    response = requests.post(gateway.files_url, timeout=30, headers=auth(token, **{
        "Upload-Length": "4", "Upload-Metadata": f"filename {b64(name)}"}))
    assert response.status_code == 201, response.text
    url = response.headers["Location"]
    assert patch(url, token, 0, b"data").status_code == 204
    # tus gives the metadata back as it was sent (an empty value may come back as a bare key)
    assert head(url, token).headers["Upload-Metadata"] in (f"filename {b64(name)}", "filename" if not name else None)
    downloaded = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert downloaded.content == b"data"
    assert_safe_disposition(downloaded.headers["Content-Disposition"])
    assert "stolen" not in downloaded.headers.get("Set-Cookie", "")
    item = requests.get(f"{gateway.url}/api/media/{url.rsplit('/', 1)[1]}",
                        headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert item.status_code == 200
    assert_safe_name(item.json()["filename"])
    assert_nothing_outside(gateway, unique)


def multipart_body(filename: bytes, data: bytes, boundary: str = "hostileBoundary") -> tuple[bytes, str]:
    body = (f"--{boundary}\r\n".encode() + b'Content-Disposition: form-data; name="file"; filename="' + filename
            + b'"\r\nContent-Type: application/octet-stream\r\n\r\n' + data + f"\r\n--{boundary}--\r\n".encode())
    return body, f"multipart/form-data; boundary={boundary}"


def post_form_file(gateway, token: str, raw_name: bytes, data: bytes) -> requests.Response:
    """POST one file to /api/media/upload with `raw_name` as its form file name; a closed connection fails."""
    body, content_type = multipart_body(raw_name, data)
    try:
        return requests.post(gateway.url + "/api/media/upload", data=body, timeout=30, headers={
            "Authorization": f"Bearer {token}", "Content-Type": content_type})
    except requests.ConnectionError as exc:
        pytest.fail(f"the gateway closed the connection without answering: {exc}")


@pytest.mark.parametrize("template", [t for t in DANGEROUS_NAMES if "\r" not in t and '"' not in t and "\x00" not in t])
def test_multipart_file_names_are_made_safe(gateway, token, template):
    unique = uuid.uuid4().hex
    name = template.format(unique=unique)
    response = post_form_file(gateway, token, name.encode("utf-8"), b"data")
    assert response.status_code in (201, 400), response.text
    if response.status_code == 201:
        item = response.json()
        assert_safe_name(item["filename"])
        downloaded = requests.get(f"{gateway.url}/files/{item['id']}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert downloaded.content == b"data"
        assert_safe_disposition(downloaded.headers["Content-Disposition"])
    else:
        assert_json_error(response, 400)
    assert_nothing_outside(gateway, unique)
    alive(gateway)


@pytest.mark.parametrize("name", ["日本語.txt", "ünï cødé.txt", "emoji-🎬.mp4"])
def test_multipart_utf8_file_names_are_kept(gateway, token, name):
    """Browsers send the file name as raw UTF-8 in the form part's Content-Disposition."""
    response = post_form_file(gateway, token, name.encode("utf-8"), b"data")
    assert response.status_code == 201, response.text
    assert response.json()["filename"] == name


def test_crlf_in_multipart_part_headers_is_harmless(gateway, token):
    boundary = "hostileBoundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\r\nX-Injected: 1\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\ndata\r\n--{boundary}--\r\n").encode()
    response = requests.post(gateway.url + "/api/media/upload", data=body, timeout=30, headers={
        "Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code in (201, 400), response.text
    if response.status_code == 201:
        assert_safe_name(response.json()["filename"])
    else:
        assert_json_error(response, 400)
    alive(gateway)


@pytest.mark.parametrize("path", [
    "/files/../../../../etc/passwd",
    "/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/files/..%2F..%2F..%2Fsetup.py",
    "/files/" + "0" * 32 + "/../../setup.py",
    "/files/%00" + "0" * 31,
    "/api/media/..%2F..%2Fsetup.py",
    "/media/" + "0" * 32 + "/original/../../../setup.py",
    "/media/" + "0" * 32 + "/..%2F..%2Fsetup.py",
])
def test_path_traversal_in_urls(gateway, token, path):
    answer = raw_request(gateway, request_head("GET", path, token, **TUS))
    assert answer is not None
    assert answer.status in (400, 403, 404), (answer.status, answer.body[:200])
    assert b"setup(" not in answer.body and b"root:" not in answer.body
    if answer.status != 400 or answer.body:
        assert answer.json()["error"]["code"]


def test_concat_with_traversal_urls_is_400(gateway, token):
    for header in ("final;/files/../../etc/passwd", "final;/files/%2e%2e%2f" + "0" * 26, "final;file:///etc/passwd",
                   "final;" + "/files/" + "a" * 32 + "/../" + "b" * 32):
        response = requests.post(gateway.files_url, timeout=30, headers=auth(token, **{"Upload-Concat": header}))
        assert_tus_error(response, 400)


# -- header floods ------------------------------------------------------------------------------


def test_header_floods_are_refused_and_the_gateway_keeps_serving(gateway, victim):
    floods = {
        "5000 headers": request_head("GET", "/health") [:-2] + b"".join(b"X-Flood-%d: %s\r\n" % (i, b"v" * 16) for i in range(5000)) + b"\r\n",
        "one 200 KB header": request_head("GET", "/health", **{"X-Big": "a" * 200_000}),
        "a 100 KB request line": request_head("GET", "/files/" + "a" * 100_000),
        "a 200 KB Authorization": request_head("HEAD", path_of(victim.url), "x" * 200_000, **TUS),
        "a 200 KB Upload-Metadata": request_head("POST", "/files/", victim.token, **{
            "Tus-Resumable": "1.0.0", "Upload-Length": "1", "Upload-Metadata": "filename " + "QUFB" * 50_000}),
    }
    for name, data in floods.items():
        started = time.monotonic()
        answer = raw_request(gateway, data)
        assert answer is None or answer.status in (400, 413, 431), (name, answer.status)
        assert time.monotonic() - started < 10, f"{name}: the gateway took too long to refuse"
        alive(gateway)
    # headers that fit are still served
    many = auth(victim.token, **{f"X-Fine-{i}": "v" for i in range(200)})
    assert requests.head(victim.url, headers=many, timeout=30).headers["Upload-Offset"] == "3"
    victim.unchanged()


# -- slow-loris ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def impatient(start_gateway):
    """A gateway that closes stalled bodies after 2 s and idle heads after 3 s, with room for two part buffers."""
    return start_gateway("local", PART_SIZE="5MiB", IDLE_BODY_TIMEOUT="2", IDLE_CONNECTION_TIMEOUT="3",
                         UPLOAD_MEMORY_BUDGET="10MiB")


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed `sock` (reading and dropping anything it sent); fails after `seconds`."""
    started = time.monotonic()
    sock.settimeout(0.25)
    while time.monotonic() - started < seconds:
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except socket.timeout:
            continue
        except ConnectionResetError:
            return time.monotonic() - started
    pytest.fail(f"the server kept a stalled connection open for {seconds} s")


def open_socket(gateway, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(gateway.env["PORT"])), timeout=30)
    sock.sendall(data)
    return sock


@pytest.mark.parametrize("sent", [1000, 5 * MiB + 4321])
def test_slow_loris_patch_is_closed_and_keeps_what_arrived(impatient, token, sent):
    data = random_bytes(sent, seed=sent)
    url = create_upload(impatient, token, 12 * MiB)
    sock = open_socket(impatient, request_head("PATCH", path_of(url), token, **{
        "Tus-Resumable": "1.0.0", "Content-Type": OCTETS, "Upload-Offset": "0", "Content-Length": str(12 * MiB)}) + data)
    try:
        assert closed_within(sock, 10) < 8
    finally:
        sock.close()
    assert wait_for_offset(url, token, lambda o: o == sent, timeout=15) == sent
    rest = random_bytes(12 * MiB - sent, seed=1)
    assert patch(url, token, sent, rest).status_code == 204
    assert download(url, token) == data + rest


def test_slow_loris_headers_are_closed(impatient):
    sock = open_socket(impatient, b"PATCH /files/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n")
    try:
        assert closed_within(sock, 10) < 8
    finally:
        sock.close()
    alive(impatient)


def test_slow_loris_json_body_is_closed(impatient):
    sock = open_socket(impatient, request_head("POST", "/api/auth/login", **{
        "Content-Type": "application/json", "Content-Length": "1000"}) + b'{"username": "sl')
    try:
        assert closed_within(sock, 10) < 8
    finally:
        sock.close()
    alive(impatient)


def test_slow_loris_rest_upload_is_closed_and_frees_its_buffer(impatient, token):
    """A stalled multipart upload holds a part buffer; two of them fill this gateway's memory budget."""
    body, content_type = multipart_body(b"slow.bin", b"z" * 4096)
    stalled = [open_socket(impatient, request_head("POST", "/api/media/upload", token, **{
        "Content-Type": content_type, "Content-Length": str(len(body) + 10 * MiB)}) + body[:-40]) for _ in range(2)]
    try:
        for sock in stalled:
            assert closed_within(sock, 10) < 8
    finally:
        for sock in stalled:
            sock.close()
    # the budget is free again: a PATCH that needs a part buffer goes through
    url = create_upload(impatient, token, 6 * MiB)
    data = random_bytes(6 * MiB, seed=9)
    assert patch(url, token, 0, data).status_code == 204
    assert download(url, token) == data


# -- tokens ---------------------------------------------------------------------------------------


def hs512(claims: dict) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test secret is short for SHA-512, which does not matter here
        return jwt.encode(claims, JWT_SECRET, algorithm="HS512")


def forged_tokens(user_id: str) -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": user_id, "name": user_id, "role": "admin", "iat": now, "nbf": now, "exp": now + 3600,
              "iss": "mediaserver", "jti": uuid.uuid4().hex}

    def unsigned(header: dict, payload: dict) -> str:
        part = lambda value: base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()  # noqa: E731
        return f"{part(header)}.{part(payload)}."

    return {
        "alg none": unsigned({"alg": "none", "typ": "JWT"}, claims),
        "alg None": unsigned({"alg": "None", "typ": "JWT"}, claims),
        "wrong key": jwt.encode(claims, "another-secret-" + "z" * 40, algorithm="HS256"),
        "HS512 with the right key": hs512(claims),
        "expired": jwt.encode(dict(claims, exp=now - 120, iat=now - 240, nbf=now - 240), JWT_SECRET, algorithm="HS256"),
        "not yet valid": jwt.encode(dict(claims, nbf=now + 600), JWT_SECRET, algorithm="HS256"),
        "no exp": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, JWT_SECRET, algorithm="HS256"),
        "other issuer": jwt.encode(dict(claims, iss="evil"), JWT_SECRET, algorithm="HS256"),
        "unknown role": jwt.encode(dict(claims, role="superadmin"), JWT_SECRET, algorithm="HS256"),
        "numeric sub": jwt.encode(dict(claims, sub=12345), JWT_SECRET, algorithm="HS256"),
        "signature stripped": jwt.encode(claims, JWT_SECRET, algorithm="HS256").rsplit(".", 1)[0] + ".",
        "garbage": "not.a.token",
        "empty": "",
    }


@pytest.mark.parametrize("kind", list(forged_tokens("x")))
def test_forged_and_expired_tokens_are_401_everywhere(gateway, victim, kind):
    bad = forged_tokens("user-" + uuid.uuid4().hex[:6])[kind]
    media_id = victim.done_url.rsplit("/", 1)[1]
    bearer = {"Authorization": f"Bearer {bad}"}
    calls = [
        ("POST", gateway.files_url, {**TUS, "Upload-Length": "5"}, None),
        ("HEAD", victim.url, TUS, None),
        ("PATCH", victim.url, {**TUS, "Upload-Offset": "3", "Content-Type": OCTETS}, b"de"),
        ("DELETE", victim.url, TUS, None),
        ("GET", victim.done_url, {}, None),
        ("POST", victim.url, {**TUS, "X-HTTP-Method-Override": "DELETE"}, None),
        ("GET", gateway.url + "/api/media", {}, None),
        ("GET", f"{gateway.url}/api/media/{media_id}", {}, None),
        ("DELETE", f"{gateway.url}/api/media/{media_id}", {}, None),
        ("GET", gateway.url + "/api/auth/verify", {}, None),
    ]
    for method, url, headers, data in calls:
        response = requests.request(method, url, headers={**bearer, **headers}, data=data, timeout=30)
        assert response.status_code == 401, (kind, method, url, response.status_code)
        if method != "HEAD":
            assert_json_error(response, 401)
    body, content_type = multipart_body(b"x.bin", b"data")
    response = requests.post(gateway.url + "/api/media/upload", data=body, timeout=30,
                             headers={**bearer, "Content-Type": content_type})
    assert_json_error(response, 401)
    victim.unchanged()


# -- someone else's uploads and media --------------------------------------------------------------


def test_other_users_ids_on_every_method(gateway, victim):
    stranger = make_token("stranger-" + uuid.uuid4().hex[:6])
    bearer = {"Authorization": f"Bearer {stranger}"}
    body, content_type = multipart_body(b"mine.bin", b"rest-data")
    rest = requests.post(gateway.url + "/api/media/upload", data=body, timeout=30,
                         headers={"Authorization": f"Bearer {victim.token}", "Content-Type": content_type})
    assert rest.status_code == 201
    rest_id = rest.json()["id"]
    partial = create_upload(gateway, victim.token, 3, **{"Upload-Concat": "partial"})
    assert patch(partial, victim.token, 0, b"xyz").status_code == 204
    for url in (victim.url, victim.done_url, f"{gateway.files_url}{rest_id}", partial):
        offset = "3" if url == victim.url else "0"
        assert head(url, stranger).status_code == 404
        assert "Upload-Offset" not in head(url, stranger).headers, "a 404 HEAD carries no Upload-Offset"
        assert_tus_error(tus_patch(url, stranger, offset, b"de"), 404, "upload_not_found")
        assert_tus_error(requests.delete(url, headers=auth(stranger), timeout=30), 404, "upload_not_found")
        assert_json_error(requests.get(url, headers=bearer, timeout=30), 404)
        for override, extra in (("PATCH", {"Upload-Offset": offset, "Content-Type": OCTETS}), ("DELETE", {})):
            response = requests.post(url, data=b"de" if override == "PATCH" else None, timeout=30,
                                     headers=auth(stranger, **{"X-HTTP-Method-Override": override, **extra}))
            assert_tus_error(response, 404, "upload_not_found")
        answer = raw_request(gateway, request_head("POST", path_of(url), stranger, **{
            **TUS, "X-HTTP-Method-Override": "HEAD", "Content-Length": "0"}), head_only=True)
        assert answer is not None and answer.status == 404 and "upload-offset" not in answer.headers
    for media_id in (victim.done_url.rsplit("/", 1)[1], rest_id):
        assert_json_error(requests.get(f"{gateway.url}/api/media/{media_id}", headers=bearer, timeout=30), 404)
        assert_json_error(requests.delete(f"{gateway.url}/api/media/{media_id}", headers=bearer, timeout=30), 404)
        # the signed file route wants a valid signature, not a token
        for query in ("", "?expires=9999999999&signature=AAAA", f"?expires={int(time.time()) + 60}&signature="):
            response = requests.get(f"{gateway.url}/media/{media_id}/original{query}", headers=bearer, timeout=30)
            assert_json_error(response, 403, "invalid_signature")
    listing = requests.get(gateway.url + "/api/media?all=true", headers=bearer, timeout=30)
    assert listing.status_code == 200
    assert {item["id"] for item in listing.json()["items"]}.isdisjoint({rest_id, victim.done_url.rsplit("/", 1)[1]})
    concat = requests.post(gateway.files_url, timeout=30, headers=auth(stranger, **{"Upload-Concat": f"final;{partial}"}))
    assert_tus_error(concat, 400, "invalid_concat")
    # the owner still sees everything as it was
    victim.unchanged()
    assert download(f"{gateway.files_url}{rest_id}", victim.token) == b"rest-data"
    assert download(partial, victim.token) == b"xyz"
    mine = requests.get(f"{gateway.url}/api/media/{rest_id}", headers={"Authorization": f"Bearer {victim.token}"}, timeout=30)
    assert mine.status_code == 200 and mine.json()["status"] != "deleted"


# -- tus details ----------------------------------------------------------------------------------


def test_errors_under_a_head_override_are_well_framed(gateway, victim):
    """POST + X-HTTP-Method-Override: HEAD is still a POST on the wire: an error answer must
    come whole (its body, or no Content-Length promising one), or the client breaks."""
    stranger = make_token("stranger-" + uuid.uuid4().hex[:6])
    try:
        response = requests.post(victim.url, timeout=30, headers=auth(stranger, **{"X-HTTP-Method-Override": "HEAD"}))
    except requests.RequestException as exc:
        pytest.fail(f"the answer to an overridden HEAD is broken: {exc}")
    assert response.status_code == 404
    mine = requests.post(victim.url, timeout=30, headers=auth(victim.token, **{"X-HTTP-Method-Override": "HEAD"}))
    assert mine.status_code == 200 and mine.headers["Upload-Offset"] == "3"
    victim.unchanged()


def test_method_override_only_names_tus_methods(gateway, victim):
    for override in ("GET", "PUT", "TRACE", "CONNECT", "OPTIONS", "PATCHX", "POST"):
        response = requests.post(victim.url, timeout=30, headers=auth(victim.token, **{"X-HTTP-Method-Override": override}))
        assert_tus_error(response, 400, "invalid_method_override")
    # the header on anything but POST is ignored
    response = requests.patch(victim.url, data=b"de", timeout=30, headers=auth(victim.token, **{
        "X-HTTP-Method-Override": "DELETE", "Upload-Offset": "3", "Content-Type": OCTETS}))
    assert response.status_code == 204
    assert offset_of(victim.url, victim.token) == 5


def test_unsupported_tus_versions_are_412(gateway, victim):
    for version in ("0.2.2", "1.0", "2.0.0", "1.0.0, 0.2.2", ""):
        response = requests.patch(victim.url, data=b"de", timeout=30, headers={
            "Authorization": f"Bearer {victim.token}", "Tus-Resumable": version,
            "Upload-Offset": "3", "Content-Type": OCTETS})
        assert_json_error(response, 412, "unsupported_version")
        assert response.headers["Tus-Version"] == "1.0.0"
    victim.unchanged()


def test_patch_and_post_on_the_collection_and_uploads(gateway, victim):
    assert_tus_error(tus_patch(gateway.files_url, victim.token, "0"), 405)
    response = requests.post(victim.url, timeout=30, headers=auth(victim.token, **{"Upload-Length": "3"}))
    assert_tus_error(response, 405)
    for bad_id in ("0" * 31, "0" * 33, "G" * 32, "0" * 32 + "%00", "0" * 32 + "%0a", "%2e%2e", "0" * 32 + ";x"):
        answer = raw_request(gateway, request_head("HEAD", "/files/" + bad_id, victim.token, **TUS), head_only=True)
        assert answer is not None and answer.status == 404, (bad_id, answer and answer.status)
        assert "upload-offset" not in answer.headers
    victim.unchanged()


def test_empty_and_duplicate_bodies_leave_the_upload_alone(gateway, victim):
    # an empty PATCH at the right offset is a no-op that answers the offset
    response = tus_patch(victim.url, victim.token, "3", b"")
    assert response.status_code == 204 and response.headers["Upload-Offset"] == "3"
    # a replayed PATCH of bytes already stored is a conflict, not a second copy
    assert_tus_error(tus_patch(victim.url, victim.token, "0", b"abc"), 409, "mismatched_offset")
    # a PATCH on a finished upload
    assert_tus_error(tus_patch(victim.done_url, victim.token, "0", b"x"), 409)
    assert_tus_error(tus_patch(victim.done_url, victim.token, str(len(victim.done_data)), b"x"), (403, 409, 413))
    victim.unchanged()
