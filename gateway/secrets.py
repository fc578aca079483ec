"""Secrets at start-up: from the environment, SSM Parameter Store, or generated once on disk."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import boto3


def read_ssm_parameter(name: str, region: str) -> str:
    """The decrypted value of an SSM parameter (blocking; call at start-up)."""
    client = boto3.session.Session().client("ssm", region_name=region)
    return client.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]


def local_secret(data_dir: str | os.PathLike, name: str) -> str:
    """A random secret kept in DATA_DIR/<name> (created once, mode 0600)."""
    path = Path(data_dir) / name
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value
