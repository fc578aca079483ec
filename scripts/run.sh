#!/usr/bin/env bash
# Install the gateway into .venv and run it on embedded defaults:
# local object store and an embedded MongoDB wire server, data under ./data.
# Extra arguments go to `mediaserver serve` (e.g. --port 8080).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
# embedded: the MongoDB wire server used when MONGODB_URI is empty; cli: `mediaserver upload`
# (pip runs only when setup.py or requirements.lock changed since the last install: bootstrap.sh)
if install_needed embedded,cli; then
  pip_quietly embedded,cli "$VENV/bin/python" -m pip install -q -e "$ROOT[embedded,cli]"
fi
# ffmpeg/ffprobe make video thumbnails; without them videos are stored but marked failed
command -v ffprobe >/dev/null 2>&1 || apt_install ffmpeg || echo "ffmpeg is missing: video processing will fail" >&2
[ -f "$ROOT/scripts/build_web.sh" ] && bash "$ROOT/scripts/build_web.sh"
cd "$ROOT"
exec "$VENV/bin/mediaserver" serve "$@"
