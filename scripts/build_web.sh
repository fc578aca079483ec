#!/usr/bin/env bash
# Build the upload page's assets (idempotent, quick when nothing changed):
#   1. make sure Node.js >= 20 and npm are on PATH (playwright-core needs Node 20; Debian 12's apt
#      has Node 18): when the node found is older or missing, Node $NODE_VERSION comes from the npm
#      registry (package node-linux-<arch>, a prebuilt binary, and npm itself) into .venv-node/,
#      bootstrapped with Debian's npm when there is no npm at all; it is linked into .venv/bin,
#      which scripts/test.sh puts first on PATH for the tests' Node clients;
#   2. `npm ci` in web/ when node_modules is missing or was installed from another package-lock.json;
#   3. copy the Uppy browser bundle (js + css) into gateway/static/vendor/ (git-ignored).
# The Docker image builds the same bundle in its own Node stage (Dockerfile).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WEB="$ROOT/web"
VENDOR="$ROOT/gateway/static/vendor"
NODE_MIN_MAJOR="${NODE_MIN_MAJOR:-20}"
# the version of the Dockerfile's web stage and of ci/agent.Dockerfile, with the npm it bundles
NODE_VERSION="22.21.1"
NPM_VERSION="10.9.4"
NODE_HOME="$ROOT/.venv-node"
VENV="${VENV:-$ROOT/.venv}"

node_major() {
  node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0
}

node_ok() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && [ "$(node_major)" -ge "$NODE_MIN_MAJOR" ]
}

apt_install() {
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing Debian packages: $*" >&2
    if [ -z "${APT_UPDATED:-}" ]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      export APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  else
    echo "please install Node.js >= $NODE_MIN_MAJOR with npm (or npm alone: this script then fetches Node $NODE_VERSION)" >&2
    exit 1
  fi
}

install_node_from_npm() {
  local arch
  case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) echo "no Node.js $NODE_VERSION package for $(uname -m): please install Node.js >= $NODE_MIN_MAJOR" >&2; exit 1 ;;
  esac
  echo "installing Node.js $NODE_VERSION and npm $NPM_VERSION from the npm registry into .venv-node" \
       "(found: $(node --version 2>/dev/null || echo 'no node'))" >&2
  local staging
  staging="$(mktemp -d)"
  # no install scripts: both packages are plain files
  npm install --prefix "$staging" --no-save --no-package-lock --ignore-scripts --no-audit --no-fund \
    --loglevel=error "node-linux-$arch@$NODE_VERSION" "npm@$NPM_VERSION"
  rm -rf "$NODE_HOME.tmp"
  mkdir -p "$NODE_HOME.tmp/bin" "$NODE_HOME.tmp/lib/node_modules"
  mv "$staging/node_modules/node-linux-$arch/bin/node" "$NODE_HOME.tmp/bin/node"
  mv "$staging/node_modules/npm" "$NODE_HOME.tmp/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$NODE_HOME.tmp/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$NODE_HOME.tmp/bin/npx"
  rm -rf "$staging" "$NODE_HOME"
  mv "$NODE_HOME.tmp" "$NODE_HOME"
}

if ! node_ok; then
  if [ -x "$NODE_HOME/bin/node" ] && [ "$("$NODE_HOME/bin/node" --version)" = "v$NODE_VERSION" ]; then
    export PATH="$NODE_HOME/bin:$PATH"
  else
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    install_node_from_npm
    export PATH="$NODE_HOME/bin:$PATH"
  fi
  node_ok || { echo "Node.js >= $NODE_MIN_MAJOR is still not usable: $(node --version 2>&1)" >&2; exit 1; }
  # the tests and scripts find node on PATH, where scripts/test.sh puts .venv/bin first
  if [ -d "$VENV/bin" ]; then
    for program in node npm npx; do
      ln -sfn "$NODE_HOME/bin/$program" "$VENV/bin/$program"
    done
  fi
fi

# node_modules is current when it was installed from this very package-lock.json
stamp="$WEB/node_modules/.installed-from-lock"
want="$(sha256sum "$WEB/package-lock.json" "$WEB/package.json" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing npm packages in web/ (node $(node --version))" >&2
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
