"""Logging: one JSON object per line on stdout (for CloudWatch), or plain text."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from gateway.base import request_id_var, user_id_var

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line with time, level, logger, message, request and user ids and extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id_var.get(),
            "user_id": user_id_var.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and (not key.startswith("_") or key == "_aws"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str, fmt: str) -> None:
    """Send every log record to stdout in `fmt` ('json' or 'text') at `level`."""
    handler = logging.StreamHandler(sys.stdout)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def emf(namespace: str, dimensions: dict[str, str], metrics: dict[str, tuple[float, str]]) -> dict[str, Any]:
    """Fields that make a JSON log line a CloudWatch Embedded Metric Format record.

    `metrics` maps a metric name to (value, unit); `dimensions` become top-level
    fields and the metric's dimension set. Empty when `namespace` is empty.
    """
    if not namespace:
        return {}
    fields: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [list(dimensions)],
                "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()],
            }],
        },
        **dimensions,
    }
    fields.update({name: value for name, (value, _) in metrics.items()})
    return fields
