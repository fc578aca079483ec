"""The tus 1.0 core and its extensions, request by request, on both stores."""

from __future__ import annotations

import base64
import time

import pytest

import requests

from tests.conftest import make_token
from tests.support import TUS, auth, create_upload, download, head, patch, random_bytes

MiB = 1024 * 1024


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_options_advertises_protocol(gateway):
    response = requests.options(gateway.files_url)
    assert response.status_code == 204
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert response.headers["Tus-Version"] == "1.0.0"
    assert int(response.headers["Tus-Max-Size"]) > 0
    extensions = response.headers["Tus-Extension"].split(",")
    for name in ("creation", "creation-with-upload", "creation-defer-length", "termination", "expiration"):
        assert name in extensions


def test_unsupported_version_is_412_with_tus_version(gateway, token):
    response = requests.post(gateway.files_url, headers={"Authorization": f"Bearer {token}",
                                                         "Tus-Resumable": "0.2.2", "Upload-Length": "5"})
    assert response.status_code == 412
    assert response.headers["Tus-Version"] == "1.0.0"
    assert response.json()["error"]["code"] == "unsupported_version"


def test_creation_then_head(gateway, token):
    url = create_upload(gateway, token, 100, **{"Upload-Metadata": f"filename {b64('clip.mp4')},flag"})
    assert url.startswith(gateway.files_url)
    response = head(url, token)
    assert response.status_code == 200
    assert response.headers["Upload-Offset"] == "0"
    assert response.headers["Upload-Length"] == "100"
    assert response.headers["Cache-Control"] == "no-store"
    assert "Upload-Expires" in response.headers
    metadata = dict(item.split(" ") if " " in item else (item, None) for item in response.headers["Upload-Metadata"].split(","))
    assert base64.b64decode(metadata["filename"]).decode() == "clip.mp4"
    assert metadata["flag"] is None


def test_creation_requires_length(gateway, token):
    response = requests.post(gateway.files_url, headers=auth(token))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_length"
    both = requests.post(gateway.files_url, headers=auth(token, **{"Upload-Length": "1", "Upload-Defer-Length": "1"}))
    assert both.status_code == 400
    bad_defer = requests.post(gateway.files_url, headers=auth(token, **{"Upload-Defer-Length": "2"}))
    assert bad_defer.status_code == 400


def test_creation_rejects_bad_numbers_and_metadata(gateway, token):
    for value in ("-1", "abc", "1e3", "99999999999999999999", "+5"):
        response = requests.post(gateway.files_url, headers=auth(token, **{"Upload-Length": value}))
        assert response.status_code == 400, value
    for metadata in ("filename not-base64!", "a b c", "dup YQ==,dup YQ==", "bad\tkey YQ==", "x " + b64("ok") + "=="):
        response = requests.post(gateway.files_url, headers=auth(token, **{"Upload-Length": "1", "Upload-Metadata": metadata}))
        assert response.status_code == 400, metadata
        assert response.json()["error"]["code"] == "invalid_header"


def test_creation_past_max_size_is_413(gateway, token):
    maximum = int(requests.options(gateway.files_url).headers["Tus-Max-Size"])
    response = requests.post(gateway.files_url, headers=auth(token, **{"Upload-Length": str(maximum + 1)}))
    assert response.status_code == 413


def test_patch_in_pieces_and_download(gateway, token):
    data = random_bytes(12 * MiB + 123, seed=1)
    url = create_upload(gateway, token, len(data))
    offset = 0
    for size in (1, 3 * MiB, 5 * MiB - 1, 2, len(data)):
        piece = data[offset : offset + size]
        if not piece:
            break
        response = patch(url, token, offset, piece)
        assert response.status_code == 204, response.text
        offset += len(piece)
        assert int(response.headers["Upload-Offset"]) == offset
        assert int(head(url, token).headers["Upload-Offset"]) == offset
    assert offset == len(data)
    assert download(url, token) == data


def test_patch_errors_leave_offset_unchanged(gateway, token):
    url = create_upload(gateway, token, 10)
    assert patch(url, token, 0, b"abc").status_code == 204
    wrong_type = requests.patch(url, data=b"de", headers=auth(token, **{"Upload-Offset": "3", "Content-Type": "text/plain"}))
    assert wrong_type.status_code == 415
    mismatch = patch(url, token, 1, b"de")
    assert mismatch.status_code == 409
    assert mismatch.json()["error"]["code"] == "mismatched_offset"
    assert mismatch.headers["Upload-Offset"] == "3", "a client recovers without a HEAD"
    for bad in ("-1", "x", ""):
        response = patch(url, token, 0, b"de", **{"Upload-Offset": bad})
        assert response.status_code == 400, bad
    missing = requests.patch(url, data=b"de", headers=auth(token, **{"Content-Type": "application/offset+octet-stream"}))
    assert missing.status_code == 400
    too_long = patch(url, token, 3, b"0123456789")
    assert too_long.status_code == 413
    no_version = requests.patch(url, data=b"de", headers={"Authorization": f"Bearer {token}", "Upload-Offset": "3",
                                                          "Content-Type": "application/offset+octet-stream"})
    assert no_version.status_code == 412
    assert head(url, token).headers["Upload-Offset"] == "3"
    assert patch(url, token, 3, b"defghij").status_code == 204
    assert download(url, token) == b"abcdefghij"


def test_unknown_upload_is_404(gateway, token):
    url = gateway.files_url + "0" * 32
    assert head(url, token).status_code == 404
    assert patch(url, token, 0, b"x").status_code == 404
    assert requests.delete(url, headers=auth(token)).status_code == 404
    assert head(gateway.files_url + "..%2F..%2Fetc", token).status_code == 404


def test_other_users_uploads_are_invisible(gateway, token):
    url = create_upload(gateway, token, 4)
    stranger = make_token("someone-else")
    assert head(url, stranger).status_code == 404
    assert patch(url, stranger, 0, b"abcd").status_code == 404
    assert requests.delete(url, headers=auth(stranger)).status_code == 404
    assert requests.get(url, headers={"Authorization": f"Bearer {stranger}"}).status_code == 404
    assert head(url, token).headers["Upload-Offset"] == "0"
    admin = make_token("root", role="admin")
    assert head(url, admin).status_code == 200


def test_requests_without_valid_token_are_401(gateway, token):
    url = create_upload(gateway, token, 4)
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": f"Basic {token}"},
                    {"Authorization": "Bearer " + make_token("u", secret="another-secret-" + "y" * 40)}):
        assert requests.head(url, headers={**TUS, **headers}).status_code == 401
        assert requests.post(gateway.files_url, headers={**TUS, **headers, "Upload-Length": "1"}).status_code == 401


def test_termination(gateway, token):
    url = create_upload(gateway, token, 20 * MiB)
    assert patch(url, token, 0, random_bytes(6 * MiB)).status_code == 204
    response = requests.delete(url, headers=auth(token))
    assert response.status_code == 204
    assert head(url, token).status_code == 404
    assert patch(url, token, 6 * MiB, b"x").status_code == 404


def test_deferred_length(gateway, token):
    data = random_bytes(7 * MiB, seed=2)
    url = create_upload(gateway, token, None)
    response = head(url, token)
    assert response.headers["Upload-Defer-Length"] == "1"
    assert "Upload-Length" not in response.headers
    assert patch(url, token, 0, data[: 6 * MiB]).status_code == 204
    response = patch(url, token, 6 * MiB, data[6 * MiB :], **{"Upload-Length": str(len(data))})
    assert response.status_code == 204, response.text
    assert head(url, token).headers["Upload-Length"] == str(len(data))
    assert download(url, token) == data


def test_deferred_length_cannot_shrink_below_offset(gateway, token):
    url = create_upload(gateway, token, None)
    assert patch(url, token, 0, b"hello").status_code == 204
    response = patch(url, token, 5, b"", **{"Upload-Length": "3"})
    assert response.status_code == 400
    assert head(url, token).headers["Upload-Offset"] == "5"


def test_creation_with_upload(gateway, token):
    data = random_bytes(6 * MiB + 5, seed=3)
    response = requests.post(gateway.files_url, data=data[: 5 * MiB + 1], headers=auth(token, **{
        "Upload-Length": str(len(data)), "Content-Type": "application/offset+octet-stream"}))
    assert response.status_code == 201, response.text
    assert response.headers["Upload-Offset"] == str(5 * MiB + 1)
    url = response.headers["Location"]
    assert patch(url, token, 5 * MiB + 1, data[5 * MiB + 1 :]).status_code == 204
    assert download(url, token) == data


def test_whole_small_file_in_creation(gateway, token):
    response = requests.post(gateway.files_url, data=b"tiny", headers=auth(token, **{
        "Upload-Length": "4", "Content-Type": "application/offset+octet-stream"}))
    assert response.status_code == 201
    assert response.headers["Upload-Offset"] == "4"
    assert download(response.headers["Location"], token) == b"tiny"


def test_zero_byte_upload_is_complete_at_once(gateway, token):
    url = create_upload(gateway, token, 0)
    assert head(url, token).headers["Upload-Offset"] == "0"
    assert download(url, token) == b""


def test_patch_on_finished_upload(gateway, token):
    url = create_upload(gateway, token, 3)
    assert patch(url, token, 0, b"abc").status_code == 204
    again = patch(url, token, 3, b"")
    assert again.status_code == 204
    assert again.headers["Upload-Offset"] == "3"
    assert patch(url, token, 0, b"abc").status_code == 409


def test_ranged_download(gateway, token):
    data = random_bytes(6 * MiB, seed=4)
    url = create_upload(gateway, token, len(data))
    assert patch(url, token, 0, data).status_code == 204
    headers = {"Authorization": f"Bearer {token}"}
    part = requests.get(url, headers={**headers, "Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert part.content == data[100:200]
    suffix = requests.get(url, headers={**headers, "Range": "bytes=-10"})
    assert suffix.content == data[-10:]
    open_end = requests.get(url, headers={**headers, "Range": f"bytes={5 * MiB}-"})
    assert open_end.content == data[5 * MiB :]
    beyond = requests.get(url, headers={**headers, "Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{len(data)}"


def test_unfinished_upload_cannot_be_downloaded(gateway, token):
    url = create_upload(gateway, token, 10)
    response = requests.get(url, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404


def test_method_override(gateway, token):
    url = create_upload(gateway, token, 3)
    response = requests.post(url, data=b"abc", headers=auth(token, **{
        "X-HTTP-Method-Override": "PATCH", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}))
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "3"


def test_errors_are_json_with_request_id(gateway, token):
    response = requests.get(gateway.url + "/no/such/route", headers={"X-Request-Id": "abc-123"})
    assert response.status_code == 404
    assert response.headers["X-Request-Id"] == "abc-123"
    assert response.json() == {"error": {"code": "not_found", "message": "no such route"}}


def test_expiration_is_advertised_in_the_future(gateway, token):
    url = create_upload(gateway, token, 10)
    expires = head(url, token).headers["Upload-Expires"]
    from email.utils import parsedate_to_datetime

    assert parsedate_to_datetime(expires).timestamp() > time.time()


# -- checksum -------------------------------------------------------------------------


def _digest(algorithm: str, data: bytes) -> str:
    import hashlib
    import zlib

    if algorithm == "crc32":
        raw = zlib.crc32(data).to_bytes(4, "big")
    else:
        raw = hashlib.new(algorithm, data).digest()
    return base64.b64encode(raw).decode()


def test_checksum_is_advertised(gateway):
    response = requests.options(gateway.files_url)
    assert "checksum" in response.headers["Tus-Extension"].split(",")
    algorithms = response.headers["Tus-Checksum-Algorithm"].split(",")
    for name in ("sha1", "md5", "sha256", "crc32"):
        assert name in algorithms


def test_checksum_match_and_mismatch(gateway, token):
    data = random_bytes(6 * MiB + 11, seed=30)
    url = create_upload(gateway, token, len(data) * 2)
    for algorithm in ("sha1", "md5", "sha256", "crc32"):
        wrong = patch(url, token, 0, data, **{"Upload-Checksum": f"{algorithm} {_digest(algorithm, data[:-1] + b'x')}"})
        assert wrong.status_code == 460, algorithm
        assert wrong.json()["error"]["code"] == "checksum_mismatch"
        assert head(url, token).headers["Upload-Offset"] == "0", "nothing committed on a mismatch"
    right = patch(url, token, 0, data, **{"Upload-Checksum": f"sha256 {_digest('sha256', data)}"})
    assert right.status_code == 204
    assert right.headers["Upload-Offset"] == str(len(data))
    second = patch(url, token, len(data), data, **{"Upload-Checksum": f"crc32 {_digest('crc32', data)}"})
    assert second.status_code == 204
    assert download(url, token) == data + data


def test_checksum_header_errors(gateway, token):
    url = create_upload(gateway, token, 3)
    for header in ("whirlpool AAAA", "sha1 not-base64!", "sha1", "sha1 "):
        response = patch(url, token, 0, b"abc", **{"Upload-Checksum": header})
        assert response.status_code == 400, header
        assert response.json()["error"]["code"] == "invalid_checksum"
    assert head(url, token).headers["Upload-Offset"] == "0"


@pytest.mark.parametrize("algorithm", ["sha1", "md5", "crc32"])
def test_checksum_of_the_wrong_length_is_a_mismatch(gateway, token, algorithm):
    """Valid base64 that cannot be the algorithm's digest is a mismatch (460), not a syntax error."""
    url = create_upload(gateway, token, 3)
    wrong = "Upload-Checksum", f"{algorithm} " + base64.b64encode(b"short!").decode()
    response = patch(url, token, 0, b"abc", **dict([wrong]))
    assert response.status_code == 460, response.text
    assert response.json()["error"]["code"] == "checksum_mismatch"
    assert head(url, token).headers["Upload-Offset"] == "0"
    created = requests.post(gateway.files_url, data=b"abc", headers=auth(
        token, **{"Upload-Length": "3", "Content-Type": "application/offset+octet-stream", wrong[0]: wrong[1]}))
    assert created.status_code == 460 and "Location" not in created.headers, created.headers


def test_checksum_trailer_is_refused_before_the_body(gateway, token):
    """A checksum announced as a trailer cannot be verified here: 400 up front, nothing committed."""
    data = random_bytes(1000, seed=35)
    url = create_upload(gateway, token, len(data))
    response = patch(url, token, 0, data, Trailer="Upload-Checksum")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "checksum_trailer_unsupported"
    assert head(url, token).headers["Upload-Offset"] == "0"
    assert patch(url, token, 0, data, Trailer="Server-Timing").status_code == 204, "other trailers are harmless"


# -- concatenation ----------------------------------------------------------------------


def _partial(gateway, token, data: bytes) -> str:
    url = create_upload(gateway, token, len(data), **{"Upload-Concat": "partial"})
    if data:
        assert patch(url, token, 0, data).status_code == 204
    assert head(url, token).headers["Upload-Concat"] == "partial"
    return url


@pytest.mark.parametrize("sizes", [
    (6 * MiB, 5 * MiB + 3, 7),            # big parts copied server-side, a small last one
    (3, 2 * MiB, 6 * MiB, 1, 9 * MiB),    # small partials joined with their neighbours
    (1, 2, 3),                            # all tiny
    (0, 5 * MiB),                         # an empty partial
])
def test_concatenation(gateway, token, sizes):
    pieces = [random_bytes(size, seed=40 + i) for i, size in enumerate(sizes)]
    urls = [_partial(gateway, token, piece) for piece in pieces]
    response = requests.post(gateway.files_url, headers=auth(token, **{
        "Upload-Concat": "final;" + " ".join(urls),
        "Upload-Metadata": "filename " + base64.b64encode(b"joined.bin").decode()}))
    assert response.status_code == 201, response.text
    final = response.headers["Location"]
    info = head(final, token)
    assert info.headers["Upload-Length"] == str(sum(sizes))
    assert info.headers["Upload-Offset"] == str(sum(sizes))
    assert info.headers["Upload-Concat"].startswith("final;")
    assert download(final, token) == b"".join(pieces)
    for offset, body in ((sum(sizes), b"x"), (sum(sizes), b""), (0, b"y")):
        refused = patch(final, token, offset, body)
        assert refused.status_code == 403, (offset, body, refused.text)
        assert refused.json()["error"]["code"] == "upload_not_writable"
    assert head(final, token).headers["Upload-Offset"] == str(sum(sizes))


def test_concatenation_errors(gateway, token):
    done = _partial(gateway, token, b"abc")
    unfinished = create_upload(gateway, token, 10, **{"Upload-Concat": "partial"})
    normal = create_upload(gateway, token, 1)
    stranger = make_token("stranger-concat")
    foreign = _partial(gateway, stranger, b"xyz")
    for header in (f"final;{unfinished}", f"final;{normal}", f"final;{foreign}", "final;", "final;http://x/other/abc",
                   "both", f"final;{gateway.files_url}{'0' * 32}"):
        response = requests.post(gateway.files_url, headers=auth(token, **{"Upload-Concat": header}))
        assert response.status_code == 400, header
    with_length = requests.post(gateway.files_url, headers=auth(token, **{"Upload-Concat": f"final;{done}", "Upload-Length": "3"}))
    assert with_length.status_code == 400
