"""Prometheus metrics after real traffic, JSON logs, CloudWatch Embedded Metric Format records."""

from __future__ import annotations

import json
import re
import uuid

import jsonschema
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support import create_upload, patch, random_bytes

MiB = 1024 * 1024

# The CloudWatch Embedded Metric Format specification, as a JSON schema.
EMF_SCHEMA = {
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer", "minimum": 0},
                "CloudWatchMetrics": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "properties": {
                            "Namespace": {"type": "string", "minLength": 1, "maxLength": 1024},
                            "Dimensions": {"type": "array", "items": {
                                "type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 30}},
                            "Metrics": {"type": "array", "maxItems": 100, "items": {
                                "type": "object", "required": ["Name"],
                                "properties": {"Name": {"type": "string", "minLength": 1, "maxLength": 1024},
                                               "Unit": {"enum": ["Seconds", "Microseconds", "Milliseconds", "Bytes",
                                                                 "Kilobytes", "Megabytes", "Count", "Bytes/Second",
                                                                 "Count/Second", "Percent", "None"]}}}},
                        },
                    },
                },
            },
        }
    },
}


def traffic(gateway) -> dict:
    name = "obs" + uuid.uuid4().hex[:8]
    password = "watch-me-123"
    token = requests.post(gateway.url + "/api/auth/register", json={"username": name, "password": password}).json()["token"]
    data = random_bytes(6 * MiB, seed=50)
    url = create_upload(gateway, token, len(data))
    assert patch(url, token, 0, data).status_code == 204
    requests.post(gateway.url + "/api/media/upload", files={"file": ("a.txt", b"hello")}, headers={"Authorization": f"Bearer {token}"})
    requests.get(gateway.url + "/no/such/" + uuid.uuid4().hex)
    requests.head(gateway.files_url + uuid.uuid4().hex, headers={"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token}"})
    doomed = create_upload(gateway, token, 10)
    requests.delete(doomed, headers={"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token}"})
    return {"token": token, "password": password, "bytes": len(data) + 5}


def samples(text: str) -> dict[str, list]:
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def test_metrics_after_real_traffic(gateway):
    before = samples(requests.get(gateway.url + "/metrics").text)
    info = traffic(gateway)
    response = requests.get(gateway.url + "/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    found = samples(response.text)

    def total(name: str, source=found, **labels) -> float:
        return sum(s.value for s in source.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))

    assert total("mediaserver_tus_uploads_created_total") - total("mediaserver_tus_uploads_created_total", before) >= 3
    assert total("mediaserver_tus_uploads_finished_total") - total("mediaserver_tus_uploads_finished_total", before) >= 2
    assert total("mediaserver_tus_uploads_terminated_total") >= 1
    assert total("mediaserver_tus_received_bytes_total") - total("mediaserver_tus_received_bytes_total", before) >= info["bytes"]
    assert total("mediaserver_http_requests_total", route="/files/{id}", method="PATCH", status="204") >= 1
    assert total("mediaserver_http_requests_total", route="unmatched", status="404") >= 1
    assert total("mediaserver_http_request_duration_seconds_count", route="/api/auth/register") >= 1
    assert total("mediaserver_tus_uploads_in_progress") == 0
    assert total("mediaserver_store_parts_in_flight") == 0
    assert total("process_resident_memory_bytes") > 0
    if gateway.env["STORAGE_BACKEND"] == "s3":
        assert total("mediaserver_store_request_duration_seconds_count", operation="upload_part", outcome="ok") >= 1
    for series in found.values():
        for sample in series:
            for value in sample.labels.values():
                assert not re.search(r"[0-9a-f]{32}", value), f"an id in a label: {sample}"


def test_metrics_token_and_port(start_gateway):
    from tests.support import free_port

    port = free_port()
    gateway = start_gateway("local", METRICS_TOKEN="scrape-secret", METRICS_PORT=str(port))
    public = requests.get(gateway.url + "/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert public.status_code == 404, "with METRICS_PORT, the public port does not serve /metrics"
    assert requests.get(f"http://127.0.0.1:{port}/metrics").status_code == 401
    assert requests.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    separate = requests.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert separate.status_code == 200 and "mediaserver_http_requests_total" in separate.text
    assert requests.get(f"http://127.0.0.1:{port}/api/media").status_code == 404


def test_logs_are_json_with_emf_and_no_secrets(gateway):
    info = traffic(gateway)
    lines = gateway.log_path.read_text().splitlines()
    assert lines
    records = [json.loads(line) for line in lines]
    access = [r for r in records if r["logger"] == "mediaserver.access"]
    assert access and all(r["request_id"] and "status" in r and "route" in r for r in access)
    assert any(r["user_id"] not in ("-", None) for r in access), "user ids are logged"
    emf_records = [r for r in records if "_aws" in r]
    assert any(r.get("RequestLatency") is not None for r in emf_records)
    assert any(r.get("UploadBytes") for r in emf_records)
    for record in emf_records:
        jsonschema.validate(record, EMF_SCHEMA)
        for directive in record["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                assert all(isinstance(record[d], str) for d in dimension_set)
            for metric in directive["Metrics"]:
                assert isinstance(record[metric["Name"]], (int, float))
    text = "\n".join(lines)
    assert info["token"] not in text
    assert info["password"] not in text
    assert "Bearer" not in text
