"""The tests' folders are their marker (tests/conftest.py): everything under tests/e2e/ is ``e2e``,
a test under tests/unit/ that starts processes and a test outside both folders fail collection —
so ``-m "not e2e"`` and ``tests/unit`` are the same tests.  Checked on a throw-away tree with this
conftest, collected by a pytest subprocess."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import TESTS, subprocess_env

FILES = {
    "unit/test_fine.py": "def test_fine():\n    pass\n",
    "e2e/test_slow.py": "def test_slow():\n    pass\n",
    "unit/test_wrong.py": "import pytest\n\n\n@pytest.mark.e2e\ndef test_marked():\n    pass\n\n\n"
                          "def test_serves(tracking_uri):\n    pass\n",
    "test_top.py": "def test_top():\n    pass\n",
}


def collect(root, *args):
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-n", "0",
                           "-p", "no:cacheprovider", *args], cwd=root, env=subprocess_env(),
                          capture_output=True, encoding="utf-8", errors="replace", timeout=120)


def test_the_folder_marks_e2e_and_a_misplaced_test_fails_collection(tmp_path):
    (tmp_path / "conftest.py").write_bytes((TESTS / "conftest.py").read_bytes())
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    r = collect(tmp_path)
    assert r.returncode != 0
    assert "unit/test_wrong.py::test_marked: starts processes (e2e)" in r.stdout, r.stdout
    assert "unit/test_wrong.py::test_serves: starts processes (e2e)" in r.stdout, r.stdout
    assert "test_top.py::test_top: a test lives under tests/unit/ or tests/e2e/" in r.stdout
    r = collect(tmp_path, "-m", "not e2e", "unit/test_fine.py", "e2e/test_slow.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "unit/test_fine.py::test_fine" in r.stdout and "::test_slow" not in r.stdout
    r = collect(tmp_path, "-m", "e2e", "unit/test_fine.py", "e2e/test_slow.py")
    assert "e2e/test_slow.py::test_slow" in r.stdout and "::test_fine" not in r.stdout
