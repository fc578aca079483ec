"""A gateway given a CPU ceiling (INGEST_CPU_LIMIT) paces upload bodies to keep under it: the
upload still arrives whole, the pacing shows in /metrics, and other requests are answered while
it runs. (How much this helps a HEAD's latency on a quota'd task is measured by
bench/head_latency.py, not asserted here.)"""

from __future__ import annotations

import threading

import requests

from tests.support import auth, create_upload, head, patch, random_bytes, sha256
from tests.test_observability import samples


def metric(gateway, name: str) -> float:
    return sum(sample.value for sample in samples(requests.get(gateway.url + "/metrics").text).get(name, []))


def test_bodies_are_paced_under_the_ceiling_and_arrive_whole(start_gateway, token):
    gateway = start_gateway("local", INGEST_CPU_LIMIT="0.05", PART_SIZE="5MiB")
    assert metric(gateway, "mediaserver_ingest_cpu_ceiling_cores") == 0.05
    data = random_bytes(24 * 1024 * 1024, seed=15)
    url = create_upload(gateway, token, len(data))
    answers: list[int] = []
    sender = threading.Thread(target=lambda: answers.append(patch(url, token, 0, data).status_code))
    sender.start()
    health = [requests.get(gateway.url + "/health", timeout=30).status_code for _ in range(5)]
    sender.join(120)
    assert answers == [204] and health == [200] * 5
    assert head(url, token).headers["Upload-Offset"] == str(len(data))
    assert metric(gateway, "mediaserver_ingest_paced_seconds") > 0
    described = requests.get(f"{gateway.url}/api/media/{url.rsplit('/', 1)[1]}", headers=auth(token)).json()
    assert described["sha256"] == sha256(data)


def test_off_means_no_ceiling(start_gateway):
    gateway = start_gateway("local", INGEST_CPU_LIMIT="off")
    assert metric(gateway, "mediaserver_ingest_cpu_ceiling_cores") == 0
    assert metric(gateway, "mediaserver_ingest_paced_seconds") == 0
