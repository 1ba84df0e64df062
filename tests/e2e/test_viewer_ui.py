"""The slice viewer a finetune run logs (viewers/CASE.html), opened in the MLflow UI's artifact
view in headless Chromium and scrolled there with the mouse wheel: the picture and the shown Dice
change, and the Dice shown is the one computed in Python."""

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FAST
from tests.helpers import DevTools, chromium

SHOT = Path(__file__).resolve().parents[2] / "viewer_in_mlflow_ui.png"  # kept for a human (not
# committed): the viewer as a reviewer sees it inside the run page


def shown(dom: str, element: str) -> str:
    return re.search(rf'id="{element}"[^>]*>([^<]*)<', dom).group(1)


def pixels(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def test_finetune_logs_a_slice_viewer_that_the_mlflow_ui_shows(tracking_uri, preprocess_run,
                                                                tmp_path):
    from mlflow.tracking import MlflowClient

    from covidseg.cli import run_entry
    from covidseg.config import EvaluateConfig, FinetuneConfig

    cfg = FinetuneConfig(data=preprocess_run, epochs=1, experiment="viewer", viewers=1,
                         overlays=1, **FAST)
    cfg.validate()
    run_entry("finetune", cfg)
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("viewer").experiment_id
    run = client.search_runs([exp])[0]
    rid = run.info.run_id
    assert run.data.params["viewers"] == "1"
    pages = [a.path for a in client.list_artifacts(rid, "viewers")]
    assert len(pages) == 1 and pages[0].endswith(".html")  # capped at viewers=1 of 2 test cases
    case = Path(pages[0]).stem
    page = Path(client.download_artifacts(rid, pages[0], str(tmp_path)))
    html = page.read_text(encoding="utf-8")
    assert not re.search(r"https?://", html)  # nothing to load: no CDN, no font, no image URL
    assert page.stat().st_size < 1_500_000
    data = json.loads(re.search(r'type="application/json">(.*?)</script>', html, re.S).group(1))
    rows = {r["case_id"]: r for r in client.load_table(
        exp, "tables/test_per_volume.json", run_ids=[rid]).to_dict("records")}
    assert case in rows and f"{rows[case]['volume_dice']:.3f}" in data["caption"]

    # evaluate logs its cases' viewers the same way (its own cap)
    run_entry("evaluate", EvaluateConfig(model=rid, data=preprocess_run, viewers=2,
                                         experiment="viewer-evaluate"))
    ev_exp = client.get_experiment_by_name("viewer-evaluate").experiment_id
    ev_run = client.search_runs([ev_exp])[0].info.run_id
    assert len(client.list_artifacts(ev_run, "viewers")) == 2

    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it): UI not checked")
    by_z = {s["z"]: s for s in data["slices"]}

    def expected(z: int) -> str:
        dice = by_z[z]["dice"]
        return "slice Dice " + ("n/a" if dice is None else f"{dice:.3f}")

    # the MLflow UI's artifact view of the file: the page runs in the UI's sandboxed frame
    url = f"{tracking_uri}/#/experiments/{exp}/runs/{rid}/artifacts/{pages[0]}"
    with DevTools(tmp_path) as browser:
        ui = browser.open(url)
        x, y, w, h = browser.wait_for(
            "(() => { const f = document.querySelector('iframe.mlflow-html-iframe');"
            " if (!f) return null; const r = f.getBoundingClientRect();"
            " return r.height > 100 ? [r.x, r.y, r.width, r.height] : null; })()", ui)
        frame = browser.frame("blob:")
        state = ("document.getElementById('slice-label').textContent + '|' + "
                 "document.getElementById('slice-dice').textContent + '|' + "
                 "document.getElementById('case-dice').textContent")
        browser.wait_for("document.getElementById('ct') && "
                         "document.getElementById('slice-dice').textContent", frame)
        time.sleep(1)  # the first slice's JPEG decoded and drawn
        first = browser.evaluate(state, frame).split("|")
        before = pixels(browser.screenshot(ui, tmp_path / "ui_before.png"))
        for _ in range(3):  # the mouse wheel over the image, inside the run page
            browser.wheel(ui, x + min(w, 300) / 2, y + min(h, 500) / 2,
                          -100 if data["start"] >= len(data["slices"]) - 3 else 100)
        time.sleep(1)
        after_state = browser.evaluate(state, frame).split("|")
        after = pixels(browser.screenshot(ui, tmp_path / "ui_after.png"))
    shutil.copy(tmp_path / "ui_before.png", SHOT)
    z0, z1 = (int(re.match(r"slice z = (\d+) /", s[0]).group(1)) for s in (first, after_state))
    assert z0 == data["slices"][data["start"]]["z"]  # opens on the slice with the most lesion
    assert abs([s["z"] for s in data["slices"]].index(z1) - data["start"]) == 3  # 3 notches
    for z, st in ((z0, first), (z1, after_state)):  # the Dice shown is the one embedded
        assert st[1].startswith(expected(z)) and st[2].startswith(
            f"case Dice {data['case_dice']:.3f}")
    assert before.shape == after.shape
    changed = np.abs(before.astype(int) - after.astype(int)).sum(axis=-1) > 0
    assert changed.mean() > 0.01, "the wheel did not change the picture"
    dark = np.all(np.abs(before.astype(int) - 17) <= 3, axis=-1)  # the viewer's #111 background
    assert dark.mean() > 0.02, "the viewer did not render inside the MLflow UI"

    # the page's own address opens a slice: #slice=N (the file as downloaded, outside the UI)
    other = min(data["slices"], key=lambda s: (s["ref_px"] + s["pred_px"], s["z"]))["z"]
    dom = chromium(f"{page.as_uri()}#slice={other}", tmp_path)
    assert shown(dom, "slice-label").startswith(f"slice z = {other} /")
    assert shown(dom, "slice-dice").startswith(expected(other))
