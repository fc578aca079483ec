"""ansible/deploy.yml with the worker service deployed (Terraform output worker_service_name):
`--tags deploy` waits for both services and fails when either runs another image than the one
applied. Stand-ins for `terraform` and `aws` answer per service (no AWS here); the stack without
a worker is covered by tests/test_deploy_playbook.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.test_deploy_playbook import ANSIBLE_DIR, NEW_IMAGE, OLD_IMAGE, PLAYBOOK

pytestmark = pytest.mark.skipif(PLAYBOOK is None, reason="no ansible-playbook (bash scripts/check_infra.sh makes .venv-infra)")

FAKE_TERRAFORM = textwrap.dedent("""\
    #!PYTHON
    # terraform stand-in: init, output -json with a worker service
    import json, os, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_LOG"], "a") as log:
        log.write("terraform " + " ".join(args) + "\\n")
    if args[0] == "init":
        sys.exit(0)
    if args[:2] == ["output", "-json"]:
        print(json.dumps({"cluster_name": {"value": "mediaserver-staging"}, "service_name": {"value": "mediaserver"},
                          "worker_service_name": {"value": "mediaserver-worker"},
                          "service_url": {"value": "http://127.0.0.1:9"}}))
        sys.exit(0)
    sys.exit("unexpected terraform call: %s" % args)
    """)

FAKE_AWS = textwrap.dedent("""\
    #!PYTHON
    # aws stand-in: FAKE_SERVICES maps each service to [rollout state, image of its primary deployment]
    import json, os, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_LOG"], "a") as log:
        log.write("aws " + " ".join(args) + "\\n")
    services = json.loads(os.environ["FAKE_SERVICES"])
    if args[:3] == ["ecs", "wait", "services-stable"]:
        sys.exit(0)
    if args[:2] == ["ecs", "describe-services"]:
        name = args[args.index("--services") + 1]
        print(json.dumps(["arn:aws:ecs:eu-west-2:123456789012:task-definition/%s:7" % name, services[name][0]]))
        sys.exit(0)
    if args[:2] == ["ecs", "describe-task-definition"]:
        family = args[args.index("--task-definition") + 1].rsplit("/", 1)[1].split(":")[0]
        container = {"mediaserver": "gateway", "mediaserver-worker": "worker"}[family]
        query = args[args.index("--query") + 1]
        # the container the playbook asks for must be the service's own
        print(services[family][1] if "name=='%s'" % container in query else "None")
        sys.exit(0)
    sys.exit("unexpected aws call: %s" % args)
    """)


def deploy(tmp_path, services: dict[str, list[str]]) -> tuple[subprocess.CompletedProcess, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("terraform", FAKE_TERRAFORM), ("aws", FAKE_AWS)):
        path = bin_dir / name
        path.write_text(text.replace("PYTHON", sys.executable, 1))
        path.chmod(0o755)
    (tmp_path / "terraform").mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_LOG": str(tmp_path / "calls.log"),
           "FAKE_SERVICES": json.dumps(services), "ANSIBLE_NOCOLOR": "1"}
    result = subprocess.run(
        [PLAYBOOK, "deploy.yml", "--tags", "deploy", "-e", "mediaserver_environment=staging",
         "-e", "mediaserver_build_image=false", "-e", f"mediaserver_image={NEW_IMAGE}",
         "-e", f"mediaserver_terraform_dir={tmp_path / 'terraform'}"],
        cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=300)
    return result, (tmp_path / "calls.log").read_text()


def test_deploy_waits_for_the_worker_service_too(tmp_path):
    result, calls = deploy(tmp_path, {"mediaserver": ["COMPLETED", NEW_IMAGE], "mediaserver-worker": ["COMPLETED", NEW_IMAGE]})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "--services mediaserver mediaserver-worker" in calls  # one wait for both services
    assert "--services mediaserver-worker --query" in calls  # the worker's rollout is read too


def test_deploy_fails_when_the_worker_was_rolled_back(tmp_path):
    result, _ = deploy(tmp_path, {"mediaserver": ["COMPLETED", NEW_IMAGE], "mediaserver-worker": ["COMPLETED", OLD_IMAGE]})
    assert result.returncode != 0
    message = " ".join(result.stdout.split())
    assert f"the service mediaserver-worker runs {OLD_IMAGE}" in message
    assert "circuit breaker rolled it back" in message
