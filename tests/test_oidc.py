"""Tokens of an external identity provider (RS256/ES256 from a JWKS), against a real gateway
process and a JWKS server on loopback (a real socket) serving generated RSA and EC keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pymongo import MongoClient
from pymongo.uri_parser import parse_uri

from auth.oidc import role_of
from tests.conftest import make_token
from tests.support import TUS

ISSUER = "https://idp.example.test/realms/media"
AUDIENCE = "mediaserver-api"


class Jwks:
    """A JWKS endpoint on 127.0.0.1 whose keys the test changes; counts its fetches."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                jwks.fetches += 1
                body = json.dumps({"keys": list(jwks.keys)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/protocol/openid-connect/certs"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, kid: str, private_key: Any) -> None:
        public = private_key.public_key()
        algorithm = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
        self.keys.append({**algorithm.to_jwk(public, as_dict=True), "kid": kid, "use": "sig"})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def jwks() -> Iterator[Jwks]:
    server = Jwks()
    server.publish("rsa-1", RSA_KEY)
    server.publish("ec-1", EC_KEY)
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(start_gateway, jwks):
    return start_gateway("local", JWT_JWKS_URL=jwks.url, JWT_ISSUER=ISSUER, JWT_AUDIENCE=AUDIENCE,
                         JWT_ROLE_CLAIM="realm_access.roles", JWT_ADMIN_ROLES="media-admin,admin",
                         JWT_JWKS_REFRESH_INTERVAL="0", ACCOUNTLESS_TOKENS="false")


@pytest.fixture(scope="module")
def users(gateway) -> Iterator[Any]:
    uri = gateway.env["MONGODB_URI"]
    with MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
        yield client[parse_uri(uri).get("database") or gateway.env["MONGODB_DB"]]["users"]


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "sub-" + uuid.uuid4().hex[:8], "iat": now, "exp": now + 600,
            "preferred_username": "ida", "realm_access": {"roles": ["offline_access"]}}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], key: Any = RSA_KEY, kid: str = "rsa-1", algorithm: str = "RS256") -> str:
    return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid})


def verify(gateway, token: str) -> requests.Response:
    return requests.get(gateway.url + "/api/auth/verify", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def refused_code(response: requests.Response) -> str:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="mediaserver", error="invalid_token"')
    return response.json()["error"]["code"]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_rs256_and_es256_tokens_are_accepted_and_map_to_one_account(gateway):
    subject = "sub-" + uuid.uuid4().hex[:8]
    first = verify(gateway, sign(claims(sub=subject)))
    assert first.status_code == 200, first.text
    user = first.json()["user"]
    assert user["role"] == "user" and user["id"].startswith("ext-")
    again = verify(gateway, sign(claims(sub=subject), EC_KEY, "ec-1", "ES256"))
    assert again.status_code == 200 and again.json()["user"]["id"] == user["id"], "one account per subject"
    other = verify(gateway, sign(claims()))
    assert other.json()["user"]["id"] != user["id"]
    # the account works on the tus and REST routes like any other
    token = sign(claims(sub=subject))
    created = requests.post(gateway.files_url, headers={"Authorization": f"Bearer {token}", **TUS,
                                                         "Upload-Length": "5"}, timeout=30)
    assert created.status_code == 201, created.text
    assert requests.get(gateway.url + "/api/media", headers={"Authorization": f"Bearer {token}"},
                        timeout=30).status_code == 200


def test_the_role_comes_from_the_configured_claim(gateway):
    def listed(token: str) -> set[str]:
        response = requests.get(gateway.url + "/api/media", params={"all": "true", "limit": "100"},
                                headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    uploaded = requests.post(gateway.url + "/api/media/upload", timeout=60,
                             headers={"Authorization": f"Bearer {sign(claims())}"},
                             files={"file": ("theirs.txt", b"someone else's file\n")})
    assert uploaded.status_code == 201, uploaded.text
    subject = "sub-" + uuid.uuid4().hex[:8]
    admin = sign(claims(sub=subject, realm_access={"roles": ["offline_access", "media-admin"]}))
    assert verify(gateway, admin).json()["user"]["role"] == "admin"
    assert uploaded.json()["id"] in listed(admin)
    user = sign(claims(sub=subject))  # the same person, a later token without the role
    assert verify(gateway, user).json()["user"]["role"] == "user"
    assert uploaded.json()["id"] not in listed(user)


def test_role_claim_paths():
    assert role_of({"role": "admin"}, "role", ("admin",)) == "admin"
    assert role_of({"role": ["x", "admin"]}, "role", ("admin",)) == "admin"
    assert role_of({"role": "administrator"}, "role", ("admin",)) == "user"
    assert role_of({"a": {"b": ["boss"]}}, "a.b", ("boss",)) == "admin"
    assert role_of({"a": "boss"}, "a.b", ("boss",)) == "user"
    assert role_of({}, "role", ("admin",)) == "user"


def test_forged_and_foreign_tokens_are_refused_and_make_no_account(gateway, users):
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    subject = "sub-forged-" + uuid.uuid4().hex[:8]
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64(json.dumps(claims(sub=subject)).encode())
    hs256_with_public_key = f"{header}.{body}." + b64(
        hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest())
    cases = {
        "another key, same kid": sign(claims(sub=subject), other_rsa, "rsa-1"),
        "a kid the provider does not have": sign(claims(sub=subject), other_rsa, "rsa-unknown"),
        "the RSA key named for ES256": sign(claims(sub=subject), EC_KEY, "rsa-1", "ES256"),
        "the EC key's kid on an RS256 token": sign(claims(sub=subject), RSA_KEY, "ec-1"),
        "wrong issuer": sign(claims(sub=subject, iss="https://evil.example.test/")),
        "wrong audience": sign(claims(sub=subject, aud="another-api")),
        "no audience": sign(claims(sub=subject, aud=None)),
        "HS256 with the public key PEM as secret": hs256_with_public_key,
    }
    for what, token in cases.items():
        assert refused_code(verify(gateway, token)) == "token_invalid", what
    expired = sign(claims(sub=subject, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600))
    assert refused_code(verify(gateway, expired)) == "token_expired"
    digest = hashlib.sha256(f"{ISSUER}\n{subject}".encode()).hexdigest()[:32]
    assert users.count_documents({"_id": "ext-" + digest}) == 0, "refused tokens create no account"


def test_a_rotated_key_is_picked_up(gateway, jwks):
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = sign(claims(), new_key, "rsa-2")
    assert refused_code(verify(gateway, token)) == "token_invalid"  # not published yet
    fetches = jwks.fetches
    jwks.publish("rsa-2", new_key)
    accepted = verify(gateway, token)
    assert accepted.status_code == 200, accepted.text
    assert jwks.fetches == fetches + 1, "one fetch for the new kid"
    for _ in range(3):  # then from the cache
        assert verify(gateway, sign(claims(), new_key, "rsa-2")).status_code == 200
    assert jwks.fetches == fetches + 1


def test_the_gateways_own_tokens_still_work(gateway):
    name = "own" + uuid.uuid4().hex[:8]
    registered = requests.post(gateway.url + "/api/auth/register", timeout=30,
                               json={"username": name, "password": "a long enough passphrase"})
    assert registered.status_code == 201, registered.text
    assert verify(gateway, registered.json()["token"]).status_code == 200


def test_unreachable_keys_answer_503_and_leave_hs256_alone(start_gateway):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gateway = start_gateway("local", JWT_JWKS_URL=f"http://127.0.0.1:{port}/jwks", JWT_ISSUER=ISSUER,
                            JWT_AUDIENCE=AUDIENCE, JWT_JWKS_TIMEOUT="2")
    response = verify(gateway, sign(claims()))
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "identity_provider_unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    own = requests.get(gateway.url + "/api/media", headers={"Authorization": f"Bearer {make_token('u1')}"},
                       timeout=30)
    assert own.status_code == 200, own.text


def test_a_jwks_url_without_issuer_or_audience_is_refused_at_start(start_gateway, jwks):
    with pytest.raises(RuntimeError, match="JWT_ISSUER and JWT_AUDIENCE"):
        start_gateway("local", JWT_JWKS_URL=jwks.url, JWT_ISSUER=ISSUER)
