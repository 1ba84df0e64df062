"""The command line itself: ``--version``, ``--help`` that says what each entry point does, and
errors that are one line by default and the whole cause chain with ``COVIDSEG_DEBUG=1``."""

from __future__ import annotations

import pytest

from covidseg import __version__
from covidseg.base.errors import first_line
from covidseg.cli import build_parser, main
from covidseg.config import CONFIGS
from covidseg.stages.registry import RUNNERS


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"covidseg {__version__}"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_help_describes_the_entry_point_not_its_dataclass(name):
    text = build_parser(name).format_help()
    desc = build_parser(name).description
    assert desc and "Config(" not in desc and "=" not in desc.split(":")[0], desc
    assert RUNNERS[name] and " ".join(desc.split()[:4]) in " ".join(text.split())
    assert "--seed" in text and "[default:" in text


def test_help_of_finetune_and_predict_say_what_they_do():
    assert "transfer learning" in build_parser("finetune").description
    assert "masks" in build_parser("predict").description
    assert "per-volume metrics" in build_parser("evaluate").description


def _unreachable(monkeypatch):
    from tests.conftest import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")


def test_an_error_is_one_line_by_default(monkeypatch, capsys):
    _unreachable(monkeypatch)
    monkeypatch.delenv("COVIDSEG_DEBUG", raising=False)
    assert main(["finetune", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("covidseg finetune: error: MLflow tracking server")


def test_covidseg_debug_prints_the_cause_chain(monkeypatch, capsys):
    _unreachable(monkeypatch)
    monkeypatch.setenv("COVIDSEG_DEBUG", "1")
    assert main(["finetune", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    # the requests error that caused it, then the one line
    assert "The above exception was the direct cause" in err and "ConnectionError" in err
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("covidseg finetune: error:")


def test_first_line_of_a_multi_line_error():
    assert first_line(RuntimeError("\n  first\nsecond")) == "first"
    assert first_line(RuntimeError("x" * 300), 10) == "x" * 10
    assert first_line(ValueError("")) == "ValueError"


