#!/usr/bin/env bash
# Install everything the tests need and run the whole suite.
# The tests start their own S3 (moto) and MongoDB (nx-27017) servers on loopback
# unless TEST_S3_ENDPOINT_URL / TEST_MONGODB_URI name real ones (see README).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
# pip runs only when setup.py or requirements.lock changed since the last install (bootstrap.sh)
if install_needed test; then
  pip_quietly test "$VENV/bin/python" -m pip install -q -e ".[test]"
fi
# ffmpeg/ffprobe for video processing; chromium and the npm packages for client tests
command -v ffprobe >/dev/null 2>&1 || apt_install ffmpeg
bash scripts/install_test_deps.sh
export PATH="$VENV/bin:$PATH"

status=0
# static checks of the deployment files first, so the test run's summary is the last line
bash scripts/check_infra.sh || status=$?
"$VENV/bin/python" -m pytest "$@" || status=$?
exit $status
