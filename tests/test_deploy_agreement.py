"""ci/check_agreement.py (run by scripts/check_infra.sh): passes on the repository, and catches
each kind of disagreement between the Dockerfile, docker-compose.yml, the ECS task definition,
gateway/config.py, the Jenkinsfile and its agent image, and the Ansible collections."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

FILES = ["Dockerfile", "docker-compose.yml", "gateway/config.py", "gateway/app.py", "Jenkinsfile",
         "ci/agent.Dockerfile", "ci/check_agreement.py", "ansible/deploy.yml", "ansible/requirements.yml"]


def run(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "ci" / "check_agreement.py"), str(root)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def copy(tmp_path) -> Path:
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "infra/terraform").mkdir(parents=True)
    for path in (ROOT / "infra/terraform").glob("*.tf"):
        shutil.copy(path, tmp_path / "infra/terraform" / path.name)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_the_repository_agrees():
    result = run(ROOT)
    assert result.returncode == 0, result.stderr
    assert "port 3000, health /health" in result.stdout


def test_the_copy_agrees(copy):
    result = run(copy)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("file", "old", "new", "complaint"), [
    ("docker-compose.yml", '"127.0.0.1:3000:3000"', '"127.0.0.1:3000:8080"', "publishes container ports ['8080']"),
    ("docker-compose.yml", 'PORT: "3000"', 'PORT: "8080"', "gateway PORT 8080 is not the Dockerfile's 3000"),
    ("docker-compose.yml", "3000/health'", "3000/healthz'", "health paths disagree"),
    ("docker-compose.yml", "LOG_FORMAT: json", "LOG_FORMAT: json\n      S3_PUBLIC_ENDPOINT: x", "S3_PUBLIC_ENDPOINT not settings"),
    ("docker-compose.yml", "mongo:7.0.14", "mongo:latest", "mongo's image mongo:latest is not pinned"),
    ("docker-compose.yml", "minio/mc:RELEASE.2025-04-16T18-13-26Z", "minio/mc", "is not pinned"),
    ("Dockerfile", "EXPOSE 3000", "EXPOSE 8080", "EXPOSE ['8080'] is not ENV PORT 3000"),
    ("Dockerfile", "%s/health'", "%s/healthz'", "health paths disagree"),
    ("Dockerfile", "LOG_FORMAT=json", "LOG_FORMAT=json \\\n    LOGFORMAT=json", "LOGFORMAT not settings"),
    ("infra/terraform/ecs.tf", '{ name = "LOG_FORMAT", value = "json" }', '{ name = "LOG_FMT", value = "json" }',
     "infra/terraform/ecs.tf: LOG_FMT not settings"),
    ("infra/terraform/ssm.tf", "JWT_SECRET  =", "JWT_SECRETS =", "JWT_SECRETS not settings"),
    ("infra/terraform/ecs.tf", "}/health'", "}/healthz'", "health paths disagree"),
    ("infra/terraform/alb.tf", 'path                = "/health"', 'path                = "/ping"', "health paths disagree"),
    ("infra/terraform/variables.tf", "default     = 3000", "default     = 8080", "is not the Dockerfile's 3000"),
    ("Jenkinsfile", "'/opt/ansible/bin/ansible-playbook'", "'.venv/bin/ansible-playbook'", "ansible"),
    ("Jenkinsfile", "filename 'agent.Dockerfile'", "filename 'missing.Dockerfile'", "is missing"),
    ("ci/agent.Dockerfile", "COPY --from=trivy /usr/local/bin/trivy /usr/local/bin/trivy\n", "", "does not provide trivy"),
    ("ansible/requirements.yml", "  - name: community.docker\n    version: \">=3.10.0\"\n", "",
     "deploy.yml uses ['community.docker', 'community.general'], requirements.yml declares ['community.general']"),
])
def test_each_disagreement_is_caught(copy, file, old, new, complaint):
    edit(copy / file, old, new)
    result = run(copy)
    assert result.returncode == 1, result.stdout
    assert complaint in result.stderr, result.stderr


def test_a_rollback_behind_terraforms_back_is_caught(copy):
    edit(copy / "Jenkinsfile", "    failure {\n", "    failure {\n      sh 'aws ecs update-service --force-new-deployment'\n")
    result = run(copy)
    assert result.returncode == 1 and "behind Terraform's back" in result.stderr


def test_jenkins_names_the_gateway_reads_are_caught(copy):
    edit(copy / "Jenkinsfile", "name: 'DEPLOY_ENVIRONMENT'", "name: 'ENVIRONMENT'")
    result = run(copy)
    assert result.returncode == 1 and "the gateways of the tests read" in result.stderr
