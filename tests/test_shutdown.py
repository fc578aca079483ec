"""Shutting down (SIGTERM, as ECS sends at every deploy) loses no received byte.

Health answers 503 at once and new requests are refused; a PATCH in flight goes on for up to
SHUTDOWN_TIMEOUT and is answered; one still running then is cut at a durable point with every
byte that arrived counted in its offset.
"""

from __future__ import annotations

import signal
import time

import requests

from tests.support import auth, create_upload, download, head, patch, random_bytes, raw_patch, read_status

MiB = 1024 * 1024


def _wait_for_exit(gateway, timeout: float = 60) -> int:
    assert gateway.process is not None
    return gateway.process.wait(timeout)


def test_a_patch_in_flight_finishes_within_the_timeout(start_gateway, token):
    gateway = start_gateway("local", PART_SIZE="5MiB", SHUTDOWN_TIMEOUT="20")
    data = random_bytes(12 * MiB + 3, seed=160)
    url = create_upload(gateway, token, len(data))
    sock = raw_patch(url, token, 0, len(data), data[: 7 * MiB])
    kept_alive = requests.Session()
    assert kept_alive.get(gateway.url + "/health", timeout=10).status_code == 200
    time.sleep(0.5)

    gateway.process.send_signal(signal.SIGTERM)
    draining = kept_alive.get(gateway.url + "/health", timeout=10)
    assert draining.status_code == 503 and draining.json()["status"] == "draining"
    refused = kept_alive.get(gateway.url + "/api/media", headers=auth(token), timeout=10)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"

    sock.sendall(data[7 * MiB :])  # the rest of the body, after SIGTERM
    assert read_status(sock) == 204
    sock.close()
    assert _wait_for_exit(gateway) == 0
    gateway.start()
    assert head(url, token).headers["Upload-Offset"] == str(len(data))
    assert download(url, token) == data


def test_a_patch_past_the_timeout_is_cut_with_every_received_byte_kept(start_gateway, token):
    gateway = start_gateway("local", PART_SIZE="5MiB", SHUTDOWN_TIMEOUT="1")
    data = random_bytes(12 * MiB + 3, seed=161)
    url = create_upload(gateway, token, len(data))
    sent = 7 * MiB + 12345  # one whole part and a tail that no part holds
    sock = raw_patch(url, token, 0, len(data), data[:sent])
    time.sleep(1)  # received by the gateway

    gateway.process.send_signal(signal.SIGTERM)
    assert _wait_for_exit(gateway) == 0
    sock.close()
    gateway.start()
    assert head(url, token).headers["Upload-Offset"] == str(sent), "every received byte is counted"
    assert patch(url, token, sent, data[sent:]).status_code == 204
    assert download(url, token) == data
