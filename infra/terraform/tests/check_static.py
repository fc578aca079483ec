"""Static checks of the Terraform stacks that need no terraform binary and no AWS account.

Run by scripts/check_infra.sh (python-hcl2 from .venv-infra). For each stack (infra/terraform and
infra/terraform/bootstrap) it checks that:
  - every var.X, local.X, data.T.N and resource T.N referenced is declared in the stack, and every
    variable, local and data source declared is used;
  - the stack's example.tfvars sets only declared variables and every variable without a default;
  - no secret can reach the state: no resource or data source that stores a secret value
    (aws_ssm_parameter, random_password, ...), no sensitive input variable;
and for the service stack that:
  - the state backend is S3 with locking and partial configuration (no bucket, key or region here);
  - the timeouts along a request's path are in order (timeouts.tf) and used where they apply:
    CloudFront keep-alive < ALB idle timeout < IDLE_CONNECTION_TIMEOUT; SHUTDOWN_TIMEOUT <
    stopTimeout <= 120 s;
  - the task's environment runs the gateway in production mode with the bucket's default encryption;
  - the processing queue redrives after PROCESSING_MAX_ATTEMPTS and hides a job for
    PROCESSING_VISIBILITY_TIMEOUT, the same variables the gateway's and the worker's environments
    use; the queues (the hook queue too) are encrypted; the worker runs `mediaserver worker` with
    the gateway's drain timeouts, in production mode, on Fargate Spot.
`terraform validate` and `terraform test` (tests/plan.tftest.hcl) check more when terraform is installed.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

import hcl2

ROOT = pathlib.Path(__file__).resolve().parent.parent  # infra/terraform
STACKS = [ROOT, ROOT / "bootstrap"]

# Types that keep a secret value in the state (or read one into it).
SECRET_RESOURCES = {"aws_ssm_parameter", "random_password", "random_string", "tls_private_key",
                    "aws_secretsmanager_secret_version", "aws_iam_access_key"}
SECRET_DATA = {"aws_ssm_parameter", "aws_ssm_parameters_by_path", "aws_secretsmanager_secret_version"}

NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
VAR_REF = re.compile(rf"(?<![\w.])var\.({NAME})")
LOCAL_REF = re.compile(rf"(?<![\w.])local\.({NAME})")
DATA_REF = re.compile(rf"(?<![\w.])data\.([a-z][a-z0-9_]*)\.({NAME})")
RESOURCE_REF = re.compile(rf"(?<![\w.])((?:aws|random|null|tls|time|archive)_[a-z0-9_]+)\.({NAME})")


def unwrap(value):
    """One attribute's value, whichever python-hcl2 flavour parsed it (lists of one, quoted strings)."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value


def blocks(parsed: dict, kind: str) -> list[dict]:
    found = parsed.get(kind, [])
    return found if isinstance(found, list) else [found]


def labelled(parsed: dict, kind: str):
    """(label, body) of `variable "x" {}` / `output "x" {}`; (type, name, body) of resources and data."""
    for block in blocks(parsed, kind):
        for first, inner in block.items():
            if first.startswith("__"):
                continue
            first = first.strip('"')
            if kind in ("resource", "data"):
                for name, body in inner.items():
                    if not name.startswith("__"):
                        yield first, name.strip('"'), body
            else:
                yield first, unwrap(inner)


class Stack:
    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.files = {p.name: hcl2.loads(p.read_text()) for p in sorted(path.glob("*.tf"))}
        self.text = {p.name: p.read_text() for p in sorted(path.glob("*.tf"))}
        self.variables: dict[str, dict] = {}
        self.locals: dict[str, object] = {}
        self.resources: dict[tuple[str, str], object] = {}
        self.data: dict[tuple[str, str], object] = {}
        self.terraform: list[dict] = []
        for parsed in self.files.values():
            for name, body in labelled(parsed, "variable"):
                self.variables[name] = body if isinstance(body, dict) else {}
            for block in blocks(parsed, "locals"):
                self.locals.update({k: unwrap(v) for k, v in block.items() if not k.startswith("__")})
            for rtype, name, body in labelled(parsed, "resource"):
                self.resources[(rtype, name)] = body
            for dtype, name, body in labelled(parsed, "data"):
                self.data[(dtype, name)] = body
            self.terraform += blocks(parsed, "terraform")

    def referencing_text(self) -> str:
        """Everything that can reference something, as text (moved blocks name old addresses)."""
        parts = []
        for parsed in self.files.values():
            parts.append(json.dumps({k: v for k, v in parsed.items() if k != "moved"}, default=str))
        return "\n".join(parts)


def check_stack(stack: Stack, errors: list[str]) -> None:
    rel = stack.path.relative_to(ROOT.parent.parent)
    text = stack.referencing_text()

    # declarations whose own name would count as a use are left out of the use scan
    used_vars = set(VAR_REF.findall(text))
    used_locals = set(LOCAL_REF.findall(text))
    used_data = set(DATA_REF.findall(text))
    used_resources = set(RESOURCE_REF.findall(text))

    for name in sorted(used_vars - stack.variables.keys()):
        errors.append(f"{rel}: var.{name} is referenced but not declared")
    for name in sorted(stack.variables.keys() - used_vars):
        errors.append(f"{rel}: variable {name} is declared but never used")
    for name in sorted(used_locals - stack.locals.keys()):
        errors.append(f"{rel}: local.{name} is referenced but not declared")
    for name in sorted(stack.locals.keys() - used_locals):
        errors.append(f"{rel}: local {name} is declared but never used")
    for dtype, name in sorted(used_data - stack.data.keys()):
        errors.append(f"{rel}: data.{dtype}.{name} is referenced but not declared")
    for dtype, name in sorted(stack.data.keys() - used_data):
        errors.append(f"{rel}: data source {dtype}.{name} is declared but never used")
    for rtype, name in sorted(used_resources - stack.resources.keys()):
        errors.append(f"{rel}: {rtype}.{name} is referenced but no such resource is declared")

    # no secret value can end up in the state
    for rtype, name in sorted(stack.resources):
        if rtype in SECRET_RESOURCES:
            errors.append(f"{rel}: resource {rtype}.{name} would keep a secret in the state; "
                          "create it outside Terraform and pass its name")
    for dtype, name in sorted(stack.data):
        if dtype in SECRET_DATA:
            errors.append(f"{rel}: data.{dtype}.{name} would read a secret into the state; use its name or ARN")
    for name, body in sorted(stack.variables.items()):
        if unwrap(body.get("sensitive")) is True:
            errors.append(f"{rel}: variable {name} is sensitive: secrets are passed by parameter name, never by value")

    # example.tfvars: only declared variables, and every required one
    example = stack.path / "example.tfvars"
    if not example.exists():
        errors.append(f"{rel}: example.tfvars is missing")
    else:
        given = {k for k in hcl2.loads(example.read_text()) if not k.startswith("__")}
        for name in sorted(given - stack.variables.keys()):
            errors.append(f"{rel}/example.tfvars sets {name}, which is not a variable")
        required = {n for n, body in stack.variables.items() if "default" not in body}
        for name in sorted(required - given):
            errors.append(f"{rel}/example.tfvars does not set the required variable {name}")


def check_service(stack: Stack, errors: list[str]) -> None:
    # remote state: S3 with locking, partial configuration
    backends = [b for t in stack.terraform for b in blocks(t, "backend")]
    s3 = [unwrap(b).get("s3") if isinstance(unwrap(b), dict) else None for b in backends]
    s3 = [b for b in s3 if b is not None]
    if len(s3) != 1:
        errors.append("infra/terraform: the state backend must be one `backend \"s3\"` block")
    else:
        backend = unwrap(s3[0]) or {}
        if unwrap(backend.get("use_lockfile")) is not True and "dynamodb_table" not in backend:
            errors.append("infra/terraform: the S3 backend must lock (use_lockfile = true or a DynamoDB table)")
        for key in ("bucket", "key", "region"):
            if key in backend:
                errors.append(f"infra/terraform: backend {key} belongs in -backend-config, not in the code")

    # timeouts in order, and used where they apply
    loc = stack.locals
    try:
        cf, alb, gw = (int(loc[k]) for k in ("cloudfront_origin_keepalive_timeout", "alb_idle_timeout",
                                              "gateway_idle_connection_timeout"))
        shutdown, stop = int(loc["gateway_shutdown_timeout"]), int(loc["container_stop_timeout"])
    except (KeyError, TypeError, ValueError) as exc:
        errors.append(f"infra/terraform/timeouts.tf: timeout locals missing or not numbers ({exc})")
    else:
        if not cf < alb < gw:
            errors.append(f"keep-alive out of order: CloudFront {cf} s < ALB {alb} s < gateway {gw} s must hold")
        if not shutdown < stop <= 120:
            errors.append(f"shutdown out of order: SHUTDOWN_TIMEOUT {shutdown} s < stopTimeout {stop} s <= 120 s must hold")
    wanted = {
        "alb.tf": [r"idle_timeout\s*=\s*local\.alb_idle_timeout\b"],
        "cdn.tf": [r"origin_keepalive_timeout\s*=\s*local\.cloudfront_origin_keepalive_timeout\b"],
        "ecs.tf": [
            r'name\s*=\s*"IDLE_CONNECTION_TIMEOUT",\s*value\s*=\s*tostring\(local\.gateway_idle_connection_timeout\)',
            r'name\s*=\s*"SHUTDOWN_TIMEOUT",\s*value\s*=\s*tostring\(local\.gateway_shutdown_timeout\)',
            r"stopTimeout\s*=\s*local\.container_stop_timeout\b",
            r'name\s*=\s*"ENVIRONMENT",\s*value\s*=\s*"production"',
            r'name\s*=\s*"S3_SSE",\s*value\s*=\s*""',
            r'name\s*=\s*"METRICS_PORT",\s*value\s*=\s*tostring\(var\.metrics_port\)',
            r'name\s*=\s*"PROCESSING_CONCURRENCY",\s*value\s*=\s*"0"',
            r'name\s*=\s*"PROCESSING_MAX_ATTEMPTS",\s*value\s*=\s*tostring\(var\.processing_max_attempts\)',
            r'name\s*=\s*"PROCESSING_VISIBILITY_TIMEOUT",\s*value\s*=\s*tostring\(var\.processing_visibility_timeout\)',
        ],
        # the queue redrives after the attempts the worker counts, and hides a job as long as it says
        "queue.tf": [
            r"maxReceiveCount\s*=\s*var\.processing_max_attempts\b",
            r"visibility_timeout_seconds\s*=\s*var\.processing_visibility_timeout\b",
            r"sqs_managed_sse_enabled\s*=",
            r"kms_master_key_id\s*=\s*var\.kms_key_arn\b",
        ],
        # the webhooks' queue: encrypted like the processing queues
        "hooks.tf": [
            r"sqs_managed_sse_enabled\s*=",
            r"kms_master_key_id\s*=\s*var\.kms_key_arn\b",
        ],
        "worker.tf": [
            r'command\s*=\s*\["mediaserver",\s*"worker"\]',
            r'name\s*=\s*"SHUTDOWN_TIMEOUT",\s*value\s*=\s*tostring\(local\.gateway_shutdown_timeout\)',
            r"stopTimeout\s*=\s*local\.container_stop_timeout\b",
            r'name\s*=\s*"ENVIRONMENT",\s*value\s*=\s*"production"',
            r'name\s*=\s*"S3_SSE",\s*value\s*=\s*""',
            r'name\s*=\s*"PROCESSING_MAX_ATTEMPTS",\s*value\s*=\s*tostring\(var\.processing_max_attempts\)',
            r'name\s*=\s*"PROCESSING_VISIBILITY_TIMEOUT",\s*value\s*=\s*tostring\(var\.processing_visibility_timeout\)',
            r'capacity_provider\s*=\s*"FARGATE_SPOT"',
        ],
    }
    for name, patterns in wanted.items():
        source = stack.text.get(name, "")
        for pattern in patterns:
            if not re.search(pattern, source):
                errors.append(f"infra/terraform/{name}: expected /{pattern}/")
    if ("aws_s3_bucket_server_side_encryption_configuration", "media") not in stack.resources:
        errors.append("infra/terraform: the media bucket needs default encryption (S3_SSE is empty)")


def main() -> int:
    errors: list[str] = []
    counts = []
    for path in STACKS:
        stack = Stack(path)
        check_stack(stack, errors)
        if path == ROOT:
            check_service(stack, errors)
        counts.append(f"{path.relative_to(ROOT.parent.parent)}: {len(stack.variables)} variables, "
                      f"{len(stack.locals)} locals, {len(stack.resources)} resources, {len(stack.data)} data sources")
    for line in counts:
        print(line)
    for error in errors:
        print(f"FAIL {error}")
    if errors:
        return 1
    print("references resolve, no secret in state, example.tfvars complete, backend and timeouts in order")
    return 0


if __name__ == "__main__":
    sys.exit(main())
