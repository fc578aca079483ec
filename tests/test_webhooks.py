"""Webhooks against a real receiver on loopback: pre-create decides, post-* events arrive signed,
failed deliveries are retried with backoff and dead-lettered, and events survive SIGKILL and
are delivered once by two instances sharing one MongoDB."""

from __future__ import annotations

import base64
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from pymongo import MongoClient
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError

from tests.conftest import make_token
from tests.test_openapi import schema_errors
from tests.hook_receiver import WebhookReceiver, signature_valid
from tests.support import auth, create_upload, free_port, patch, random_bytes, stop_process, wait_for_port

SECRET = "webhook-secret-" + "k" * 24
MiB = 1024 * 1024
POST_EVENTS = ("post-create", "post-receive", "post-finish", "post-terminate", "media-ready", "media-failed")
FAST_RETRIES = {"HOOK_RETRY_BASE": "0.2", "HOOK_RETRY_MAX": "0.4", "HOOK_POLL_INTERVAL": "0.2",
                "HOOK_CONFIRM_GRACE": "1", "HOOK_TIMEOUT": "2"}


def hook_env(receiver: WebhookReceiver, **extra: str) -> dict[str, str]:
    return {"HOOK_URL": receiver.url, "HOOK_SECRET": SECRET, "PART_SIZE": "5MiB", **FAST_RETRIES, **extra}


def metadata_header(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def decode_metadata(header: str) -> dict[str, str]:
    pairs = (item.split(" ") for item in header.split(","))
    return {pair[0]: base64.b64decode(pair[1]).decode() for pair in pairs}


def scripted(event: dict[str, Any], counts: dict[str, int]) -> tuple[int, Any]:
    """The receiver's answers, chosen by the upload's metadata `plan`."""
    metadata = (event.get("upload") or {}).get("metadata") or {}
    plan = metadata.get("plan", "")
    if event.get("type") == "pre-create":
        if plan == "refuse":
            return 200, {"reject": {"status": 403, "message": "quota exceeded for this plan"}}
        if plan == "rename":
            return 200, {"metadata": {"filename": "renamed.txt", "tenant": "acme"}}
        if plan == "bad-metadata":
            return 200, {"metadata": {"two words": "no"}}
        return 200, {"ok": True}
    counts[event["id"]] = counts.get(event["id"], 0) + 1
    if plan == "flaky" and counts[event["id"]] <= 3:
        return 500, {"error": "try again"}
    if plan == "doomed":
        return 500, {"error": "never"}
    if plan == "chatty":
        return 200, b"<html>" + b"accepted " * 30_000 + b"</html>"  # a large answer, read and ignored
    return 200, {}


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    counts: dict[str, int] = {}
    receiver.answer = lambda event: scripted(event, counts)
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def hooked(start_gateway, receiver):
    return start_gateway("local", **hook_env(receiver, HOOK_EVENTS=",".join(("pre-create",) + POST_EVENTS),
                                             HOOK_RECEIVE_INTERVAL="0", HOOK_MAX_ATTEMPTS="5"))


def database(gateway):
    client = MongoClient(gateway.env["MONGODB_URI"], serverSelectionTimeoutMS=5000)
    return client, client[gateway.env["MONGODB_DB"]]


def upload_bytes(gateway, token: str, data: bytes, **metadata: str) -> str:
    url = create_upload(gateway, token, len(data), **{"Upload-Metadata": metadata_header(**metadata)})
    offset = 0
    for chunk in (data[: len(data) // 2], data[len(data) // 2:]):
        response = patch(url, token, offset, chunk)
        assert response.status_code == 204, response.text
        offset += len(chunk)
    return url.rstrip("/").rsplit("/", 1)[-1]


def undocumented(received) -> list[str]:
    """How an event differs from its schema under `webhooks` in the OpenAPI document."""
    kind = received.event.get("type", "?")
    errors = schema_errors(received.event, f"/webhooks/{kind}/post/requestBody/content/application~1json/schema")
    if not re.fullmatch(r"t=[0-9]+,v1=[0-9a-f]{64}", received.headers.get("Mediaserver-Signature", "")):
        errors.append("Mediaserver-Signature does not match its documented form")
    if received.headers.get("Mediaserver-Event-Id") != received.event.get("id"):
        errors.append("Mediaserver-Event-Id is not the event's id")
    return [f"{kind}: {error}" for error in errors]


def metric(gateway, name: str, **labels: str) -> float:
    text = requests.get(gateway.url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- the rules, without a gateway -----------------------------------------------------------------


def test_signatures_verify_only_for_the_same_secret_body_and_a_recent_time():
    from gateway.hooks.events import sign, verify

    body = b'{"id":"evt_1"}'
    header = sign(SECRET, body)
    assert verify(SECRET, header, body) and signature_valid(SECRET, header, body)
    assert not verify(SECRET, header, body + b" ")
    assert not verify("other-" + SECRET, header, body)
    old = sign(SECRET, body, int(time.time()) - 3600)
    assert not verify(SECRET, old, body) and not signature_valid(SECRET, old, body)
    assert not verify(SECRET, "v1=" + header.split("v1=")[1], body)


def test_a_rejection_is_a_4xx_with_a_short_plain_message():
    from gateway.hooks.gate import rejection

    assert (rejection({"status": 402, "message": "pay first"}).status_code, rejection({}).status_code) == (402, 403)
    for status in (200, 500, "403", True, None):
        assert rejection({"status": status}).status_code == 403
    message = rejection({"status": 451, "message": "line\r\nInjected: header" + "x" * 1000}).message
    assert "\n" not in message and "\r" not in message and len(message) <= 300
    assert rejection("not an object").message == "the upload was refused"


def test_replacement_metadata_is_held_to_the_upload_metadata_rules():
    from gateway.hooks.gate import UnusableAnswer, replacement_metadata

    assert replacement_metadata({"filename": "a b.txt", "flag": None}, 4096) == {"filename": "a b.txt", "flag": None}
    for bad in ({"two words": "x"}, {"a,b": "x"}, {"": "x"}, {"n": 1}, ["filename"], {f"k{i}": "" for i in range(65)},
                {"big": "x" * 4000}):
        with pytest.raises(UnusableAnswer):
            replacement_metadata(bad, 4096)


def test_retry_delays_double_with_jitter_up_to_the_ceiling():
    from gateway.hooks.delivery import RetryPolicy

    policy = RetryPolicy(max_attempts=10, base=1.0, ceiling=8.0)
    for attempts, span in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)):
        delays = [policy.delay(attempts) for _ in range(200)]
        assert all(span / 2 <= d <= span for d in delays), (attempts, min(delays), max(delays))
        assert len(set(delays)) > 1  # jittered


# -- pre-create ----------------------------------------------------------------------------------


def test_pre_create_rejection_reaches_the_tus_client_and_stores_nothing(hooked, receiver, tmp_path):
    user = "refused-" + str(time.time_ns())
    path = tmp_path / "blocked.bin"
    path.write_bytes(b"x" * 1000)
    client = tus_client.TusClient(hooked.files_url, headers={"Authorization": f"Bearer {make_token(user)}"})
    with pytest.raises(TusCommunicationError) as refused:
        client.uploader(str(path), metadata={"filename": "blocked.bin", "plan": "refuse"}).upload()
    assert refused.value.status_code == 403
    assert "quota exceeded for this plan" in str(refused.value.response_content)
    asked = [r for r in receiver.events("pre-create") if (r.event.get("user") or {}).get("id") == user]
    assert len(asked) == 1 and asked[0].event["upload"]["metadata"]["filename"] == "blocked.bin"
    assert not undocumented(asked[0])
    assert signature_valid(SECRET, asked[0].headers["Mediaserver-Signature"], asked[0].body)
    client_, db = database(hooked)
    with client_:
        assert db["uploads"].count_documents({"owner": user}) == 0
        assert db["hook_outbox"].count_documents({"subject": asked[0].event["upload"]["id"]}) == 0
    assert not receiver.events(upload=asked[0].event["upload"]["id"])[1:]  # no post-* event either


def test_pre_create_can_replace_the_metadata(hooked, receiver):
    token = make_token("renamer")
    url = create_upload(hooked, token, 10, **{"Upload-Metadata": metadata_header(filename="a.txt", plan="rename")})
    answer = requests.head(url, headers=auth(token), timeout=10)
    assert decode_metadata(answer.headers["Upload-Metadata"]) == {"filename": "renamed.txt", "tenant": "acme"}


def test_unusable_pre_create_answer_follows_the_default(hooked):
    answer = requests.post(hooked.files_url, timeout=10, headers=auth(
        make_token("bad-hook"), **{"Upload-Length": "10", "Upload-Metadata": metadata_header(plan="bad-metadata")}))
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "upload_hook_unavailable"
    assert answer.headers["Retry-After"]


# -- notifications -------------------------------------------------------------------------------


def test_every_post_event_arrives_signed_and_verifies(hooked, receiver):
    user = "signed-" + str(time.time_ns())
    token = make_token(user)
    data = random_bytes(6 * MiB + 3, seed=17)
    finished = upload_bytes(hooked, token, data, filename="movie.bin")
    broken_png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200  # an image whose processing fails
    failed = upload_bytes(hooked, token, broken_png, filename="broken.png")
    terminated_url = create_upload(hooked, token, 100)
    terminated = terminated_url.rstrip("/").rsplit("/", 1)[-1]
    assert requests.delete(terminated_url, headers=auth(token), timeout=10).status_code == 204

    expected = {(finished, "post-create"), (finished, "post-receive"), (finished, "post-finish"),
                (finished, "media-ready"), (failed, "post-finish"), (failed, "media-failed"),
                (terminated, "post-create"), (terminated, "post-terminate")}
    receiver.wait_for(lambda r: expected <= {(e.event["upload"]["id"], e.event["type"]) for e in r.events()})
    for upload in (finished, failed, terminated):
        for request in receiver.events(upload=upload):
            event = request.event
            assert signature_valid(SECRET, request.headers["Mediaserver-Signature"], request.body), event["type"]
            assert not signature_valid("another-secret-" + "x" * 20, request.headers["Mediaserver-Signature"],
                                       request.body)
            assert event["id"].startswith("evt_") and event["time"].endswith("Z")
            assert event["user"]["id"] == user and "username" in event["user"]
            assert set(event["upload"]) == {"id", "size", "offset", "metadata", "key"}
            assert not undocumented(request)
    finish = receiver.events("post-finish", finished)[0].event
    assert finish["upload"]["size"] == finish["upload"]["offset"] == len(data) and finish["upload"]["key"]
    assert finish["upload"]["metadata"] == {"filename": "movie.bin"}
    progress = receiver.events("post-receive", finished)[0].event
    assert 0 < progress["upload"]["offset"] < len(data)
    ready = receiver.events("media-ready", finished)[0].event
    assert ready["media"]["status"] == "ready" and ready["media"]["size"] == len(data)
    broken = receiver.events("media-failed", failed)[0].event
    assert broken["media"]["status"] == "failed" and broken["media"]["reason"]
    assert not receiver.events("media-ready", failed)
    ids = [r.event["id"] for upload in (finished, failed, terminated) for r in receiver.events(upload=upload)]
    assert len(ids) == len(set(ids)), "each event has its own id and is delivered once"


def test_a_failing_receiver_gets_the_event_again_after_each_failure_then_no_more(hooked, receiver):
    token = make_token("flaky-" + str(time.time_ns()))
    upload = upload_bytes(hooked, token, b"flaky receiver\n" * 10, plan="flaky")
    receiver.wait_for(lambda r: len(r.events("post-finish", upload)) >= 4)
    time.sleep(2.5)  # several times the longest backoff: nothing more may come
    for kind in ("post-create", "post-finish"):
        attempts = receiver.events(kind, upload)
        assert len(attempts) == 4, f"{kind}: {len(attempts)} attempts"
        assert len({a.event["id"] for a in attempts}) == 1  # one idempotency key across retries
        assert len({a.body for a in attempts}) == 1
        gaps = [later.at - earlier.at for earlier, later in zip(attempts, attempts[1:])]
        assert all(gap > 0.05 for gap in gaps), gaps  # backed off, not retried in a tight loop


def test_a_large_answer_of_the_receiver_still_accepts_the_event(hooked, receiver):
    token = make_token("chatty-" + str(time.time_ns()))
    url = create_upload(hooked, token, 10, **{"Upload-Metadata": metadata_header(plan="chatty")})
    upload = url.rstrip("/").rsplit("/", 1)[-1]
    receiver.wait_for(lambda r: r.events("post-create", upload))
    time.sleep(1.5)  # longer than the longest backoff: a failed attempt would have been retried
    assert len(receiver.events("post-create", upload)) == 1


def test_events_are_dead_lettered_after_the_last_attempt(hooked, receiver):
    dead_before = metric(hooked, "mediaserver_hook_deliveries_total", event="post-create", outcome="dead")
    token = make_token("doomed-" + str(time.time_ns()))
    url = create_upload(hooked, token, 10, **{"Upload-Metadata": metadata_header(plan="doomed")})
    upload = url.rstrip("/").rsplit("/", 1)[-1]
    receiver.wait_for(lambda r: len(r.events("post-create", upload)) >= 5)
    deadline = time.monotonic() + 15
    while metric(hooked, "mediaserver_hook_deliveries_total", event="post-create", outcome="dead") <= dead_before:
        assert time.monotonic() < deadline, "the dead event is not counted in /metrics"
        time.sleep(0.2)
    time.sleep(1.5)
    assert len(receiver.events("post-create", upload)) == 5  # HOOK_MAX_ATTEMPTS, then no more
    deadline = time.monotonic() + 15
    while metric(hooked, "mediaserver_hook_outbox_dead") < 1:  # the gauge is counted every few seconds
        assert time.monotonic() < deadline, "the dead-letter gauge stays at 0"
        time.sleep(0.5)
    client, db = database(hooked)
    with client:
        row = db["hook_outbox"].find_one({"subject": upload, "type": "post-create"})
    assert row["state"] == "dead" and row["attempts"] == 5 and "500" in row["last_error"]


# -- crashes and instances -----------------------------------------------------------------------


def test_sigkill_between_commit_and_delivery_still_delivers_after_restart(start_gateway):
    receiver = WebhookReceiver()  # not started yet: deliveries fail (connection refused)
    gateway = start_gateway("local", **hook_env(receiver, HOOK_MAX_ATTEMPTS="100", HOOK_EVENTS="post-create,post-finish"))
    token = make_token("crash-" + str(time.time_ns()))
    upload = upload_bytes(gateway, token, b"survives a crash\n" * 100)
    gateway.kill()
    receiver.start()
    try:
        time.sleep(0.5)
        assert not receiver.events(), "delivered by a dead gateway?"
        gateway.start()
        receiver.wait_for(lambda r: {e.event["type"] for e in r.events(upload=upload)} >= {"post-create", "post-finish"})
        for request in receiver.events(upload=upload):
            assert signature_valid(SECRET, request.headers["Mediaserver-Signature"], request.body)
    finally:
        receiver.stop()


def test_an_unconfirmed_event_is_settled_by_the_committed_state(start_gateway):
    """The writer died after the commit but before confirming its event: the event is sent; a
    prepared event whose commit never happened is dropped."""
    from metadata.outbox import OutboxRow

    receiver = WebhookReceiver().start()
    try:
        gateway = start_gateway("local", **hook_env(receiver, HOOK_EVENTS="post-create,post-finish"))
        token = make_token("unconfirmed-" + str(time.time_ns()))
        url = create_upload(gateway, token, 5)
        committed = url.rstrip("/").rsplit("/", 1)[-1]
        receiver.wait_for(lambda r: r.events("post-create", committed))
        client, db = database(gateway)
        now = time.time()
        with client:
            for subject, event_id in ((committed, "evt_unconfirmed_committed"), ("0" * 32, "evt_never_committed")):
                body = ('{"id":"%s","type":"post-create","time":"2026-01-01T00:00:00.000Z","upload":{"id":"%s",'
                        '"size":5,"offset":0,"metadata":{},"key":null},"user":null}') % (event_id, subject)
                row = OutboxRow(id=f"{event_id}:http", event_id=event_id, type="post-create", sink="http",
                                subject=subject, body=body, state="prepared", due=now + 0.5, created_at=now)
                db["hook_outbox"].insert_one(row.to_document(now + 3600))
            receiver.wait_for(lambda r: any(e.event["id"] == "evt_unconfirmed_committed" for e in r.events()))
            deadline = time.monotonic() + 20
            while db["hook_outbox"].count_documents({"_id": "evt_never_committed:http"}):
                assert time.monotonic() < deadline, "the never-committed event was not dropped"
                time.sleep(0.2)
        assert not any(e.event["id"] == "evt_never_committed" for e in receiver.events())
    finally:
        receiver.stop()


def test_one_users_flood_of_events_leaves_room_for_other_users(start_gateway):
    """While the receiver is down, a user's undelivered events stop at HOOK_MAX_PENDING_PER_USER
    (the rest are dropped and counted); another user's events are still kept and delivered."""
    receiver = WebhookReceiver()  # down: every event stays pending
    gateway = start_gateway("local", **hook_env(receiver, HOOK_EVENTS="post-create", HOOK_MAX_ATTEMPTS="100",
                                                HOOK_MAX_PENDING_PER_USER="3"))
    flood, calm = make_token("flood-" + str(time.time_ns())), make_token("calm-" + str(time.time_ns()))
    flooded = [create_upload(gateway, flood, 10).rstrip("/").rsplit("/", 1)[-1] for _ in range(5)]
    quiet = create_upload(gateway, calm, 10).rstrip("/").rsplit("/", 1)[-1]
    assert metric(gateway, "mediaserver_hook_events_dropped_total", event="post-create") == 2
    client, db = database(gateway)
    with client:
        owners = sorted(row["owner"] for row in db["hook_outbox"].find({"type": "post-create"}))
    assert len(owners) == 4 and len(set(owners)) == 2  # three of the flood's, one of the calm user's
    receiver.start()
    try:
        receiver.wait_for(lambda r: len(r.events("post-create")) == 4)
        delivered = {e.event["upload"]["id"] for e in receiver.events("post-create")}
        assert quiet in delivered and delivered - {quiet} == set(flooded[:3])
    finally:
        receiver.stop()


def test_two_instances_deliver_each_event_once(start_gateway):
    receiver = WebhookReceiver()  # down while the events pile up, so both instances see them pending
    first = start_gateway("local", **hook_env(receiver, HOOK_MAX_ATTEMPTS="100", HOOK_CONCURRENCY="4",
                                              HOOK_EVENTS="post-create,post-finish,media-ready"))
    second = start_gateway("local", share=first)
    token = make_token("pair-" + str(time.time_ns()))
    uploads = [upload_bytes(gateway, token, f"upload {n}\n".encode() * 50) for n in range(4)
               for gateway in (first, second)]
    receiver.start()
    try:
        expected = {(u, kind) for u in uploads for kind in ("post-create", "post-finish", "media-ready")}
        receiver.wait_for(lambda r: expected <= {(e.event["upload"]["id"], e.event["type"]) for e in r.events()}, 60)
        time.sleep(2)  # past the backoff of both instances: any second delivery would be here by now
        ids = [e.event["id"] for e in receiver.events() if e.event["upload"]["id"] in uploads]
        assert len(ids) == len(expected) == len(set(ids)), "an event was delivered twice"
    finally:
        receiver.stop()


# -- the documented receiver -----------------------------------------------------------------------


def readme_receiver() -> str:
    """The receiver of the README's Webhooks section, as written there."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Webhooks\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_documents_every_hook_setting():
    from gateway.config import Settings

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Webhooks\n", 1)[1].split("\n## ", 1)[0]
    settings = [opt.env for _, opt in Settings.options() if opt.env.startswith("HOOK_")]
    assert len(settings) >= 15 and not [env for env in settings if f"`{env}`" not in section]


def test_the_readme_receiver_verifies_real_events_and_refuses_forgeries(start_gateway, tmp_path):
    code = readme_receiver()
    assert len(code.strip().splitlines()) <= 12
    port = free_port()
    script = tmp_path / "receiver.py"
    script.write_text(code.replace('b"the value of HOOK_SECRET"', repr(SECRET.encode()))
                      .replace('("", 8080)', f'("127.0.0.1", {port})'))
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    try:
        wait_for_port(port, 15)
        gateway = start_gateway("local", HOOK_URL=f"http://127.0.0.1:{port}/", HOOK_SECRET=SECRET,
                                HOOK_EVENTS="post-create,post-finish", HOOK_POLL_INTERVAL="0.2")
        token = make_token("readme-" + str(time.time_ns()))
        upload_bytes(gateway, token, b"documented\n" * 10)
        forged = requests.post(f"http://127.0.0.1:{port}/", data=b'{"type": "post-finish"}', timeout=10,
                               headers={"Mediaserver-Signature": f"t={int(time.time())},v1={'0' * 64}"})
        assert forged.status_code == 400
        printed: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [printed.put(line.strip()) for line in process.stdout], daemon=True).start()
        lines: list[str] = []
        while len(lines) < 3:
            try:
                lines.append(printed.get(timeout=30))
            except queue.Empty:
                raise AssertionError(f"the receiver printed only {lines}") from None
        assert sorted(lines) == ["forged", "post-create", "post-finish"]
    finally:
        stop_process(process)


def test_the_signing_secret_can_come_from_ssm(start_gateway, s3_server):
    """HOOK_SECRET_SSM_PARAMETER: read at start (here from moto's SSM), and the events are signed with it."""
    if os.environ.get("TEST_S3_ENDPOINT_URL"):
        pytest.skip("needs moto's SSM (the tests' own moto server)")
    import boto3

    credentials = {k: v for k, v in s3_server.items() if k.startswith("AWS_")}
    name = f"/mediaserver/test/hook-secret-{time.time_ns()}"
    secret = "from-ssm-" + "q" * 30
    boto3.client("ssm", endpoint_url=s3_server["S3_ENDPOINT_URL"], region_name=credentials["AWS_REGION"],
                 aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"]).put_parameter(
        Name=name, Value=secret, Type="SecureString")
    receiver = WebhookReceiver().start()
    try:
        gateway = start_gateway("local", HOOK_URL=receiver.url, HOOK_SECRET_SSM_PARAMETER=name,
                                HOOK_EVENTS="post-create", HOOK_POLL_INTERVAL="0.2",
                                AWS_ENDPOINT_URL_SSM=s3_server["S3_ENDPOINT_URL"], **credentials)
        url = create_upload(gateway, make_token("ssm-" + str(time.time_ns())), 10)
        upload = url.rstrip("/").rsplit("/", 1)[-1]
        receiver.wait_for(lambda r: r.events("post-create", upload))
        delivered = receiver.events("post-create", upload)[0]
        assert signature_valid(secret, delivered.headers["Mediaserver-Signature"], delivered.body)
    finally:
        receiver.stop()
