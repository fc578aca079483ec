"""What a runtime install carries, and what the gateway relies on in Tornado.

- setup.py: the runtime requirements have neither the embedded MongoDB server (extra `embedded`)
  nor the upload CLI's client (extra `cli`); `test` has both; tornado is bounded below 7;
- requirements.lock (what the Docker image installs, hashes required) pins every runtime
  requirement at a version setup.py allows, and nothing from the extras;
- without an extra, the command it serves says so in one line (no traceback);
- Tornado's private HTTP1Connection._read_fixed_body, which gateway/in_place_body.py wraps, is
  still there and still a coroutine function taking (content_length, delegate).
"""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import setuptools
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import ROOT, free_port


def setup_arguments() -> dict:
    captured: dict = {}
    original = setuptools.setup
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        runpy.run_path(str(ROOT / "setup.py"))
    finally:
        setuptools.setup = original
    return captured


SETUP = setup_arguments()
RUNTIME = {canonicalize_name(Requirement(r).name): Requirement(r) for r in SETUP["install_requires"]}


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of requirements.lock."""
    text = (ROOT / "requirements.lock").read_text()
    entries: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        first = block.strip().splitlines()[0] if block.strip() else ""
        match = re.match(r"([A-Za-z0-9_.\-]+)==([^\s\\;]+)", first)
        if match:
            entries[canonicalize_name(match.group(1))] = (match.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return entries


def test_runtime_requirements_leave_out_the_extras():
    extras = SETUP["extras_require"]
    assert "nx-27017" not in RUNTIME and "tuspy" not in RUNTIME and "requests" not in RUNTIME
    assert names(extras["embedded"]) == {"nx-27017"}
    assert {"tuspy", "requests"} <= names(extras["cli"])
    # the test command (.[test]) and the README's run command (scripts/run.sh) have both
    assert names(extras["embedded"]) | names(extras["cli"]) <= names(extras["test"])
    assert re.search(r'pip install -q -e "\$ROOT\[embedded,cli\]"', (ROOT / "scripts/run.sh").read_text())


def test_tornado_is_bounded_below_the_next_major():
    tornado = RUNTIME["tornado"]
    assert not tornado.specifier.contains("7.0") and tornado.specifier.contains("6.5.8")


def test_lock_pins_every_runtime_requirement_with_hashes():
    entries = locked()
    assert set(RUNTIME) <= set(entries), f"not in requirements.lock: {sorted(set(RUNTIME) - set(entries))}"
    for name, requirement in RUNTIME.items():
        assert requirement.specifier.contains(entries[name][0], prereleases=True), (
            f"requirements.lock pins {name}=={entries[name][0]}, setup.py wants {requirement}: run pip-compile again")
    for name, (version, hashes) in entries.items():
        assert hashes, f"{name}=={version} has no hash"
    leaked = set(entries) & {"nx-27017", "tuspy", "pytest", "moto", "requests"}
    assert not leaked, f"requirements.lock carries what production does not need: {sorted(leaked)}"


def test_dockerfile_installs_the_lock_then_the_wheel_without_dependencies():
    text = (ROOT / "Dockerfile").read_text()
    runtime = text[text.rindex("\nFROM "):]
    lock = runtime.index("pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock")
    wheel = runtime.index("pip install --no-cache-dir --no-deps /wheels/*.whl")
    assert lock < wheel
    assert "pip wheel --no-cache-dir --no-deps" in text  # no unhashed dependency wheels built


def run_gateway_without(module: str, *argv: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`mediaserver ARGV` in a fresh interpreter where importing `module` fails, as without its extra."""
    code = (f"import sys; sys.modules[{module!r}] = None; from gateway.cli import main; "
            f"sys.exit(main({list(argv)!r}))")
    env = {"PATH": "", "HOME": str(tmp_path), "DATA_DIR": str(tmp_path / "data"), "PORT": str(free_port())}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(("module", "package"), [("tusclient", "tuspy"), ("requests", "requests")])
def test_upload_without_the_cli_extra_is_one_clear_line(tmp_path, module, package):
    (tmp_path / "file.bin").write_bytes(b"x")
    result = run_gateway_without(module, "upload", "--token", "t", str(tmp_path / "file.bin"), tmp_path=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"mediaserver upload: the cli extra is not installed ({package}): pip install 'mediaserver-gateway[cli]'"]


def test_help_and_serve_need_no_cli_extra(tmp_path):
    result = run_gateway_without("requests", "upload", "--help", tmp_path=tmp_path)
    assert result.returncode == 0 and "usage:" in result.stdout


def test_embedded_default_without_the_embedded_extra_is_one_clear_line(tmp_path):
    result = run_gateway_without("nx_27017", "serve", tmp_path=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert ("mediaserver: could not start: the embedded MongoDB server (nx-27017) is not installed: "
            "pip install 'mediaserver-gateway[embedded]', or set MONGODB_URI") in result.stderr


def test_tornado_still_has_the_body_reader_in_place_body_wraps():
    """Fails loudly when a Tornado release drops or changes HTTP1Connection._read_fixed_body."""
    code = (
        "import inspect, tornado, tornado.http1connection as h\n"
        "method = getattr(h.HTTP1Connection, '_read_fixed_body', None)\n"
        "assert method is not None, f'tornado {tornado.version}: HTTP1Connection._read_fixed_body is gone'\n"
        "assert inspect.iscoroutinefunction(method), f'tornado {tornado.version}: _read_fixed_body is no coroutine'\n"
        "params = list(inspect.signature(method).parameters)\n"
        "assert params == ['self', 'content_length', 'delegate'], f'tornado {tornado.version}: {params}'\n"
        "print(tornado.version)\n"
    )
    # a fresh interpreter: Tornado's own method, before gateway/in_place_body.py wraps it
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert RUNTIME["tornado"].specifier.contains(result.stdout.strip())


def test_in_place_body_installs_over_that_reader():
    code = (
        "import inspect, tornado.http1connection as h\n"
        "from gateway import in_place_body\n"
        "in_place_body.install()\n"
        "method = h.HTTP1Connection._read_fixed_body\n"
        "assert getattr(method, 'in_place', False) and inspect.iscoroutinefunction(method)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
