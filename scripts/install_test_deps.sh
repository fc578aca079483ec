#!/usr/bin/env bash
# System and Node packages the test suite needs beyond Python (idempotent).
#   - Debian packages in APT_PACKAGES, each installed only when its program is missing
#   - the npm packages of web/ (Uppy, tus-js-client, playwright-core, and axe-core for the page's
#     accessibility scan in tests/test_browser.py) and the Uppy bundle in gateway/static/vendor/ (scripts/build_web.sh,
#     which also brings Node.js >= 20 from the npm registry where the system's node is older,
#     e.g. Debian 12's Node 18, and links it into .venv/bin for the tests)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# "package:program that proves it is installed"; add more here (one apt-get call installs them all)
APT_PACKAGES="chromium:/usr/bin/chromium"

missing=()
for entry in $APT_PACKAGES; do
  package="${entry%%:*}"
  program="${entry#*:}"
  if [ "$program" = "${program#/}" ]; then
    command -v "$program" >/dev/null 2>&1 || missing+=("$package")
  else
    [ -x "$program" ] || missing+=("$package")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing Debian packages: ${missing[*]}" >&2
    if [ -z "${APT_UPDATED:-}" ]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      export APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "please install the Debian packages: ${missing[*]} (browser tests will be skipped)" >&2
  fi
fi

bash "$ROOT/scripts/build_web.sh"
