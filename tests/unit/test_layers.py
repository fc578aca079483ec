"""The package layering in .importlinter holds: gateway > streaming > processing > metadata | auth."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from importlinter.api import read_configuration

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".importlinter"
# lint-imports' own entry point in a fresh interpreter (this one: no PATH lookup). It reads only
# the file named here (never setup.cfg or pyproject.toml) and leaves no cache folder in the tree.
LINT_IMPORTS = """
import inspect, sys
from importlinter.cli import lint_imports
options = {"config_filename": sys.argv[1], "no_cache": True}
if "no_logo" in inspect.signature(lint_imports).parameters:  # newer versions print a logo
    options["no_logo"] = True
sys.exit(lint_imports(**options))
"""


def _root_packages(config: dict) -> list[str]:
    session = config["session_options"]
    roots = session.get("root_packages") or session.get("root_package") or []
    return [roots] if isinstance(roots, str) else list(roots)


def _named_modules(config: dict) -> set[str]:
    """Every module that the configuration names: roots, layers, source and forbidden modules."""
    names = set(_root_packages(config))
    for contract in config["contracts_options"]:
        for layer in contract.get("layers", []):
            names.update(part.strip().rstrip("?") for part in re.split(r"[|:]", layer))
        names.update(contract.get("source_modules", []))
        names.update(contract.get("forbidden_modules", []))
    return {name for name in names if name and "*" not in name}


def _exists(name: str, roots: list[str]) -> bool:
    if name.split(".")[0] in roots:  # ours: look for the file, import nothing
        path = ROOT.joinpath(*name.split("."))
        return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()
    return "." not in name and importlib.util.find_spec(name) is not None


def test_imports_follow_the_layers():
    config = read_configuration(str(CONFIG))
    # lint-imports takes a forbidden module it cannot find for an external package that nothing
    # imports, and keeps the contract: a misspelt or renamed module would pass unnoticed.
    roots = _root_packages(config)
    missing = sorted(name for name in _named_modules(config) if not _exists(name, roots))
    assert not missing, f".importlinter names modules that do not exist: {missing}"
    assert {contract["type"] for contract in config["contracts_options"]} >= {"layers", "forbidden"}

    result = subprocess.run([sys.executable, "-c", LINT_IMPORTS, str(CONFIG)], cwd=ROOT,
                            capture_output=True, text=True, encoding="utf-8", errors="replace",
                            timeout=300, env={**os.environ, "COLUMNS": "200"})
    if result.returncode != 0:  # a broken contract, or a configuration lint-imports cannot use
        pytest.fail(f"lint-imports exited {result.returncode}:\n{result.stdout}{result.stderr}",
                    pytrace=False)
