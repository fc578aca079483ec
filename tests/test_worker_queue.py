"""Processing through an SQS queue: gateways send jobs, `mediaserver worker` processes run them.

Against moto's server (the one the `s3_server` fixture starts speaks SQS too), or a real SQS
named by TEST_SQS_ENDPOINT_URL ("aws" for AWS itself). Visibility timeouts are short (2 s)
so that redeliveries come quickly.
"""

from __future__ import annotations

import io
import os
import re
import time
import uuid
from typing import Callable, Iterator

import boto3
import pytest
import requests
from PIL import Image
from pymongo import MongoClient

from tests.conftest import make_token
from tests.support import GatewayProcess, free_port

VISIBILITY = 2


def sqs_endpoint(s3_server: dict[str, str]) -> str | None:
    """The SQS endpoint the tests use: TEST_SQS_ENDPOINT_URL, or the moto server of the S3 tests."""
    external = os.environ.get("TEST_SQS_ENDPOINT_URL")
    if external:
        return "" if external == "aws" else external
    if os.environ.get("TEST_S3_ENDPOINT_URL"):
        return None  # a real S3 without a named SQS: nothing speaks SQS here
    return s3_server["S3_ENDPOINT_URL"]


@pytest.fixture(scope="module")
def sqs(s3_server: dict[str, str]) -> Iterator[tuple[object, dict[str, str]]]:
    """(an SQS client, the environment that points gateways and workers at the same SQS)."""
    endpoint = sqs_endpoint(s3_server)
    if endpoint is None:
        pytest.skip("TEST_S3_ENDPOINT_URL is set without TEST_SQS_ENDPOINT_URL")
    env = {"SQS_ENDPOINT_URL": endpoint} if endpoint else {}
    region = s3_server.get("AWS_REGION", "eu-west-2")
    client = boto3.client("sqs", region_name=region, endpoint_url=endpoint or None,
                          aws_access_key_id=s3_server.get("AWS_ACCESS_KEY_ID"),
                          aws_secret_access_key=s3_server.get("AWS_SECRET_ACCESS_KEY"))
    yield client, env
    client.close()


@pytest.fixture
def queues(sqs) -> Iterator[Callable[..., dict[str, str]]]:
    """make(redrive_after=None) -> the environment of a new job queue and its dead-letter queue."""
    client, env = sqs
    made: list[str] = []

    def make(redrive_after: int | None = None) -> dict[str, str]:
        name = "jobs-" + uuid.uuid4().hex[:10]
        dead = client.create_queue(QueueName=name + "-dead")["QueueUrl"]
        attributes = {"VisibilityTimeout": str(VISIBILITY)}
        if redrive_after is not None:
            arn = client.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            attributes["RedrivePolicy"] = f'{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"{redrive_after}"}}'
        url = client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        made.extend([url, dead])
        queue_env = dict(env, PROCESSING_QUEUE_URL=url, PROCESSING_VISIBILITY_TIMEOUT=str(VISIBILITY),
                         PROCESSING_QUEUE_WAIT="1", PROCESSING_MAX_ATTEMPTS="3", PROCESSING_EXECUTOR="thread")
        if redrive_after is None:
            queue_env["PROCESSING_DEAD_LETTER_QUEUE_URL"] = dead
        queue_env["_DEAD"] = dead
        return queue_env

    yield make
    for url in made:
        try:
            client.delete_queue(QueueUrl=url)
        except Exception:  # noqa: BLE001 - best effort clean-up
            pass


class WorkerProcess(GatewayProcess):
    """A `mediaserver worker` child process with its own environment."""

    command, name, port_setting = "worker", "worker", "WORKER_PORT"

    def log(self) -> str:
        """The whole log (what `processed` counts in)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def processed(self, media_id: str) -> int:
        """How many final statuses this worker saved for `media_id`."""
        return sum(1 for line in self.log().splitlines() if '"media processed"' in line and media_id in line)

    def metric(self, name: str) -> float:
        text = requests.get(self.url + "/metrics", timeout=5).text
        match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0


@pytest.fixture
def start_worker() -> Iterator[Callable[..., WorkerProcess]]:
    """start_worker(gateway, **env): a worker sharing `gateway`'s settings (MongoDB, store, queue)."""
    started: list[WorkerProcess] = []

    def start(gateway: GatewayProcess, **env: str) -> WorkerProcess:
        environment = dict(gateway.env, WORKER_PORT=str(free_port()), PROCESSING_CONCURRENCY="2")
        environment.update({k: str(v) for k, v in env.items()})
        worker = WorkerProcess(environment, gateway.data_dir)
        started.append(worker)
        worker.start()
        return worker

    yield start
    for worker in started:
        worker.stop()


def photo(seed: int) -> bytes:
    picture = Image.new("RGB", (640, 480), (seed % 256, 90, 160))
    out = io.BytesIO()
    picture.save(out, "JPEG")
    return out.getvalue()


def upload(gateway: GatewayProcess, token: str, data: bytes, name: str) -> str:
    response = requests.post(gateway.url + "/api/media/upload", files={"file": (name, data)},
                             headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def settled(gateway: GatewayProcess, token: str, media_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = requests.get(f"{gateway.url}/api/media/{media_id}", headers={"Authorization": f"Bearer {token}"},
                            timeout=10).json()
        if item["status"] != "processing":
            return item
        time.sleep(0.1)
    raise TimeoutError(f"{media_id} still processing")


def status(gateway: GatewayProcess, token: str, media_id: str) -> str:
    return requests.get(f"{gateway.url}/api/media/{media_id}", headers={"Authorization": f"Bearer {token}"},
                        timeout=10).json()["status"]


def find(gateway: GatewayProcess, collection: str, query: dict) -> list[dict]:
    """Documents of the gateway's MongoDB database."""
    with MongoClient(gateway.env["MONGODB_URI"]) as client:
        return list(client[gateway.env["MONGODB_DB"]][collection].find(query))


def s3_client(gateway: GatewayProcess):
    env = gateway.env
    return boto3.client("s3", region_name=env["AWS_REGION"], endpoint_url=env["S3_ENDPOINT_URL"] or None,
                        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"), aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"))


def messages_left(client, url: str) -> int:
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(what)


def gateway_env(queue_env: dict[str, str]) -> dict[str, str]:
    """A gateway that sends jobs and processes none itself."""
    return dict({k: v for k, v in queue_env.items() if not k.startswith("_")}, PROCESSING_CONCURRENCY="0")


def test_a_job_sent_by_the_gateway_is_done_by_a_separate_worker(start_gateway, queues, sqs, start_worker):
    client, _ = sqs
    queue_env = queues()
    gateway = start_gateway("s3", **gateway_env(queue_env))
    token = make_token("owner-" + uuid.uuid4().hex[:8])
    media_id = upload(gateway, token, photo(1), "queued.jpg")
    wait_until(lambda: messages_left(client, queue_env["PROCESSING_QUEUE_URL"]) == 1, 10, "no message sent")
    assert status(gateway, token, media_id) == "processing", "the gateway processes nothing itself"

    worker = start_worker(gateway)
    item = settled(gateway, token, media_id)
    assert item["status"] == "ready" and item["width"] == 640 and item["thumbnailUrl"]
    thumbnail = requests.get(item["thumbnailUrl"], timeout=10)
    assert thumbnail.status_code == 200 and Image.open(io.BytesIO(thumbnail.content)).size == (320, 240)
    assert worker.processed(media_id) == 1 and '"media processed"' not in gateway.log()
    wait_until(lambda: messages_left(client, queue_env["PROCESSING_QUEUE_URL"]) == 0, 10, "message not deleted")
    assert worker.metric('mediaserver_processing_queue_messages_total{outcome="ready"}') == 1
    assert find(gateway, "processing_jobs", {}) == [], "a finished job is forgotten"
    health = requests.get(worker.url + "/health", timeout=5)
    assert health.status_code == 200 and health.json()["role"] == "worker"
    assert requests.get(worker.url + "/api/media", timeout=5).status_code == 404, "no public HTTP on a worker"


def test_a_gateway_that_processes_takes_its_jobs_from_the_queue(start_gateway, queues, sqs):
    client, _ = sqs
    queue_env = queues()
    gateway = start_gateway("s3", **dict(gateway_env(queue_env), PROCESSING_CONCURRENCY="2"))
    token = make_token("owner-" + uuid.uuid4().hex[:8])
    media_id = upload(gateway, token, photo(4), "itself.jpg")
    assert settled(gateway, token, media_id)["status"] == "ready"
    assert '"media processed"' in gateway.log()
    wait_until(lambda: messages_left(client, queue_env["PROCESSING_QUEUE_URL"]) == 0, 10, "message not deleted")


def test_a_job_whose_message_was_lost_is_sent_again_by_the_sweep(start_gateway, queues, sqs, start_worker):
    client, _ = sqs
    queue_env = queues()
    gateway = start_gateway("s3", **dict(gateway_env(queue_env), PROCESSING_SWEEP_INTERVAL="0.5"))
    token = make_token("owner-" + uuid.uuid4().hex[:8])
    media_id = upload(gateway, token, photo(5), "lost.jpg")
    url = queue_env["PROCESSING_QUEUE_URL"]
    answer = client.receive_message(QueueUrl=url, WaitTimeSeconds=5)
    [message] = answer["Messages"]
    client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])  # lost: the item still waits
    # sent again once it is older than every attempt could take (visibility x attempts + sweep interval)
    wait_until(lambda: messages_left(client, url) == 1, 30, "the sweep did not send the job again")
    start_worker(gateway)
    assert settled(gateway, token, media_id)["status"] == "ready"


def test_a_killed_workers_job_is_redelivered_and_completes(start_gateway, queues, start_worker):
    queue_env = queues()
    gateway = start_gateway("s3", **gateway_env(queue_env))
    token = make_token("owner-" + uuid.uuid4().hex[:8])
    slow = start_worker(gateway, PROCESSING_TEST_DELAY="60")
    media_id = upload(gateway, token, photo(2), "slow.jpg")
    wait_until(lambda: slow.metric("mediaserver_processing_queue_jobs_running") == 1, 20, "the job never started")
    [job] = find(gateway, "processing_jobs", {"_id": media_id})
    assert job["attempts"] == 1 and job["lease_until"] > time.time()
    # the heartbeat keeps the claim (and the message) beyond one visibility timeout
    time.sleep(VISIBILITY * 1.5)
    [later] = find(gateway, "processing_jobs", {"_id": media_id})
    assert later["holder"] == job["holder"] and later["lease_until"] > job["lease_until"]
    slow.kill()

    other = start_worker(gateway)
    item = settled(gateway, token, media_id)
    assert item["status"] == "ready" and item["thumbnailUrl"]
    assert other.processed(media_id) == 1 and slow.processed(media_id) == 0


@pytest.mark.parametrize("dead_letter", ["sent_by_the_worker", "sqs_redrive"])
def test_a_poison_file_reaches_the_dead_letter_queue_and_its_media_fails(start_gateway, queues, sqs, start_worker,
                                                                         dead_letter):
    client, _ = sqs
    queue_env = queues(redrive_after=3 if dead_letter == "sqs_redrive" else None)
    gateway = start_gateway("s3", **gateway_env(queue_env))
    token = make_token("owner-" + uuid.uuid4().hex[:8])
    media_id = upload(gateway, token, photo(3), "poison.jpg")
    # the poison: a job whose stored file cannot be read, whatever a worker does
    [document] = find(gateway, "media", {"_id": media_id})
    key = document["key"]
    s3 = s3_client(gateway)
    s3.delete_object(Bucket=gateway.env["S3_BUCKET"], Key=key)
    worker = start_worker(gateway)
    item = settled(gateway, token, media_id)
    assert item["status"] == "failed" and item["reason"] == "the stored file could not be read"
    assert worker.log().count('"processing job will be retried"') == 2, "three attempts: two retried, then out"

    def dead_letters() -> list[str]:
        answer = client.receive_message(QueueUrl=queue_env["_DEAD"], MaxNumberOfMessages=10, WaitTimeSeconds=1)
        return [message["Body"] for message in answer.get("Messages", [])]

    found: list[str] = []
    deadline = time.monotonic() + 20
    while not found and time.monotonic() < deadline:
        found = dead_letters()  # with a redrive policy, SQS moves it at the worker's next receive
    assert len(found) == 1 and media_id in found[0]
    assert messages_left(client, queue_env["PROCESSING_QUEUE_URL"]) == 0
    assert worker.metric('mediaserver_processing_queue_messages_total{outcome="dead_lettered"}') == 1


def test_two_workers_on_one_queue_never_leave_two_results(start_gateway, queues, sqs, start_worker):
    client, _ = sqs
    queue_env = queues()
    gateway = start_gateway("s3", **gateway_env(queue_env))
    token = make_token("owner-" + uuid.uuid4().hex[:8])
    ids = [upload(gateway, token, photo(10 + n), f"twice-{n}.jpg") for n in range(3)]
    wait_until(lambda: messages_left(client, queue_env["PROCESSING_QUEUE_URL"]) == len(ids), 10, "messages not sent")
    for media_id in ids:  # every job delivered three times over: as a retried send or a sweep would
        for _ in range(2):
            client.send_message(QueueUrl=queue_env["PROCESSING_QUEUE_URL"], MessageBody=f'{{"media_id": "{media_id}"}}')
    # slow jobs, so that copies reach both workers while the first copy runs
    workers = [start_worker(gateway, PROCESSING_TEST_DELAY="1", PROCESSING_CONCURRENCY="3") for _ in range(2)]
    items = [settled(gateway, token, media_id) for media_id in ids]
    assert [item["status"] for item in items] == ["ready"] * len(ids)
    wait_until(lambda: messages_left(client, queue_env["PROCESSING_QUEUE_URL"]) == 0, 30, "copies left in the queue")
    s3 = s3_client(gateway)
    for media_id in ids:
        assert sum(worker.processed(media_id) for worker in workers) == 1, "one final status per item"
        [document] = find(gateway, "media", {"_id": media_id})
        stem = document["key"].rsplit(".", 1)[0]
        listed = s3.list_objects_v2(Bucket=gateway.env["S3_BUCKET"], Prefix=stem)["Contents"]
        assert sorted(obj["Key"] for obj in listed) == sorted([document["key"], document["thumbnail_key"]])

    def handled(outcome: str) -> float:
        return sum(worker.metric(f'mediaserver_processing_queue_messages_total{{outcome="{outcome}"}}')
                   for worker in workers)

    # one copy of each job made its result; every other copy was deleted without a second one
    assert (handled("ready"), handled("duplicate")) == (len(ids), 2 * len(ids))
