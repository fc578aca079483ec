#!/usr/bin/env bash
# Build the upload page's assets (idempotent, quick when nothing changed):
#   1. install Node.js and npm from Debian when npm is missing;
#   2. `npm ci` in web/ when node_modules is missing or older than package-lock.json;
#   3. copy the Uppy browser bundle (js + css) into gateway/static/vendor/ (git-ignored).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WEB="$ROOT/web"
VENDOR="$ROOT/gateway/static/vendor"

if ! command -v npm >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing Debian packages: nodejs npm" >&2
    if [ -z "${APT_UPDATED:-}" ]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      export APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  else
    echo "npm is missing: please install Node.js and npm" >&2
    exit 1
  fi
fi

# node_modules is current when it was installed from this very package-lock.json
stamp="$WEB/node_modules/.installed-from-lock"
want="$(sha256sum "$WEB/package-lock.json" "$WEB/package.json" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing npm packages in web/" >&2
  (cd "$WEB" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
fi

mkdir -p "$VENDOR"
for file in uppy.min.js uppy.min.css; do
  source="$WEB/node_modules/uppy/dist/$file"
  if ! cmp -s "$source" "$VENDOR/$file"; then
    cp "$source" "$VENDOR/$file.tmp"
    mv "$VENDOR/$file.tmp" "$VENDOR/$file"
  fi
done
