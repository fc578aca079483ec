# Sourced by run.sh and test.sh: make .venv; install_needed/pip_quietly install the project into it.
# Needs only python3 (3.11+); installs Debian's venv support when it is missing.
# Installs only when something changed: a stamp file in the venv per install mode holds a hash of
# setup.py, requirements.lock, the mode and the Python version; when it matches, pip is not run
# at all, so a second run starts in a few seconds. pip's output goes to .venv/pip-install.log and
# is shown only when the install fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$ROOT/.venv}"

apt_install() {
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    if [ -z "${APT_UPDATED:-}" ]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      export APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  else
    echo "please install: $*" >&2
    return 1
  fi
}

# install_needed EXTRAS: whether `pip install -e ".[EXTRAS]"` has to run (true unless this very
# install was done before: same setup.py, requirements.lock, extras and Python)
install_stamp() {
  echo "$VENV/.installed-${1//,/-}"
}
install_wanted() {
  (cd "$ROOT" && { cat setup.py requirements.lock 2>/dev/null; echo "extras=$1"; "$VENV/bin/python" -VV; } | sha256sum | cut -d' ' -f1)
}
install_needed() {
  local stamp
  stamp="$(install_stamp "$1")"
  ! { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(install_wanted "$1")" ] && [ -x "$VENV/bin/mediaserver" ]; }
}
# pip_quietly EXTRAS COMMAND...: upgrade pip, run COMMAND (a pip install) with its output in
# .venv/pip-install.log (shown only when it fails), then stamp EXTRAS as installed
pip_quietly() {
  local extras="$1" log="$VENV/pip-install.log"
  shift
  echo "installing the gateway and its Python packages ($extras) into $VENV (log: $log)" >&2
  rm -f "$(install_stamp "$extras")"
  if ! { "$VENV/bin/python" -m pip install --upgrade pip && "$@"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "pip install failed; the whole output is in $log" >&2
    return 1
  fi
  install_wanted "$extras" >"$(install_stamp "$extras")"
}

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required")'
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    apt_install python3-venv
    "$PYTHON" -m venv "$VENV"
  fi
fi
