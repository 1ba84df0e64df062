"""The code passes ``ruff check`` with the project's configuration (``[tool.ruff]`` in
pyproject.toml).  Ruff comes with the ``dev`` extra; where it is missing the test is skipped."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, VENV_BIN


def ruff_command() -> list[str] | None:
    exe = shutil.which("ruff", path=VENV_BIN) or shutil.which("ruff")  # this venv's first
    if exe:
        return [exe]
    try:
        import ruff  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "ruff"]


def test_ruff_check_is_clean():
    cmd = ruff_command()
    if cmd is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    r = subprocess.run([*cmd, "check", "--no-cache", "--output-format", "concise",
                        "covidseg", "tests", "benchmarks", "entrypoints"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
