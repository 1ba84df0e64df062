"""nnU-Net v2 raw datasets out (``export_nnunet=``) and back in (``dataset=nnunet``); the export
checked by the real nnU-Net (``nnUNetv2_plan_and_preprocess --verify_dataset_integrity``) when
the ``nnunet`` extra is installed."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN
from tests.unit.data import test_nnunet as unit

exported = unit.exported  # the unit tests' fixture, shared


@pytest.mark.e2e
def test_real_nnunet_plans_and_preprocesses_the_export(exported, tmp_path):
    """nnU-Net's own integrity check, fingerprint, plans and 2d preprocessing accept the export,
    and take its folds (splits_final.json copied to nnUNet_preprocessed)."""
    pytest.importorskip("nnunetv2", reason="the nnunet extra (pip install -e .[nnunet])")
    _, out, _ = exported
    raw = tmp_path / "raw"
    shutil.copytree(out, raw / out.name)
    env = {**os.environ, "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(tmp_path / "pre"),
           "nnUNet_results": str(tmp_path / "results"), "nnUNet_n_proc_DA": "1",
           "OMP_NUM_THREADS": "1"}
    cmd = [str(Path(VENV_BIN) / "nnUNetv2_plan_and_preprocess"), "-d", "501",
           "--verify_dataset_integrity", "-c", "2d", "-np", "1", "-npfp", "1", "--no_pbar"]
    r = subprocess.run(cmd, env=env, capture_output=True, encoding="utf-8", errors="replace",
                       timeout=600)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    pre = tmp_path / "pre" / out.name
    assert json.loads((pre / "splits_final.json").read_text()) == json.loads(
        (out / "splits_final.json").read_text())
    assert (pre / "nnUNetPlans.json").exists() and (pre / "dataset_fingerprint.json").exists()
    assert any((pre / "nnUNetPlans_2d").iterdir())
