"""The REST and auth routes of the MediaServer documents, over real HTTP, on both stores."""

from __future__ import annotations

import base64
import json
import time
import uuid
from urllib.parse import urlsplit

import jwt
import pytest
import requests

from tests.conftest import JWT_SECRET
from tests.support import TUS, create_upload, patch, random_bytes, raw_patch, sha256, wait_for_offset

MiB = 1024 * 1024
PASSWORD = "correct-horse-42"


def register(gateway, username: str | None = None, email: str | None = None, password: str = PASSWORD) -> requests.Response:
    body = {"password": password}
    if username:
        body["username"] = username
    if email:
        body["email"] = email
    return requests.post(gateway.url + "/api/auth/register", json=body, timeout=30)


@pytest.fixture
def user(gateway) -> dict:
    name = "u" + uuid.uuid4().hex[:10]
    response = register(gateway, name, f"{name}@example.com")
    assert response.status_code == 201, response.text
    body = response.json()
    return {"name": name, "token": body["token"], "id": body["user"]["id"],
            "headers": {"Authorization": f"Bearer {body['token']}"}}


@pytest.fixture
def other(gateway) -> dict:
    name = "o" + uuid.uuid4().hex[:10]
    response = register(gateway, name)
    assert response.status_code == 201, response.text
    body = response.json()
    return {"name": name, "token": body["token"], "headers": {"Authorization": f"Bearer {body['token']}"}}


def upload_file(gateway, user, data: bytes, filename: str = "file.bin") -> requests.Response:
    return requests.post(gateway.url + "/api/media/upload", files={"file": (filename, data)}, headers=user["headers"], timeout=120)


def png_bytes() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 16), "green").save(out, "PNG")
    return out.getvalue()


# -- auth ---------------------------------------------------------------------------


def test_auth_flow(gateway):
    name = "alice" + uuid.uuid4().hex[:6]
    created = register(gateway, name, f"{name}@Example.com")
    assert created.status_code == 201
    assert created.json()["user"]["username"] == name
    assert "password" not in json.dumps(created.json()) and "hash" not in json.dumps(created.json())
    assert register(gateway, name.upper()).status_code == 409
    assert register(gateway, None, f"{name}@example.COM").status_code == 409
    by_name = requests.post(gateway.url + "/api/auth/login", json={"username": name, "password": PASSWORD})
    assert by_name.status_code == 200
    by_mail = requests.post(gateway.url + "/api/auth/login", json={"email": f"{name}@example.com", "password": PASSWORD})
    assert by_mail.status_code == 200
    token = by_name.json()["token"]
    assert by_name.json()["expiresAt"] > time.time()
    verified = requests.get(gateway.url + "/api/auth/verify", headers={"Authorization": f"Bearer {token}"})
    assert verified.status_code == 200
    assert verified.json()["user"]["username"] == name


def test_wrong_credentials_give_no_hint(gateway, user):
    wrong_password = requests.post(gateway.url + "/api/auth/login", json={"username": user["name"], "password": "nope-12345"})
    unknown_user = requests.post(gateway.url + "/api/auth/login", json={"username": "nobody" + uuid.uuid4().hex[:6], "password": "nope-12345"})
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.json() == unknown_user.json()


@pytest.mark.parametrize("password", ["short1", "onlyletters", "1234567890", "password1234", "x" * 256 + "1"])
def test_weak_passwords_are_refused(gateway, password):
    response = register(gateway, "weak" + uuid.uuid4().hex[:6], password=password)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "weak_password"


@pytest.mark.parametrize("body", [{}, {"username": "ab", "password": PASSWORD}, {"email": "not-an-email", "password": PASSWORD},
                                  {"username": "bob/../x", "password": PASSWORD}, {"username": 5, "password": PASSWORD}])
def test_bad_registrations(gateway, body):
    response = requests.post(gateway.url + "/api/auth/register", json=body)
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"code", "message"}


def test_bad_json_bodies(gateway):
    url = gateway.url + "/api/auth/login"
    assert requests.post(url, data="{", headers={"Content-Type": "application/json"}).status_code == 400
    assert requests.post(url, data="[]", headers={"Content-Type": "application/json"}).status_code == 400
    assert requests.post(url, data="a=b").status_code == 415
    assert requests.post(url, data="x" * (2 * MiB), headers={"Content-Type": "application/json"}).status_code in (400, 413)


def test_tokens_that_must_not_verify(gateway, user):
    verify = gateway.url + "/api/auth/verify"
    claims = jwt.decode(user["token"], options={"verify_signature": False})
    expired = jwt.encode(dict(claims, exp=int(time.time()) - 100, iat=int(time.time()) - 200), JWT_SECRET, algorithm="HS256")
    wrong_key = jwt.encode(claims, "another-secret-" + "z" * 40, algorithm="HS256")
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    alg_none = f"{header}.{payload}."
    head, body, signature = user["token"].split(".")
    tampered_claims = base64.urlsafe_b64encode(json.dumps(dict(claims, role="admin")).encode()).rstrip(b"=").decode()
    tampered = f"{head}.{tampered_claims}.{signature}"
    for token in (expired, wrong_key, alg_none, tampered, "garbage", ""):
        response = requests.get(verify, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token
        assert requests.get(gateway.url + "/api/media", headers={"Authorization": f"Bearer {token}"}).status_code == 401


# -- media --------------------------------------------------------------------------


def test_rest_upload_get_and_download(gateway, user):
    data = random_bytes(64 * MiB + 5, seed=21)
    response = upload_file(gateway, user, data, "big video.bin")
    assert response.status_code == 201, response.text
    item = response.json()
    assert item["size"] == len(data)
    assert item["filename"] == "big video.bin"
    assert item["type"] == "files"
    described = requests.get(f"{gateway.url}/api/media/{item['id']}", headers=user["headers"]).json()
    assert described["status"] in ("ready", "processing")
    body = requests.get(described["url"], timeout=120)
    assert body.status_code == 200
    assert sha256(body.content) == sha256(data)
    ranged = requests.get(described["url"], headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206 and ranged.content == data[10:20]


def test_rest_upload_detects_type_from_bytes(gateway, user):
    image = upload_file(gateway, user, png_bytes(), "picture.txt").json()
    assert (image["type"], image["contentType"]) == ("images", "image/png")
    text = upload_file(gateway, user, b"just text, not a jpeg", "photo.jpg").json()
    assert (text["type"], text["contentType"]) == ("files", "application/octet-stream")


def test_rest_upload_errors_leave_nothing(gateway, user):
    url = gateway.url + "/api/media/upload"
    assert requests.post(url, data=b"raw", headers=user["headers"]).status_code == 415
    assert requests.post(url, files={"other": ("x.bin", b"abc")}, headers=user["headers"]).status_code == 400
    assert requests.post(url, data={"field": "value"}, files={"nofile": ("", b"")}, headers=user["headers"]).status_code == 400
    two = [("file", ("a.bin", b"a")), ("file", ("b.bin", b"b"))]
    assert requests.post(url, files=two, headers=user["headers"]).status_code == 400
    broken = requests.post(url, data=b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc",
                           headers={**user["headers"], "Content-Type": "multipart/form-data; boundary=xyz"})
    assert broken.status_code == 400
    listing = requests.get(gateway.url + "/api/media", headers=user["headers"]).json()
    assert listing["total"] == 0


def test_rest_upload_size_limit(start_gateway, tmp_path):
    gateway = start_gateway("local", REST_MAX_FILE_SIZE="1MiB")
    body = register(gateway, "lim" + uuid.uuid4().hex[:6]).json()
    headers = {"Authorization": f"Bearer {body['token']}"}
    response = requests.post(gateway.url + "/api/media/upload", files={"file": ("a.bin", b"x" * (2 * MiB))}, headers=headers)
    assert response.status_code == 413
    assert requests.get(gateway.url + "/api/media", headers=headers).json()["total"] == 0
    assert not list((gateway.data_dir / "store" / "objects").rglob("*.bin"))


def test_pagination_filters_and_order(gateway, user):
    ids = []
    for index in range(3):
        ids.append(upload_file(gateway, user, png_bytes(), f"p{index}.png").json()["id"])
        time.sleep(0.01)
    for index in range(2):
        ids.append(upload_file(gateway, user, f"file {index}".encode(), f"f{index}.txt").json()["id"])
        time.sleep(0.01)
    url = gateway.url + "/api/media"
    first = requests.get(url, params={"limit": 2}, headers=user["headers"]).json()
    assert first["total"] == 5 and first["pages"] == 3
    assert [item["id"] for item in first["items"]] == ids[::-1][:2]
    third = requests.get(url, params={"limit": 2, "page": 3}, headers=user["headers"]).json()
    assert [item["id"] for item in third["items"]] == [ids[0]]
    images = requests.get(url, params={"type": "images"}, headers=user["headers"]).json()
    assert {item["id"] for item in images["items"]} == set(ids[:3])
    files = requests.get(url, params={"type": "files"}, headers=user["headers"]).json()
    assert {item["id"] for item in files["items"]} == set(ids[3:])
    for bad in ({"type": "music"}, {"limit": 0}, {"limit": 1000}, {"page": "x"}):
        assert requests.get(url, params=bad, headers=user["headers"]).status_code == 400


def test_every_media_route_checks_the_caller(gateway, user, other):
    item = upload_file(gateway, user, b"mine").json()
    media = f"{gateway.url}/api/media/{item['id']}"
    for headers, expected in (({}, 401), ({"Authorization": "Bearer bad"}, 401), (other["headers"], 404)):
        assert requests.get(media, headers=headers).status_code == expected
        assert requests.delete(media, headers=headers).status_code == expected
        assert requests.get(gateway.url + "/api/media", headers=headers).status_code == (200 if expected == 404 else 401)
        assert requests.post(gateway.url + "/api/media/upload", files={"file": ("a", b"a")}, headers=headers).status_code in (
            201 if expected == 404 else 401,)
        upload_url = f"{gateway.url}/files/{item['id']}"
        assert requests.head(upload_url, headers={**TUS, **headers}).status_code == expected
        assert requests.get(upload_url, headers=headers).status_code == expected
    assert other["name"] not in json.dumps(requests.get(gateway.url + "/api/media", headers=user["headers"]).json())
    assert requests.get(media, headers=user["headers"]).status_code == 200


def test_delete_is_idempotent_and_removes_the_object(gateway, user, other):
    item = upload_file(gateway, user, b"to be deleted").json()
    media = f"{gateway.url}/api/media/{item['id']}"
    signed = requests.get(media, headers=user["headers"]).json()["url"]
    assert requests.get(signed).status_code == 200
    assert requests.delete(media, headers=other["headers"]).status_code == 404
    assert requests.delete(media, headers=user["headers"]).status_code == 204
    assert requests.delete(media, headers=user["headers"]).status_code == 204
    assert requests.get(media, headers=user["headers"]).status_code == 404
    assert requests.get(signed).status_code in (403, 404), "S3 answers 403 for a missing key without ListBucket"
    assert requests.head(f"{gateway.url}/files/{item['id']}", headers={**TUS, **user["headers"]}).status_code == 404
    assert requests.get(gateway.url + "/api/media", headers=user["headers"]).json()["total"] == 0


def test_finished_tus_upload_becomes_media(gateway, user):
    data = random_bytes(6 * MiB, seed=22)
    url = create_upload(gateway, user["token"], len(data),
                        **{"Upload-Metadata": "filename " + base64.b64encode(b"holiday.mov").decode()})
    assert patch(url, user["token"], 0, data).status_code == 204
    media_id = url.rsplit("/", 1)[1]
    described = requests.get(f"{gateway.url}/api/media/{media_id}", headers=user["headers"]).json()
    assert described["filename"] == "holiday.mov"
    assert described["size"] == len(data)
    assert sha256(requests.get(described["url"]).content) == sha256(data)
    assert requests.delete(url, headers={**TUS, **user["headers"]}).status_code == 204
    assert requests.get(f"{gateway.url}/api/media/{media_id}", headers=user["headers"]).status_code == 404


def test_signed_urls_refuse_tampering(gateway, user):
    item = upload_file(gateway, user, b"signed").json()
    url = requests.get(f"{gateway.url}/api/media/{item['id']}", headers=user["headers"]).json()["url"]
    if not url.startswith(gateway.url):
        pytest.skip("the store signs its own URLs")
    assert requests.get(url).status_code == 200
    assert requests.get(url.replace("signature=", "signature=x")).status_code == 403
    assert requests.get(url.split("?")[0]).status_code == 403
    expired = url.replace("expires=", "expires=1")
    assert requests.get(expired).status_code == 403


# -- protection ---------------------------------------------------------------------


def test_rate_limit_exhaustion_and_reset(start_gateway):
    gateway = start_gateway("local", RATE_LIMIT_REQUESTS="5", RATE_LIMIT_WINDOW="2", LOGIN_RATE_LIMIT="3",
                            TRUSTED_PROXY_HOPS="1")
    url = gateway.url + "/api/media"
    answers = [requests.get(url, headers={"X-Forwarded-For": "203.0.113.7"}) for _ in range(6)]
    assert [a.status_code for a in answers] == [401] * 5 + [429]
    assert answers[0].headers["RateLimit-Limit"] == "5"
    assert answers[4].headers["RateLimit-Remaining"] == "0"
    assert int(answers[5].headers["Retry-After"]) >= 1
    assert answers[5].json()["error"]["code"] == "too_many_requests"
    assert requests.get(url, headers={"X-Forwarded-For": "203.0.113.8"}).status_code == 401, "another client IP"
    assert requests.get(url, headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}).status_code == 429, "spoofed left entries ignored"
    time.sleep(2.2)
    assert requests.get(url, headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 401
    logins = [requests.post(gateway.url + "/api/auth/login", json={"username": "x", "password": "y"},
                            headers={"X-Forwarded-For": "203.0.113.9"}).status_code for _ in range(4)]
    assert logins == [401, 401, 401, 429]
    assert requests.get(gateway.url + "/health", headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 200


def test_instances_share_one_rate_limit(start_gateway):
    """Two instances on one MongoDB count a client's requests together (RATE_LIMIT_SHARED, the default)."""
    first = start_gateway("local", RATE_LIMIT_REQUESTS="4", RATE_LIMIT_WINDOW="60", TRUSTED_PROXY_HOPS="1")
    second = start_gateway("local", share=first)
    client = {"X-Forwarded-For": f"198.51.100.{uuid.uuid4().int % 200 + 20}"}
    statuses = [requests.get(gateway.url + "/api/media", headers=client).status_code
                for gateway in (first, second, first, second, first, second)]
    assert statuses == [401, 401, 401, 401, 429, 429], statuses
    remaining = requests.get(second.url + "/api/media", headers={"X-Forwarded-For": "198.51.100.3"})
    assert remaining.headers["RateLimit-Remaining"] == "3", "another client has its own count"
    alone = start_gateway("local", share=first, RATE_LIMIT_SHARED="false")
    assert requests.get(alone.url + "/api/media", headers=client).status_code == 401, "per-instance counting"


def test_tus_data_path_limit_allows_long_chunked_uploads(start_gateway, tmp_path):
    gateway = start_gateway("local", RATE_LIMIT_REQUESTS="5", TUS_RATE_PER_SECOND="20", TUS_RATE_BURST="40")
    token = register(gateway, "chunky" + uuid.uuid4().hex[:6]).json()["token"]
    data = random_bytes(600 * 1024, seed=23)
    url = create_upload(gateway, token, len(data))
    offset, refused = 0, 0
    while offset < len(data):
        response = patch(url, token, offset, data[offset : offset + 10 * 1024])
        if response.status_code == 429:
            refused += 1
            time.sleep(float(response.headers["Retry-After"]))
            continue
        assert response.status_code == 204
        offset = int(response.headers["Upload-Offset"])
    assert offset == len(data)
    assert refused <= 10, "a chunked upload is slowed at most briefly, never stopped"


def test_cors_preflight_for_a_tus_patch(gateway, token):
    url = create_upload(gateway, token, 10)
    preflight = requests.options(url, headers={
        "Origin": "https://uploader.example", "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization,content-type,tus-resumable,upload-offset,upload-checksum"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] in ("*", "https://uploader.example")
    assert "PATCH" in preflight.headers["Access-Control-Allow-Methods"]
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    for name in ("authorization", "content-type", "tus-resumable", "upload-offset", "upload-checksum", "upload-concat"):
        assert name in allowed
    actual = patch(url, token, 0, b"0123456789", Origin="https://uploader.example")
    exposed = actual.headers["Access-Control-Expose-Headers"].lower()
    for name in ("location", "upload-offset", "upload-length", "tus-resumable", "upload-expires", "upload-metadata"):
        assert name in exposed


def test_security_headers(gateway):
    headers = requests.get(gateway.url + "/health").headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "SAMEORIGIN"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "Strict-Transport-Security" in headers
    assert "Server" not in headers
    assert headers["X-Request-Id"]


def test_the_page_may_play_media_only_from_the_gateway_and_its_stores_signed_urls(gateway, user):
    """Videos play in the page from the store's own signed URLs (S3), so the CSP's media-src names
    exactly that origin beside the gateway's; a store that signs nothing adds no origin."""
    policy = requests.get(gateway.url + "/health").headers["Content-Security-Policy"]
    directives = {name: rest.split() for name, _, rest in (part.strip().partition(" ") for part in policy.split(";"))}
    item = upload_file(gateway, user, b"a signed original").json()
    signed = requests.get(f"{gateway.url}/api/media/{item['id']}", headers=user["headers"]).json()["url"]
    if signed.startswith(gateway.url):  # the gateway signs: nothing but itself
        assert directives["media-src"] == ["'self'", "blob:"]
    else:
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(signed))
        assert directives["media-src"] == ["'self'", "blob:", origin]
    assert directives["img-src"] == ["'self'", "data:", "blob:"]


def test_detailed_health(gateway):
    body = requests.get(gateway.url + "/health/detailed").json()
    assert body["status"] == "ok"
    assert body["checks"]["store"]["status"] == "ok" and body["checks"]["mongodb"]["status"] == "ok"
    assert body["memory"]["rss_bytes"] > 0 and body["uptime_seconds"] >= 0 and body["version"]


def test_sha256_is_computed_while_streaming(gateway, user):
    data = random_bytes(13 * MiB + 3, seed=24)
    url = create_upload(gateway, user["token"], len(data))
    for start, end in ((0, 3 * MiB), (3 * MiB, 11 * MiB + 1), (11 * MiB + 1, len(data))):
        assert patch(url, user["token"], start, data[start:end]).status_code == 204
    media_id = url.rsplit("/", 1)[1]
    described = requests.get(f"{gateway.url}/api/media/{media_id}", headers=user["headers"]).json()
    assert described["sha256"] == sha256(data)
    rest = upload_file(gateway, user, data[: 6 * MiB]).json()
    assert rest["sha256"] == sha256(data[: 6 * MiB])


def test_sha256_survives_a_cut_off_patch(gateway, user):
    """A PATCH cut off in the middle of a part (its durable bytes kept as the upload's tail),
    then a resume from the offset HEAD gives: the file's sha256 still covers every byte once."""
    data = random_bytes(12 * MiB + 7, seed=26)
    url = create_upload(gateway, user["token"], len(data))
    sent = 7 * MiB + 12345  # one whole 5 MiB part and 2 MiB + 12345 bytes of the next
    sock = raw_patch(url, user["token"], 0, len(data), data[:sent])
    sock.close()
    offset = wait_for_offset(url, user["token"], lambda value: value == sent)  # every byte received counts
    assert patch(url, user["token"], offset, data[offset:]).status_code == 204
    described = requests.get(f"{gateway.url}/api/media/{url.rsplit('/', 1)[1]}", headers=user["headers"]).json()
    assert described["sha256"] == sha256(data)


def test_file_digests_can_be_turned_off(start_gateway):
    """FILE_SHA256=false: no digest while streaming nor by processing; plain files are ready at once,
    images still get their thumbnail, and the bytes are stored as sent."""
    gateway = start_gateway("local", PART_SIZE="5MiB", FILE_SHA256="false")
    name = "d" + uuid.uuid4().hex[:10]
    token = register(gateway, name).json()["token"]
    account = {"headers": {"Authorization": f"Bearer {token}"}}
    data = random_bytes(11 * MiB + 5, seed=25)
    url = create_upload(gateway, token, len(data))
    assert patch(url, token, 0, data).status_code == 204
    described = requests.get(f"{gateway.url}/api/media/{url.rsplit('/', 1)[1]}", headers=account["headers"]).json()
    assert described["sha256"] is None and described["status"] == "ready"
    assert requests.get(described["url"], timeout=60).content == data
    image = upload_file(gateway, account, png_bytes(), "green.png").json()
    deadline = time.monotonic() + 30
    while image["status"] == "processing" and time.monotonic() < deadline:
        time.sleep(0.2)
        image = requests.get(f"{gateway.url}/api/media/{image['id']}", headers=account["headers"]).json()
    assert image["status"] == "ready" and image["sha256"] is None and image["thumbnailUrl"]


def test_odd_numbers_and_strings_are_client_errors(gateway, user):
    assert requests.get(gateway.url + "/api/media", params={"page": "²"}, headers=user["headers"]).status_code == 400
    item = upload_file(gateway, user, b"x").json()
    assert requests.get(f"{gateway.url}/media/{item['id']}/original", params={"expires": "²", "signature": "x"}).status_code == 403
    surrogate = '{"username": "\\ud800abc", "password": "correct-horse-42"}'
    for route in ("/api/auth/register", "/api/auth/login"):
        response = requests.post(gateway.url + route, data=surrogate, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, route


def test_anonymous_mode_lists_only_ownerless_media(start_gateway):
    gateway = start_gateway("local", AUTH_REQUIRED="false")
    owner = register(gateway, "own" + uuid.uuid4().hex[:6]).json()
    upload_file(gateway, {"headers": {"Authorization": f"Bearer {owner['token']}"}}, b"private")
    requests.post(gateway.url + "/api/media/upload", files={"file": ("anon.txt", b"public")})
    listing = requests.get(gateway.url + "/api/media").json()
    assert [item["filename"] for item in listing["items"]] == ["anon.txt"]
