"""ENVIRONMENT=production refuses to start on the development fallbacks, with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import ROOT, free_port


def test_production_without_mongodb_or_secret_does_not_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "JWT_SECRET")}
    env.update(ENVIRONMENT="production", DATA_DIR=str(tmp_path), PORT=str(free_port()), HOST="127.0.0.1",
               PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "gateway", "serve"], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "ENVIRONMENT=production needs MONGODB_URI" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "metadata.sqlite").exists(), "no embedded MongoDB was started"
    assert not (tmp_path / "jwt-secret").exists(), "no secret was generated"
