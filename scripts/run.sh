#!/usr/bin/env bash
# Install the gateway into .venv and run it on embedded defaults:
# local object store and an embedded MongoDB wire server, data under ./data.
# Extra arguments go to `mediaserver serve` (e.g. --port 8080).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
"$VENV/bin/python" -m pip install -q -e "$ROOT"
cd "$ROOT"
exec "$VENV/bin/mediaserver" serve "$@"
