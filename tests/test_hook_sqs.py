"""The SQS sink: the same events as the webhooks, sent to a queue of moto's server (the `s3_server`
endpoint serves SQS too), or to TEST_SQS_ENDPOINT_URL when the tests run against real services."""

from __future__ import annotations

import json
import os
import time
import uuid

import boto3
import pytest

from tests.conftest import make_token
from tests.support import create_upload, patch


@pytest.fixture(scope="module")
def sqs(s3_server):
    endpoint = os.environ.get("TEST_SQS_ENDPOINT_URL") or (
        None if os.environ.get("TEST_S3_ENDPOINT_URL") else s3_server["S3_ENDPOINT_URL"])
    if endpoint is None:
        pytest.skip("set TEST_SQS_ENDPOINT_URL ('aws' for AWS itself) to run the SQS sink against a real queue")
    endpoint = None if endpoint == "aws" else endpoint
    region = s3_server.get("AWS_REGION", "eu-west-2")
    credentials = {k.lower(): v for k, v in s3_server.items() if k.startswith("AWS_") and k != "AWS_REGION"}
    client = boto3.client("sqs", endpoint_url=endpoint, region_name=region, **credentials)
    return client, endpoint or "", region, credentials


def make_queue(sqs, fifo: bool = False) -> str:
    client = sqs[0]
    name = f"hooks-{uuid.uuid4().hex[:8]}" + (".fifo" if fifo else "")
    return client.create_queue(QueueName=name, Attributes={"FifoQueue": "true"} if fifo else {})["QueueUrl"]


def drain(sqs, queue_url: str, wanted: int, timeout: float = 30) -> list[dict]:
    client = sqs[0]
    messages: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(messages) < wanted and time.monotonic() < deadline:
        answer = client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                        MessageAttributeNames=["All"])
        for message in answer.get("Messages", []):
            messages.append(message)
            client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return messages


def sqs_env(sqs, queue_url: str) -> dict[str, str]:
    _, endpoint, region, credentials = sqs
    return {"HOOK_SQS_QUEUE_URL": queue_url, "HOOK_SQS_ENDPOINT_URL": endpoint, "AWS_REGION": region,
            **{name.upper(): value for name, value in credentials.items()},
            "HOOK_EVENTS": "post-create,post-finish,post-terminate,media-ready", "HOOK_POLL_INTERVAL": "0.2",
            "HOOK_RETRY_BASE": "0.2", "HOOK_RETRY_MAX": "0.5"}


def test_events_reach_the_sqs_queue(start_gateway, sqs):
    queue_url = make_queue(sqs)
    gateway = start_gateway("local", **sqs_env(sqs, queue_url))
    user = "sqs-" + uuid.uuid4().hex[:8]
    token = make_token(user)
    data = b"to the queue\n" * 100
    url = create_upload(gateway, token, len(data))
    assert patch(url, token, 0, data).status_code == 204
    upload = url.rstrip("/").rsplit("/", 1)[-1]
    messages = drain(sqs, queue_url, 3)
    events = [json.loads(m["Body"]) for m in messages]
    assert sorted(e["type"] for e in events) == ["media-ready", "post-create", "post-finish"]
    for message, event in zip(messages, events):
        assert event["upload"]["id"] == upload and event["user"]["id"] == user
        assert message["MessageAttributes"]["event_type"]["StringValue"] == event["type"]
        assert message["MessageAttributes"]["event_id"]["StringValue"] == event["id"]
    finish = next(e for e in events if e["type"] == "post-finish")
    assert finish["upload"]["offset"] == finish["upload"]["size"] == len(data)
    assert not drain(sqs, queue_url, 1, timeout=2), "an event was sent twice"


def test_a_fifo_queue_gets_the_upload_as_group_and_the_event_id_for_deduplication(start_gateway, sqs):
    queue_url = make_queue(sqs, fifo=True)
    gateway = start_gateway("local", **sqs_env(sqs, queue_url))
    token = make_token("fifo-" + uuid.uuid4().hex[:8])
    url = create_upload(gateway, token, 10)
    upload = url.rstrip("/").rsplit("/", 1)[-1]
    import requests

    from tests.support import auth

    assert requests.delete(url, headers=auth(token), timeout=10).status_code == 204
    client = sqs[0]
    messages = []
    deadline = time.monotonic() + 30
    while len(messages) < 2 and time.monotonic() < deadline:
        answer = client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                        AttributeNames=["All"])
        for message in answer.get("Messages", []):
            messages.append(message)
            client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    events = [json.loads(m["Body"]) for m in messages]
    assert sorted(e["type"] for e in events) == ["post-create", "post-terminate"]
    for message, event in zip(messages, events):
        assert message["Attributes"]["MessageGroupId"] == upload
        assert message["Attributes"]["MessageDeduplicationId"] == event["id"]


def test_an_unreachable_queue_is_retried_until_it_answers(start_gateway, sqs):
    """Sends to a queue that does not exist yet fail and are retried; once it exists the event arrives."""
    client = sqs[0]
    name = f"hooks-late-{uuid.uuid4().hex[:8]}"
    queue_url = client.create_queue(QueueName=name)["QueueUrl"]
    client.delete_queue(QueueUrl=queue_url)
    gateway = start_gateway("local", **sqs_env(sqs, queue_url), HOOK_MAX_ATTEMPTS="100")
    token = make_token("late-" + uuid.uuid4().hex[:8])
    create_upload(gateway, token, 10)
    time.sleep(1.5)
    assert client.create_queue(QueueName=name)["QueueUrl"] == queue_url
    events = [json.loads(m["Body"]) for m in drain(sqs, queue_url, 1)]
    assert [e["type"] for e in events] == ["post-create"]
