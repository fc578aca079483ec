#!/usr/bin/env bash
# System and Node packages the test suite needs beyond Python (idempotent).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
