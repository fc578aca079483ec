"""ansible/deploy.yml run for real, against stand-ins for `terraform` and `aws` (no AWS here).

What the Jenkinsfile relies on: `--tags previous` writes the image Terraform's state holds (the
rollback target); `--tags deploy` fails when ECS rolled the new image back (circuit breaker) even
though the service is stable; `--tags verify` checks /health at Terraform's service_url.
Needs ansible-playbook: .venv-infra (made by scripts/check_infra.sh), or ANSIBLE_PLAYBOOK.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE_DIR = ROOT / "ansible"
NEW_IMAGE = "123456789012.dkr.ecr.eu-west-2.amazonaws.com/mediaserver:newnewnewnew"
OLD_IMAGE = "123456789012.dkr.ecr.eu-west-2.amazonaws.com/mediaserver:oldoldoldold"


def find_playbook() -> str | None:
    for candidate in (os.environ.get("ANSIBLE_PLAYBOOK"), str(ROOT / ".venv-infra" / "bin" / "ansible-playbook"),
                      "/opt/ansible/bin/ansible-playbook"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


PLAYBOOK = find_playbook()
pytestmark = pytest.mark.skipif(PLAYBOOK is None, reason="no ansible-playbook (bash scripts/check_infra.sh makes .venv-infra)")

FAKE_TERRAFORM = textwrap.dedent("""\
    #!PYTHON
    # terraform stand-in: init, show -json (the state in $FAKE_STATE), output -json
    import json, os, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_LOG"], "a") as log:
        log.write("terraform " + " ".join(args) + "\\n")
    if args[0] == "init":
        sys.exit(0)
    if args[:2] == ["show", "-json"]:
        print(open(os.environ["FAKE_STATE"]).read())
        sys.exit(0)
    if args[:2] == ["output", "-json"]:
        print(json.dumps({"cluster_name": {"value": "mediaserver-staging"}, "service_name": {"value": "mediaserver"},
                          "service_url": {"value": os.environ["FAKE_SERVICE_URL"]}}))
        sys.exit(0)
    sys.exit("unexpected terraform call: %s" % args)
    """)

FAKE_AWS = textwrap.dedent("""\
    #!PYTHON
    # aws stand-in: ecs wait services-stable, describe-services, describe-task-definition
    import json, os, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_LOG"], "a") as log:
        log.write("aws " + " ".join(args) + "\\n")
    if args[:3] == ["ecs", "wait", "services-stable"]:
        sys.exit(0)
    if args[:2] == ["ecs", "describe-services"]:
        print(json.dumps(["arn:aws:ecs:eu-west-2:123456789012:task-definition/mediaserver-staging:7",
                          os.environ["FAKE_ROLLOUT"]]))
        sys.exit(0)
    if args[:2] == ["ecs", "describe-task-definition"]:
        print(os.environ["FAKE_RUNNING_IMAGE"])
        sys.exit(0)
    sys.exit("unexpected aws call: %s" % args)
    """)


def state_with_image(image: str) -> dict:
    definitions = [{"name": "gateway", "image": image, "essential": True}]
    return {"format_version": "1.0", "values": {"root_module": {"resources": [
        {"address": "aws_s3_bucket.media", "values": {"bucket": "media"}},
        {"address": "aws_ecs_task_definition.gateway", "values": {"container_definitions": json.dumps(definitions)}},
    ]}}}


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = json.dumps({"status": "ok", "version": "0.1.0"}).encode()
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fakes(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("terraform", FAKE_TERRAFORM), ("aws", FAKE_AWS)):
        path = bin_dir / name
        path.write_text(text.replace("PYTHON", sys.executable, 1))
        path.chmod(0o755)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    terraform_dir = tmp_path / "terraform"
    terraform_dir.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "FAKE_LOG": str(tmp_path / "calls.log"), "FAKE_STATE": str(tmp_path / "state.json"),
           "FAKE_SERVICE_URL": f"http://127.0.0.1:{server.server_address[1]}",
           "FAKE_ROLLOUT": "COMPLETED", "FAKE_RUNNING_IMAGE": NEW_IMAGE, "ANSIBLE_NOCOLOR": "1"}
    yield tmp_path, terraform_dir, env
    server.shutdown()


def playbook(env: dict, terraform_dir: Path, tags: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PLAYBOOK, "deploy.yml", "--tags", tags, "-e", "mediaserver_environment=staging",
         "-e", "mediaserver_build_image=false", "-e", f"mediaserver_image={NEW_IMAGE}",
         "-e", f"mediaserver_terraform_dir={terraform_dir}", "-e", "mediaserver_health_delay=0", *extra],
        cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=300)


def test_previous_writes_the_image_terraform_state_holds(fakes):
    tmp_path, terraform_dir, env = fakes
    (tmp_path / "state.json").write_text(json.dumps(state_with_image(OLD_IMAGE)))
    target = tmp_path / "previous-image.txt"
    result = playbook(env, terraform_dir, "previous", "-e", f"mediaserver_previous_image_file={target}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert target.read_text().strip() == OLD_IMAGE
    calls = (tmp_path / "calls.log").read_text()
    assert "-backend-config=" in calls and "staging.s3.tfbackend" in calls  # this environment's state
    assert "terraform show -json" in calls and "aws" not in calls  # reads, never applies


def test_previous_on_an_empty_state_is_empty(fakes):
    tmp_path, terraform_dir, env = fakes
    (tmp_path / "state.json").write_text(json.dumps({"format_version": "1.0"}))
    target = tmp_path / "previous-image.txt"
    result = playbook(env, terraform_dir, "previous", "-e", f"mediaserver_previous_image_file={target}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert target.read_text().strip() == ""


def test_deploy_and_verify_pass_when_ecs_runs_the_applied_image(fakes):
    tmp_path, terraform_dir, env = fakes
    result = playbook(env, terraform_dir, "deploy,verify")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"({NEW_IMAGE}) is healthy" in result.stdout
    assert "terraform show" not in (tmp_path / "calls.log").read_text()  # `previous` only when asked


def test_deploy_fails_when_the_circuit_breaker_rolled_back(fakes):
    tmp_path, terraform_dir, env = fakes
    env["FAKE_RUNNING_IMAGE"] = OLD_IMAGE  # stable, but on the old revision
    result = playbook(env, terraform_dir, "deploy")
    assert result.returncode != 0
    assert "circuit breaker rolled it back" in result.stdout


def test_deploy_fails_while_the_rollout_failed(fakes):
    tmp_path, terraform_dir, env = fakes
    env["FAKE_ROLLOUT"] = "FAILED"
    result = playbook(env, terraform_dir, "deploy")
    assert result.returncode != 0
    assert "rollout FAILED" in " ".join(result.stdout.split())


@pytest.mark.parametrize("image", ["123456789012.dkr.ecr.eu-west-2.amazonaws.com/mediaserver:latest",
                                   "123456789012.dkr.ecr.eu-west-2.amazonaws.com/mediaserver:"])
def test_a_mutable_or_missing_tag_is_refused_before_anything_runs(fakes, image):
    tmp_path, terraform_dir, env = fakes
    result = playbook(env, terraform_dir, "terraform", "-e", f"mediaserver_image={image}")
    assert result.returncode != 0
    assert "is no immutable image" in result.stdout
    assert not (tmp_path / "calls.log").exists()  # neither terraform nor aws was called
