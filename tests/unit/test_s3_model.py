"""The trimmed botocore S3 data: complete for what the store calls, made once, optional."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import botocore.loaders
from botocore import xform_name

from streaming.stores import s3 as s3_module
from streaming.stores.s3_model import OPERATIONS, client_session, trim_endpoints, trim_service_model, trimmed_data


def store_operations() -> set[str]:
    """The operation names S3Store passes to `_call` or `generate_presigned_url`, read from its source."""
    tree = ast.parse(Path(s3_module.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("_call", "generate_presigned_url")
                and node.args and isinstance(node.args[0], ast.Constant)):
            names.add(node.args[0].value)
    return names


def test_every_operation_the_store_calls_is_kept():
    called = store_operations()
    assert {"upload_part", "complete_multipart_upload", "get_object", "delete_objects"} <= called
    assert called <= {xform_name(name) for name in OPERATIONS}


def test_the_trimmed_model_is_closed_and_holds_only_the_operations():
    full = botocore.loaders.Loader().load_service_model("s3", "service-2")
    trimmed = trim_service_model(full)
    assert set(trimmed["operations"]) == set(OPERATIONS)
    assert len(trimmed["shapes"]) < len(full["shapes"]) / 2
    for shape in trimmed["shapes"].values():  # every reference resolves inside the copy
        refs = [shape[key]["shape"] for key in ("member", "key", "value") if key in shape]
        refs += [member["shape"] for member in shape.get("members", {}).values()]
        assert all(ref in trimmed["shapes"] for ref in refs)
    # a shape the store's calls never reach is gone
    assert "PutBucketLifecycleConfigurationRequest" not in trimmed["shapes"]


def test_endpoints_keep_every_region_of_s3_and_no_other_service():
    full = botocore.loaders.Loader().load_data("endpoints")
    trimmed = trim_endpoints(full)
    assert [p["partition"] for p in trimmed["partitions"]] == [p["partition"] for p in full["partitions"]]
    for before, after in zip(full["partitions"], trimmed["partitions"]):
        assert after["regions"] == before["regions"]
        assert set(after["services"]) <= {"s3"}
        assert after["services"].get("s3") == before["services"].get("s3")


def presigned_base(client) -> str:
    return client.generate_presigned_url("get_object", Params={"Bucket": "some-bucket", "Key": "k"}).split("?")[0]


def test_made_once_then_read(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    folder = trimmed_data(tmp_path)
    assert folder is not None
    stamp = Path(folder) / "complete"
    made = stamp.stat().st_mtime_ns
    assert trimmed_data(tmp_path) == folder and stamp.stat().st_mtime_ns == made
    assert [p.name for p in tmp_path.iterdir()] == [Path(folder).name]  # no scratch left
    client = client_session(folder).create_client("s3", region_name="eu-west-2")
    assert set(client.meta.method_to_api_mapping.values()) == set(OPERATIONS)
    # endpoints resolve exactly as with botocore's own data, in every partition
    for region in ("eu-west-2", "us-east-1", "cn-north-1", "us-gov-west-1"):
        trimmed, full = (client_session(data).create_client("s3", region_name=region) for data in (folder, None))
        assert trimmed.meta.endpoint_url == full.meta.endpoint_url
        assert presigned_base(trimmed) == presigned_base(full)
    assert json.loads((Path(folder) / "endpoints.json").read_text())["partitions"]


def test_unwritable_root_falls_back_to_the_full_data(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert trimmed_data(blocker / "cache") is None
    assert "full botocore data used" in caplog.text
