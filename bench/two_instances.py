"""Two gateway instances sharing S3 (moto) and MongoDB (nx-27017) behind a round-robin proxy.

Prints, for one invocation:
  1. tuspy uploads (chunk_size 5 MiB) through a proxy that sends each request to the other
     instance than the one before: how many are byte-identical, and how the PATCHes split
     between the instances;
  2. hand-written PATCHes of random sizes (not multiples of the part size, so each
     instance continues from the tail the other one stored), the same way;
  3. two simultaneous PATCHes of the same bytes on one upload, one to each instance,
     overlapping in time: what each got (one 204, the other 409 or 423 or a wait) and
     whether the final bytes are identical.

Usage: python bench/two_instances.py [--trials 10] [--size 23MiB] [--seed 1] [-v]
"""

from __future__ import annotations

import argparse
import collections
import io
import itertools
import random
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tusclient import client as tus_client  # noqa: E402

from bench.fault_proxy import HttpProxy, Request  # noqa: E402
from bench.faults import (  # noqa: E402
    MiB, Stack, StreamedPatch, call, create, download_sha256, head_offset, mib, patch, payload, resume, sha256,
)
from gateway.config import _size  # noqa: E402
from tests.support import free_port  # noqa: E402


class RoundRobinProxy(HttpProxy):
    """Sends each request to the next backend in turn (per request, not per connection)."""

    def __init__(self, backends: list[str]) -> None:
        super().__init__(backends)
        self._turn = itertools.count()
        self._turn_lock = threading.Lock()

    def pick(self, request: Request) -> int:
        with self._turn_lock:
            return next(self._turn) % len(self.upstreams)

    def label(self, request: Request) -> str:
        return request.method


def tuspy_uploads(proxy: RoundRobinProxy, token: str, trials: int, size: int, rng: random.Random, verbose: bool) -> bool:
    proxy.reset_stats()
    identical = 0
    for trial in range(trials):
        length = rng.randrange(size // 2, size + 1)
        data = payload(length, rng.randrange(1 << 30))
        client = tus_client.TusClient(proxy.url + "/files/", headers={"Authorization": f"Bearer {token}"})
        uploader = client.uploader(file_stream=io.BytesIO(data), chunk_size=5 * MiB,
                                   metadata={"filename": f"tuspy-{trial}.bin"})
        try:
            uploader.upload()
            same = download_sha256(uploader.url, token) == sha256(data)
        except Exception as exc:  # noqa: BLE001 - reported, counted as a failure
            print(f"   tuspy trial {trial}: {type(exc).__name__}: {exc}")
            same = False
        identical += same
        if verbose:
            print(f"   tuspy trial {trial:2}: {length:>9} bytes {'identical' if same else 'DIFFERENT'}")
        if uploader.url:
            call("DELETE", uploader.url, token)
    stats = proxy.stats()
    print(f"1. tuspy, chunk_size 5 MiB, through the round-robin proxy: {identical}/{trials} byte-identical")
    print(f"   requests per instance: {dict(sorted(stats['per_upstream'].items()))}; PATCHes per instance: "
          f"{dict(sorted(stats['routed'].get('PATCH', {}).items()))}")
    return identical == trials


def path_of(url: str) -> str:
    return url[url.index("/files/"):]


def hand_patches(proxy: RoundRobinProxy, instances: list[str], token: str, trials: int, size: int, part_size: int,
                 rng: random.Random, verbose: bool) -> bool:
    proxy.reset_stats()
    identical = 0
    patches = 0
    for trial in range(trials):
        length = rng.randrange(size // 2, size + 1)
        data = payload(length, rng.randrange(1 << 30))
        url = create(proxy.url, token, length)
        offset = 0
        ok = True
        while offset < length:
            piece = min(length - offset, rng.randrange(1, 2 * part_size))
            answer = patch(url, token, offset, memoryview(data)[offset : offset + piece])
            patches += 1
            if answer.status != 204 or int(answer.headers["Upload-Offset"]) != offset + piece:
                print(f"   trial {trial}: PATCH at {offset} answered {answer.label}")
                ok = False
                break
            offset += piece
            seen = [head_offset(base + path_of(url), token) for base in instances]  # asked directly
            if seen != [offset, offset]:
                print(f"   trial {trial}: after a PATCH to {offset} the instances' HEADs say {seen}")
                ok = False
                break
        same = ok and download_sha256(url, token) == sha256(data)
        identical += same
        if verbose:
            print(f"   hand trial {trial:2}: {length:>9} bytes {'identical' if same else 'DIFFERENT'}")
        call("DELETE", url, token)
    stats = proxy.stats()
    print(f"2. hand-written PATCHes of 1 B..{mib(2 * part_size)} alternating between instances: "
          f"{identical}/{trials} byte-identical ({patches} PATCHes)")
    print(f"   PATCHes per instance: {dict(sorted(stats['routed'].get('PATCH', {}).items()))}; every PATCH "
          f"was followed by a HEAD to each instance directly, which agreed on the offset")
    return identical == trials


def simultaneous(instances: list[str], token: str, trials: int, size: int, rng: random.Random, verbose: bool) -> bool:
    outcomes: collections.Counter[str] = collections.Counter()
    pairs: collections.Counter[str] = collections.Counter()
    identical = 0
    double_success = 0
    for trial in range(trials):
        data = payload(size, rng.randrange(1 << 30))
        url = create(instances[0], token, size)
        path = path_of(url)
        rate = rng.choice([None, 8 * MiB, 16 * MiB])  # bytes per second of each client
        delay = rng.uniform(0.0, 1.0)
        first = StreamedPatch(instances[0] + path, token, 0, data, rate=rate).start()
        time.sleep(delay)
        second = StreamedPatch(instances[1] + path, token, 0, data, rate=rate).start()
        answers = [first.join(120), second.join(120)]
        labels = sorted(a.label for a in answers)
        for label in labels:
            outcomes[label] += 1
        pairs[" + ".join(labels)] += 1
        if sum(1 for a in answers if a.status == 204) > 1:
            double_success += 1
        finished = resume(url, token, data)
        same = finished.status == 204 and download_sha256(url, token) == sha256(data)
        identical += same
        if verbose:
            print(f"   race trial {trial:2}: rate {rate and mib(rate)}/s, second {delay:.2f}s later: {labels} -> "
                  f"{'identical' if same else 'DIFFERENT'}")
        call("DELETE", url, token)
    print(f"3. two simultaneous PATCHes of the same {mib(size)} on one upload, one per instance: "
          f"{identical}/{trials} final files byte-identical; both answered 204 in {double_success} trials")
    print("   answer pairs: " + ", ".join(f"{n} x [{k}]" for k, n in pairs.most_common()))
    return identical == trials and double_success == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--size", default="23MiB")
    parser.add_argument("--part-size", default="5MiB")
    parser.add_argument("--lease-wait", default="2", help="LEASE_WAIT of both instances (seconds)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    size, part_size = _size(args.size), _size(args.part_size)
    rng = random.Random(args.seed)
    with Stack() as stack:
        env = stack.env(PART_SIZE=str(part_size), LEASE_TTL="3", LEASE_WAIT=args.lease_wait)
        first = stack.gateway(env)
        second = stack.gateway(dict(env, PORT=str(free_port())))
        token = stack.token("two")
        print(f"two instances {first.url} and {second.url}; shared MongoDB database {env['MONGODB_DB']} and "
              f"S3 bucket {env['S3_BUCKET']}; part size {mib(part_size)}; LEASE_WAIT {args.lease_wait} s")
        with RoundRobinProxy([first.url, second.url]) as proxy:
            results = [
                tuspy_uploads(proxy, token, args.trials, size, rng, args.verbose),
                hand_patches(proxy, [first.url, second.url], token, args.trials, size, part_size, rng, args.verbose),
            ]
        results.append(simultaneous([first.url, second.url], token, args.trials, size, rng, args.verbose))
    print("summary: " + ("PASS" if all(results) else "FAIL"))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
