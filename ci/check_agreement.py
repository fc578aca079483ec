"""Static agreement of the deployment files (run by scripts/check_infra.sh; no Docker, no AWS).

  port       Dockerfile (ENV PORT, EXPOSE, HEALTHCHECK), docker-compose.yml (gateway PORT, published
             port, healthcheck) and infra/terraform (PORT, the load balancer's container port, the
             container health check) name one container port;
  health     the Dockerfile's HEALTHCHECK, compose's healthcheck, the task definition's healthCheck
             and the ALB target group's health check use one path, and the gateway serves it;
  env        every environment name the Dockerfile, compose's gateway and the task definitions
             (environment, with the locals it reads, and secrets; the gateway's and the worker's) set is a setting of
             gateway/config.py (`option("NAME"`), except the few read by Python and boto3
             themselves (LIBRARY_ENV);
  worker     a task definition with WORKER_PORT has its health check on that port, at a path
             `mediaserver worker` serves (gateway/worker_cli.py);
  images     compose's images carry pinned tags (no `latest`, no bare major);
  jenkins    the Jenkinsfile runs in ci/agent.Dockerfile, which provides every tool it calls, and
             calls Ansible from the venv the agent installs it in;
  ansible    the collections ansible/deploy.yml uses are those ansible/requirements.yml declares.

Usage: python ci/check_agreement.py [ROOT]   (exit 1 with every disagreement listed)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

# read by the Python interpreter or boto3, not by gateway/config.py
LIBRARY_ENV = {"PYTHONUNBUFFERED", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
URL = re.compile(r"https?://[^/'\"\s]+?(?::(\d+|%s|\$\{[^}]+\}))?(/[\w/.-]*)")


class Checks:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.failures: list[str] = []

    def text(self, relative: str) -> str:
        return (self.root / relative).read_text(encoding="utf-8")

    def expect(self, ok: bool, message: str) -> bool:
        if not ok:
            self.failures.append(message)
        return ok


# -- the Dockerfile ------------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the last stage, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            if word.upper() == "FROM":
                instructions = []  # a new stage: only the final one is the image
            instructions.append((word.upper(), rest.strip()))
    return instructions


def dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in instructions:
        if word == "ENV":
            for name, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|\S*)", rest):
                env[name] = value.strip('"')
    return env


# -- Terraform (raw text: container_definitions is a jsonencode() expression) --------------

def balanced(text: str, start: int) -> str:
    """The bracketed expression opening at text[start] ((, [ or {), quotes respected."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack, index, quote = [], start, False
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == '"':
                quote = False
        elif char == '"':
            quote = True
        elif char in pairs:
            stack.append(pairs[char])
        elif stack and char == stack[-1]:
            stack.pop()
            if not stack:
                return text[start:index + 1]
        index += 1
    raise ValueError("unbalanced expression")


def terraform_texts(root: Path) -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8") for path in sorted((root / "infra/terraform").glob("*.tf"))}


def variable_default(texts: dict[str, str], name: str) -> str | None:
    for text in texts.values():
        match = re.search(r'variable\s+"%s"\s*\{' % re.escape(name), text)
        if match:
            block = balanced(text, match.end() - 1)
            default = re.search(r"\bdefault\s*=\s*\"?([^\"\n]+)\"?", block)
            return default.group(1).strip() if default else None
    return None


def local_expression(texts: dict[str, str], name: str) -> str | None:
    for text in texts.values():
        for block in re.finditer(r"\blocals\s*\{", text):
            body = balanced(text, block.end() - 1)
            match = re.search(r"^\s*%s\s*=\s*" % re.escape(name), body, re.MULTILINE)
            if match:
                rest = body[match.end():]
                call = re.match(r"[\w.]+\(", rest)  # merge(...), tomap(...)
                if call or rest[:1] in "([{":
                    return rest[:call.end() - 1] + balanced(rest, call.end() - 1) if call else balanced(rest, 0)
                return rest.splitlines()[0]
    return None


def resolve_number(texts: dict[str, str], expression: str) -> str | None:
    """A port expression (3000, var.x, tostring(var.x), local.x, ${var.x}) as its literal value."""
    expression = expression.strip().strip('"')
    inner = re.fullmatch(r"(?:tostring\()?\$?\{?\s*(var|local)\.(\w+)\s*\}?\)?", expression)
    if inner:
        kind, name = inner.groups()
        value = variable_default(texts, name) if kind == "var" else local_expression(texts, name)
        return resolve_number(texts, value) if value is not None else None
    return expression if expression.isdigit() else None


def env_names_in_expression(texts: dict[str, str], expression: str, seen: set[str]) -> set[str]:
    """UPPER_CASE map keys in an expression and in the locals it reads (the ECS secrets map)."""
    names = set(re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=(?!=)", expression))
    for local in re.findall(r"\blocal\.(\w+)", expression):
        if local not in seen:
            seen.add(local)
            value = local_expression(texts, local)
            if value:
                names |= env_names_in_expression(texts, value, seen)
    return names


def environment_locals(texts: dict[str, str], definitions: str) -> set[str]:
    """The names a container's `environment` takes from the locals it reads (local.hook_environment)."""
    environment = re.search(r"\benvironment\s*=\s*", definitions)
    return env_names_in_expression(texts, balanced(definitions, environment.end()), set()) if environment else set()


# -- the checks ----------------------------------------------------------------------------

def main(root: Path) -> int:
    checks = Checks(root)
    settings = set(re.findall(r'option\(\s*"([A-Z][A-Z0-9_]*)"', checks.text("gateway/config.py")))
    checks.expect(len(settings) > 10, f"gateway/config.py: found only {len(settings)} settings (option(\"NAME\", ...))")

    # Dockerfile
    instructions = dockerfile_instructions(checks.text("Dockerfile"))
    docker_env = dockerfile_env(instructions)
    docker_port = docker_env.get("PORT")
    exposed = [rest.split("/")[0] for word, rest in instructions if word == "EXPOSE"]
    healthchecks = [rest for word, rest in instructions if word == "HEALTHCHECK"]
    docker_health = None
    if checks.expect(len(healthchecks) == 1, "Dockerfile: one HEALTHCHECK expected"):
        url = URL.search(healthchecks[0])
        default_port = re.search(r"get\('PORT',\s*'(\d+)'\)", healthchecks[0])
        docker_health = url.group(2) if url else None
        checks.expect(default_port is None or default_port.group(1) == docker_port,
                      f"Dockerfile: HEALTHCHECK's default port {default_port and default_port.group(1)} is not PORT {docker_port}")
    checks.expect(exposed == [docker_port], f"Dockerfile: EXPOSE {exposed} is not ENV PORT {docker_port}")

    # docker-compose.yml
    compose = yaml.safe_load(checks.text("docker-compose.yml"))
    services = compose.get("services", {})
    gateway = services.get("gateway", {})
    compose_env = {str(k): "" if v is None else str(v) for k, v in (gateway.get("environment") or {}).items()}
    compose_port = compose_env.get("PORT", docker_port)
    published = [str(p).rsplit(":", 1)[-1].split("/")[0] for p in gateway.get("ports", [])]
    checks.expect(compose_port == docker_port, f"docker-compose.yml: gateway PORT {compose_port} is not the Dockerfile's {docker_port}")
    checks.expect(published == [docker_port], f"docker-compose.yml: gateway publishes container ports {published}, not {docker_port}")
    compose_health = None
    test = (gateway.get("healthcheck") or {}).get("test")
    if checks.expect(bool(test), "docker-compose.yml: the gateway has no healthcheck"):
        url = URL.search(" ".join(test) if isinstance(test, list) else str(test))
        compose_health = url.group(2) if url else None
        checks.expect(bool(url) and url.group(1) == compose_port,
                      f"docker-compose.yml: the healthcheck's port {url and url.group(1)} is not PORT {compose_port}")
    for name, service in services.items():
        image = service.get("image")
        if image:
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            checks.expect(bool(tag) and tag != "latest" and not tag.isdigit(),
                          f"docker-compose.yml: {name}'s image {image} is not pinned to a release tag")

    # infra/terraform
    texts = terraform_texts(root)
    ecs = texts.get("ecs.tf", "")
    start = ecs.find("container_definitions")
    ecs_health = alb_health = None
    ecs_env: set[str] = set()
    if checks.expect(start >= 0, "infra/terraform/ecs.tf: no container_definitions"):
        definitions = balanced(ecs, ecs.index("(", start))
        ecs_env = set(re.findall(r'\{\s*name\s*=\s*"([A-Z][A-Z0-9_]*)"', definitions))
        secrets = re.search(r"\bsecrets\s*=\s*", definitions)
        if secrets:
            secret_names = env_names_in_expression(texts, balanced(definitions, secrets.end()), set())
            checks.expect(bool(secret_names), "infra/terraform/ecs.tf: cannot tell the names of the container's secrets")
            ecs_env |= secret_names
        ecs_env |= environment_locals(texts, definitions)
        port_value = re.search(r'name\s*=\s*"PORT"\s*,\s*value\s*=\s*([^}]+?)\s*\}', definitions)
        ecs_port = resolve_number(texts, port_value.group(1)) if port_value else None
        checks.expect(ecs_port == docker_port, f"infra/terraform/ecs.tf: PORT {ecs_port} is not the Dockerfile's {docker_port}")
        health = re.search(r"healthCheck\s*=\s*\{", definitions)
        if checks.expect(bool(health), "infra/terraform/ecs.tf: the container has no healthCheck"):
            url = URL.search(balanced(definitions, health.end() - 1))
            ecs_health = url.group(2) if url else None
            health_port = resolve_number(texts, url.group(1)) if url and url.group(1) else None
            checks.expect(health_port == docker_port, f"infra/terraform/ecs.tf: healthCheck port {health_port} is not {docker_port}")
        mappings = re.findall(r"containerPort\s*=\s*([\w.()]+)", definitions)
        checks.expect(docker_port in [resolve_number(texts, m) for m in mappings],
                      f"infra/terraform/ecs.tf: no portMapping for container port {docker_port}")
    # the other task definitions (worker.tf): their environment names are settings too, and a container
    # with WORKER_PORT has its health check on that port, at a path `mediaserver worker` serves (when
    # gateway/worker_cli.py is among the files checked)
    other_env: dict[str, set[str]] = {}
    worker_routes = checks.text("gateway/worker_cli.py") if (root / "gateway/worker_cli.py").is_file() else ""
    for file, text in texts.items():
        for found in re.finditer(r"\bcontainer_definitions\s*=", text):
            if file == "ecs.tf" and found.start() == start:
                continue
            definitions = balanced(text, text.index("(", found.start()))
            names = other_env.setdefault(file, set())
            names |= set(re.findall(r'\{\s*name\s*=\s*"([A-Z][A-Z0-9_]*)"', definitions))
            secrets = re.search(r"\bsecrets\s*=\s*", definitions)
            if secrets:
                names |= env_names_in_expression(texts, balanced(definitions, secrets.end()), set())
            names |= environment_locals(texts, definitions)
            worker_port = re.search(r'name\s*=\s*"WORKER_PORT"\s*,\s*value\s*=\s*([^}]+?)\s*\}', definitions)
            health = re.search(r"healthCheck\s*=\s*\{", definitions)
            if worker_port and checks.expect(bool(health), f"infra/terraform/{file}: the worker container has no healthCheck"):
                url = URL.search(balanced(definitions, health.end() - 1))
                port = resolve_number(texts, worker_port.group(1))
                health_port = resolve_number(texts, url.group(1)) if url and url.group(1) else None
                checks.expect(port is not None and health_port == port,
                              f"infra/terraform/{file}: the worker's healthCheck port {health_port} is not its WORKER_PORT {port}")
                checks.expect(not worker_routes or url is not None and re.search(r'\(r?"\^?%s\$?"' % re.escape(url.group(2)), worker_routes) is not None,
                              f"gateway/worker_cli.py: no route for the worker's health path {url and url.group(2)}")
    balancer = re.search(r"load_balancer\s*\{[^}]*container_port\s*=\s*([\w.]+)", ecs)
    lb_port = resolve_number(texts, balancer.group(1)) if balancer else None
    checks.expect(lb_port == docker_port, f"infra/terraform/ecs.tf: the load balancer targets port {lb_port}, not {docker_port}")
    target = re.search(r'resource\s+"aws_lb_target_group"\s+"gateway"\s*\{', texts.get("alb.tf", ""))
    if checks.expect(bool(target), "infra/terraform/alb.tf: no aws_lb_target_group.gateway"):
        block = balanced(texts["alb.tf"], target.end() - 1)
        path = re.search(r'health_check\s*\{[^}]*\bpath\s*=\s*"([^"]+)"', block)
        alb_health = path.group(1) if path else None

    paths = {"Dockerfile HEALTHCHECK": docker_health, "compose healthcheck": compose_health,
             "ecs.tf healthCheck": ecs_health, "alb.tf target group": alb_health}
    checks.expect(len(set(paths.values())) == 1 and None not in paths.values(),
                  "health paths disagree: " + ", ".join(f"{k} {v}" for k, v in paths.items()))
    routes = checks.text("gateway/app.py")
    checks.expect(docker_health is not None and re.search(r'\(r?"\^?%s\$?"' % re.escape(docker_health or ""), routes) is not None,
                  f"gateway/app.py: no route for the health path {docker_health}")

    # environment names
    for where, names in (("Dockerfile", set(docker_env)), ("docker-compose.yml (gateway)", set(compose_env)),
                         ("infra/terraform/ecs.tf", ecs_env),
                         *((f"infra/terraform/{file}", names) for file, names in sorted(other_env.items()))):
        unknown = sorted(names - settings - LIBRARY_ENV)
        checks.expect(not unknown, f"{where}: {', '.join(unknown)} not settings of gateway/config.py")
    checks.expect({"JWT_SECRET", "MONGODB_URI"} <= ecs_env,
                  f"infra/terraform/ecs.tf: JWT_SECRET and MONGODB_URI expected among {sorted(ecs_env)}")

    # Jenkinsfile and its agent image
    jenkinsfile = checks.text("Jenkinsfile")
    agent = re.search(r"dockerfile\s*\{(.*?)\n\s*\}", jenkinsfile, re.DOTALL)
    agent_text = ""
    if checks.expect(bool(agent), "Jenkinsfile: the agent is not `agent { dockerfile { ... } }`"):
        folder = re.search(r"dir\s+'([^']+)'", agent.group(1))
        filename = re.search(r"filename\s+'([^']+)'", agent.group(1))
        agent_path = root / (folder.group(1) if folder else ".") / (filename.group(1) if filename else "Dockerfile")
        if checks.expect(agent_path.is_file(), f"Jenkinsfile: agent Dockerfile {agent_path} is missing"):
            agent_text = agent_path.read_text(encoding="utf-8")
    tools = {  # a program the Jenkinsfile calls -> how the agent image provides it
        "docker": r"/usr/local/bin/docker\b", "buildx": r"cli-plugins/docker-buildx", "trivy": r"/usr/local/bin/trivy\b",
        "aws": r"/usr/local/bin/aws\b", "terraform": r"/usr/local/bin/terraform\b", "npm": r"/usr/local/bin/npm\b",
        "node": r"/usr/local/bin/node\b", "python3": r"FROM python:3\.11", "chromium": r"\bchromium\b",
        "ffmpeg": r"\bffmpeg=",
    }
    for tool, provided in tools.items():
        checks.expect(re.search(provided, agent_text) is not None, f"ci/agent.Dockerfile: does not provide {tool}")
    playbook = re.search(r"ANSIBLE_PLAYBOOK\s*=\s*'([^']+)'", jenkinsfile)
    if checks.expect(bool(playbook), "Jenkinsfile: ANSIBLE_PLAYBOOK is not set"):
        venv = playbook.group(1).rsplit("/bin/", 1)[0]
        checks.expect(re.search(r"python -m venv %s\b" % re.escape(venv), agent_text) is not None
                      and "ansible-requirements.lock" in agent_text,
                      f"Jenkinsfile: {playbook.group(1)} is not the venv ci/agent.Dockerfile installs Ansible in")
    checks.expect(".venv/bin/ansible" not in jenkinsfile, "Jenkinsfile: calls Ansible from .venv, where it is not installed")
    checks.expect("update-service" not in jenkinsfile,
                  "Jenkinsfile: changes the ECS service behind Terraform's back (update-service)")
    checks.expect(re.search(r"\bname:\s*'(ENVIRONMENT|AWS_REGION|PORT|HOST)'", jenkinsfile) is None
                  and re.search(r"^\s*(ENVIRONMENT|AWS_REGION|PORT|HOST)\s*=", jenkinsfile, re.MULTILINE) is None,
                  "Jenkinsfile: sets a name the gateways of the tests read (ENVIRONMENT, AWS_REGION, PORT, HOST)")

    # Ansible collections: used == declared
    used = set()
    for play in yaml.safe_load(checks.text("ansible/deploy.yml")):
        stack = list(play.get("tasks", []))
        while stack:
            task = stack.pop()
            stack.extend(task.get("block", []))
            for key in task:
                parts = key.split(".")
                if len(parts) == 3 and parts[0] != "ansible":
                    used.add(".".join(parts[:2]))
    declared = {entry["name"] for entry in yaml.safe_load(checks.text("ansible/requirements.yml"))["collections"]}
    checks.expect(used == declared, f"ansible: deploy.yml uses {sorted(used)}, requirements.yml declares {sorted(declared)}")

    if checks.failures:
        print("DISAGREEMENTS:\n  " + "\n  ".join(checks.failures), file=sys.stderr)
        return 1
    print(f"port {docker_port}, health {docker_health}: Dockerfile, docker-compose.yml, ecs.tf and alb.tf agree")
    all_env = set(docker_env) | set(compose_env) | ecs_env | set().union(*other_env.values())
    print(f"{len(all_env)} environment names, all settings of gateway/config.py"
          f" (or read by Python/boto3: {', '.join(sorted((set(docker_env) | set(compose_env)) & LIBRARY_ENV))})")
    print(f"Jenkinsfile runs in {agent_path.relative_to(root) if agent_text else '?'} with every tool it calls;"
          f" collections used = declared: {', '.join(sorted(declared))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)))
