"""A trimmed copy of botocore's S3 data: only the operations the S3 store calls.

A botocore S3 client parses and keeps S3's whole service model (every operation and
shape) and the endpoint data of every AWS service: measured here, one client adds
14.9 MiB to the process's anonymous memory, and 3.5 MiB when it reads this trimmed
copy, about 11 MiB less in every gateway and worker process (a 512 MiB task).

`trimmed_data` makes the copy once per botocore version, in a child process so that
this process never parses the full files, and returns its folder; `client_session`
gives a botocore session that reads it. The endpoint data keeps every partition and
region but only the S3 service, and is read as botocore's own data (it is: a subset
of it), so endpoint resolution follows exactly the path it does untrimmed.
When the copy cannot be made (no writable folder, an unexpected botocore) the
session reads botocore's full data and the store works as before.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import botocore
import botocore.loaders
import botocore.session

log = logging.getLogger(__name__)

#: The S3 API operations the store calls (`S3Store._call` and its presigned GETs).
OPERATIONS = (
    "AbortMultipartUpload", "CompleteMultipartUpload", "CreateBucket", "CreateMultipartUpload",
    "DeleteObject", "DeleteObjects", "GetObject", "HeadBucket", "HeadObject", "ListObjectsV2",
    "PutObject", "UploadPart", "UploadPartCopy",
)
SERVICE = "s3"
_COMPLETE = "complete"  # written last: a folder without it is never used


def _reachable_shapes(shapes: dict[str, Any], roots: set[str]) -> set[str]:
    """Every shape name reachable from `roots` through members, list members and map keys/values."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        shape = shapes[name]
        stack.extend(shape[key]["shape"] for key in ("member", "key", "value") if key in shape)
        stack.extend(member["shape"] for member in shape.get("members", {}).values())
    return seen


def trim_service_model(model: dict[str, Any], operations: tuple[str, ...] = OPERATIONS) -> dict[str, Any]:
    """`model` with only `operations` and the shapes they reach (inputs, outputs, errors).

    Raises KeyError when an operation is not in the model."""
    kept = {name: model["operations"][name] for name in operations}
    roots = {op[key]["shape"] for op in kept.values() for key in ("input", "output") if key in op}
    roots |= {error["shape"] for op in kept.values() for error in op.get("errors", [])}
    reachable = _reachable_shapes(model["shapes"], roots)
    return dict(model, operations=kept, shapes={k: v for k, v in model["shapes"].items() if k in reachable})


def trim_endpoints(endpoints: dict[str, Any]) -> dict[str, Any]:
    """botocore's endpoint data with every partition and region, and only the S3 service."""
    return dict(endpoints, partitions=[
        dict(partition, services={k: v for k, v in partition["services"].items() if k == SERVICE})
        for partition in endpoints["partitions"]])


def write(folder: Path) -> None:
    """Write the trimmed data of the installed botocore into `folder` (which must not exist),
    check that a client made from it has every operation, then mark it complete."""
    loader = botocore.loaders.Loader()
    version = loader.determine_latest_version(SERVICE, "service-2")
    model_folder = folder / SERVICE / version
    model_folder.mkdir(parents=True)
    (model_folder / "service-2.json").write_text(
        json.dumps(trim_service_model(loader.load_service_model(SERVICE, "service-2", version))))
    (folder / "endpoints.json").write_text(json.dumps(trim_endpoints(loader.load_data("endpoints"))))
    client = client_session(str(folder)).create_client(SERVICE, region_name="us-east-1")
    missing = set(OPERATIONS) - set(client.meta.method_to_api_mapping.values())
    if missing:
        raise RuntimeError(f"the trimmed S3 model lacks {sorted(missing)}")
    (folder / _COMPLETE).write_text(botocore.__version__)


def trimmed_data(root: Path) -> str | None:
    """The folder of the trimmed data for the installed botocore under `root`, made now (in a
    child process) if it is not there yet; None when it cannot be made."""
    folder = root / f"botocore-{botocore.__version__}"
    if (folder / _COMPLETE).is_file():
        return str(folder)
    try:
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".trim-", dir=root))
    except OSError as exc:
        log.warning("S3 client data not trimmed (full botocore data used): %s", exc)
        return None
    try:
        made = scratch / "data"
        done = subprocess.run([sys.executable, "-m", "streaming.stores.s3_model", "--write", str(made)], capture_output=True, text=True,
                              timeout=120, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        if done.returncode != 0:
            log.warning("S3 client data not trimmed (full botocore data used): %s",
                        done.stderr.strip().splitlines()[-1:] or done.returncode)
            return None
        try:
            made.rename(folder)
        except OSError:  # another process made it first
            if not (folder / _COMPLETE).is_file():
                return None
        return str(folder)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("S3 client data not trimmed (full botocore data used): %s", exc)
        return None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class TrimmedDataLoader(botocore.loaders.Loader):
    """botocore's loader reading the trimmed copy in `folder` before its own data, and treating
    the copy as its own data (it is a subset of it), so endpoints resolve as they do untrimmed."""

    def __init__(self, folder: str) -> None:
        super().__init__(extra_search_paths=[folder])
        self._folder = os.path.join(folder, "")

    def is_builtin_path(self, path: str) -> bool:
        return super().is_builtin_path(path) or path.startswith(self._folder)


def client_session(data_path: str | None) -> botocore.session.Session:
    """A botocore session that reads the trimmed data in `data_path` (botocore's full data when None)."""
    session = botocore.session.Session()
    if data_path:
        session.register_component("data_loader", TrimmedDataLoader(data_path))
    return session


if __name__ == "__main__":
    # `--write FOLDER`: the child's work; `ROOT`: make the copy under ROOT (as the image build does)
    if sys.argv[1] == "--write":
        write(Path(sys.argv[2]))
    else:
        logging.basicConfig()
        sys.exit(0 if trimmed_data(Path(sys.argv[1])) else "the trimmed S3 client data could not be made")
