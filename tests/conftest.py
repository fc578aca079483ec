"""Shared fixtures: real S3 and MongoDB servers over TCP, and gateway processes.

By default the tests start moto's S3 server and an nx-27017 MongoDB wire
server on free loopback ports. To run against real servers instead, set:
  TEST_MONGODB_URI       e.g. mongodb://127.0.0.1:27017  (each gateway gets its own database)
  TEST_S3_ENDPOINT_URL   e.g. http://127.0.0.1:9000 for MinIO ("aws" for AWS itself)
  TEST_S3_BUCKET         an existing bucket (created when missing)
  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION as usual
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests

from tests.support import GatewayProcess, free_port, wait_for_port

JWT_SECRET = "test-secret-" + "x" * 40


@pytest.fixture(scope="session", autouse=True)
def shared_s3_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One folder of trimmed S3 client data for every gateway of the run (made by the first)."""
    folder = tmp_path_factory.mktemp("s3-model")
    before = os.environ.get("S3_MODEL_DIR")
    os.environ["S3_MODEL_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("S3_MODEL_DIR", None)
    else:
        os.environ["S3_MODEL_DIR"] = before


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A MongoDB server URI: TEST_MONGODB_URI, or an nx-27017 process started here."""
    external = os.environ.get("TEST_MONGODB_URI")
    if external:
        yield external
        return
    folder = tmp_path_factory.mktemp("mongo")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from nx_27017.nx_27017 import main; sys.exit(main())",
         # --data-dir: one SQLite file per logical database, so each gateway's database is isolated
         "--data-dir", str(folder), "--host", "127.0.0.1", "-p", str(port),
         "--log-file", str(folder / "log"), "--pid-file", str(folder / "pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 30)
        yield f"mongodb://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, str]]:
    """S3 connection settings: TEST_S3_ENDPOINT_URL/TEST_S3_BUCKET, or a moto server started here."""
    endpoint = os.environ.get("TEST_S3_ENDPOINT_URL")
    if endpoint:
        yield {
            "S3_ENDPOINT_URL": "" if endpoint == "aws" else endpoint,
            "S3_BUCKET": os.environ.get("TEST_S3_BUCKET", "mediaserver-test"),
            "AWS_REGION": os.environ.get("AWS_REGION", "eu-west-2"),
        }
        return
    port = free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        wait_for_port(port, 60)
        yield {
            "S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "S3_BUCKET": "mediaserver-test",
            "AWS_REGION": "eu-west-2",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
        }
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def start_gateway(
    mongo_uri: str, s3_server: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., GatewayProcess]]:
    """Start gateway processes: start_gateway(store='local'|'s3', **env) -> GatewayProcess.

    Each call gets its own data folder and MongoDB database unless `share` names
    an earlier gateway whose database and store it should use (a second instance).
    """
    started: list[GatewayProcess] = []

    def start(store: str = "local", share: GatewayProcess | None = None, **env: str) -> GatewayProcess:
        if share is not None:
            environment = dict(share.env)
            environment.update({k: str(v) for k, v in env.items()})
            environment["PORT"] = str(free_port())
            gateway = GatewayProcess(environment, share.data_dir)
        else:
            data_dir = tmp_path_factory.mktemp(f"gateway-{store}")
            environment = {
                "HOST": "127.0.0.1",
                "PORT": str(free_port()),
                "DATA_DIR": str(data_dir),
                "MONGODB_URI": mongo_uri,
                "MONGODB_DB": f"test_{uuid.uuid4().hex[:12]}",
                "JWT_SECRET": JWT_SECRET,
                "STORAGE_BACKEND": store,
                "LOG_FORMAT": "json",
                "LOG_LEVEL": "INFO",
                # generous limits: tests that check rate limiting set their own
                "RATE_LIMIT_REQUESTS": "1000000",
                "LOGIN_RATE_LIMIT": "1000000",
                "REGISTER_RATE_LIMIT": "1000000",
                "TUS_RATE_BURST": "1000000",
                # tests mint tokens for users they never register (make_token)
                "ACCOUNTLESS_TOKENS": "true",
            }
            if store == "s3":
                environment.update(s3_server)
            environment.update({k: str(v) for k, v in env.items()})
            gateway = GatewayProcess(environment, Path(data_dir))
        gateway.start()
        started.append(gateway)
        return gateway

    yield start
    # every gateway is asked to stop first, then each is waited for: they drain side by side
    for gateway in started:
        if gateway.process is not None and gateway.process.poll() is None:
            gateway.process.terminate()
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="module", params=["local", "s3"])
def gateway(request: pytest.FixtureRequest, start_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    """One gateway per store kind, shared by a test module (5 MiB parts to test boundaries)."""
    return start_gateway(request.param, PART_SIZE="5MiB")


@pytest.fixture
def token() -> str:
    return make_token("user-" + secrets.token_hex(4))


def make_token(user_id: str, role: str = "user", secret: str = JWT_SECRET) -> str:
    from auth.tokens import Principal, TokenIssuer

    return TokenIssuer(secret, 3600).issue(Principal(user_id, user_id, role))[0]


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"mongodb: {os.environ.get('TEST_MONGODB_URI', 'nx-27017 started by the tests')}",
        f"s3: {os.environ.get('TEST_S3_ENDPOINT_URL', 'moto server started by the tests')}",
        f"started: {time.strftime('%H:%M:%S')}",
    ]
