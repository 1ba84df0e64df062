"""The demo 2D slice export (what a public 2D set looks like) and the slice_baseline benchmark at
toy size: it runs, scores both arms on the original slice sizes and prints the ratio line."""

from __future__ import annotations

import re
import sys

import pytest

from tests.conftest import REPO, run


@pytest.mark.e2e
def test_slice_baseline_benchmark_runs_at_toy_size(tmp_path):
    r = run([sys.executable, str(REPO / "benchmarks" / "slice_baseline.py"), "--size", "64",
             "--steps", "2", "--labelled", "10", "--test", "4", "--folds", "2",
             "--export_size", "60,90", "--encoder", "resnet18", "--workers", "0"], tmp_path,
            OMP_NUM_THREADS="1")
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    out = r.stdout
    assert "machine: " in out and "augment=slice" in out
    rows = {m.group(1): float(m.group(2)) for m in
            re.finditer(r"^\s*(covidseg finetune \(\d+ training slices\)|bare smp loop \(\d+ "
                        r"slices: (?:split|all)\))\s+([0-9.]+)\s+original size", out, re.MULTILINE)}
    names = sorted(rows)
    assert len(rows) == 3 and names[0].startswith("bare") and names[2].startswith("covidseg"), out
    assert all(0.0 <= v <= 1.0 for v in rows.values())
    # the same-slices arm trains on covidseg's training folds, the other on every labelled slice
    n = {k.split("(")[1].split()[0] for k in rows}
    assert len(n) == 2, rows
    lines = [ln for ln in out.splitlines() if ln.startswith("RATIOS ")]
    assert len(lines) == 1 and re.fullmatch(
        r"RATIOS covidseg_over_bare=(\S+) covidseg_over_bare_all_labelled=(\S+)", lines[0]), out


@pytest.mark.e2e
def test_real_slices_benchmark_runs_at_toy_size(tmp_path):
    """benchmarks/real_slices.py on a demo slice export laid out like the real set (train/
    images + masks): every arm on the same fold's slices, scored per slice, the paired
    differences and the ratio line printed, the per-slice JSON written."""
    import json

    from covidseg.data.phantom import export_demo_slices

    export_demo_slices(tmp_path / "slices", n_labelled=8, n_test=0, n_unlabelled=0,
                       size=(60, 90), phantom_size=96, depth_mm=24, slices_per_volume=2, seed=2)
    r = run([sys.executable, str(REPO / "benchmarks" / "real_slices.py"), "--data",
             str(tmp_path / "slices"), "--size", "64", "--steps", "3", "--k", "2", "--folds",
             "1", "--encoder", "resnet18", "--workers", "0", "--set", "augment=none",
             "--out", str(tmp_path / "scores.json")], tmp_path, OMP_NUM_THREADS="1")
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    out = r.stdout
    assert "steps=3" in out and "covidseg_set={'augment': 'none'}" in out
    for arm in ("covidseg", "thesis", "bare"):
        assert re.search(rf"^fold 1 {arm}: Dice [0-9.]+ meanDic [0-9.]+", out, re.MULTILINE), out
    assert re.search(r"covidseg − bare, dice: [+-][0-9.]+ \(95 % CI", out)
    lines = [ln for ln in out.splitlines() if ln.startswith("RATIOS ")]
    assert len(lines) == 1 and "covidseg_over_bare_dice=" in lines[0] and \
        "covidseg_over_thesis_meandic=" in lines[0]
    scores = json.loads((tmp_path / "scores.json").read_text())
    by_arm = {}
    for s in scores["slices"]:
        by_arm.setdefault(s["arm"], set()).add(s["case_id"])
        assert 0 <= s["dice"] <= 1 and 0 <= s["meandic"] <= 1 and s["fold"] == 1
    assert set(by_arm) == {"covidseg", "covidseg with tta", "thesis", "bare"}
    assert len({frozenset(v) for v in by_arm.values()}) == 1  # the same slices
    assert re.search(r"test-time mirroring on − off \(covidseg's models\), dice: [+-]", out)
    assert len(by_arm["bare"]) == 4
    # the same run split by arm (as runs made apart in parallel) and combined reports the same
    for part, arms in (("a", {"covidseg", "covidseg with tta"}), ("b", {"thesis", "bare"})):
        cols = {k for a in arms for k in scores["folds"][0] if k.startswith(a.split()[0] + " ")}
        (tmp_path / f"{part}.json").write_text(json.dumps({
            "settings": scores["settings"],
            "folds": [{k: v for k, v in row.items() if k in ("fold", "val_slices") or k in cols}
                      for row in scores["folds"]],
            "slices": [s for s in scores["slices"] if s["arm"] in arms],
            "calibration": {a: c for a, c in scores["calibration"].items() if a in arms}}))
    c = run([sys.executable, str(REPO / "benchmarks" / "real_slices.py"), "--combine",
             str(tmp_path / "a.json"), str(tmp_path / "b.json")], tmp_path)
    assert c.returncode == 0, (c.stdout[-3000:], c.stderr[-3000:])
    report = out[out.index("fold  val_slices"):]
    assert c.stdout[c.stdout.index("fold  val_slices"):] == report, (c.stdout, report)
    twice = run([sys.executable, str(REPO / "benchmarks" / "real_slices.py"), "--combine",
                 str(tmp_path / "a.json"), str(tmp_path / "a.json")], tmp_path)
    assert twice.returncode != 0 and "scores a slice twice" in twice.stderr
    # runs that do not belong together are refused in one line: another --set for arm (a), an
    # arm missing a fold the others ran
    other = json.loads((tmp_path / "a.json").read_text())
    other["settings"]["set"] = ["lr=0.003"]
    (tmp_path / "a2.json").write_text(json.dumps(other))
    b0 = json.loads((tmp_path / "b.json").read_text())
    for item in b0["slices"] + b0["folds"]:
        item["fold"] = 0
    (tmp_path / "b0.json").write_text(json.dumps(b0))
    for files, message in ((["a.json", "a2.json", "b.json"], "differ in --set"),
                           (["a.json", "b.json", "b0.json"], "give every arm the same folds")):
        bad = run([sys.executable, str(REPO / "benchmarks" / "real_slices.py"), "--combine",
                   *[str(tmp_path / f) for f in files]], tmp_path)
        assert bad.returncode != 0 and message in bad.stderr, (files, bad.stderr[-2000:])


@pytest.mark.e2e
def test_real_slices_semi_arms_start_from_the_finetuned_model(tmp_path):
    """The unlabelled arms of benchmarks/real_slices.py at toy size: each starts from arm (a)'s
    model of the fold, continued takes twice the steps, and each is compared with (a) and with
    continued slice by slice."""
    import json

    from covidseg.data.phantom import export_demo_slices

    export_demo_slices(tmp_path / "slices", n_labelled=6, n_test=0, n_unlabelled=4,
                       size=(60, 90), phantom_size=96, depth_mm=24, slices_per_volume=2, seed=3)
    r = run([sys.executable, str(REPO / "benchmarks" / "real_slices.py"), "--data",
             str(tmp_path / "slices"), "--size", "64", "--steps", "2", "--k", "2", "--folds",
             "0", "--encoder", "resnet18", "--workers", "0", "--set", "augment=none",
             "--arms", "unimatch,continued,covidseg", "--semi_steps", "2",
             "--semi_set", "augment=none", "--semi_set", "target_confidence=0.6",
             "--out", str(tmp_path / "semi.json")], tmp_path, OMP_NUM_THREADS="1")
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    out = r.stdout
    assert "semi_steps=2" in out and "continued_steps=4" in out and "unlabelled_slices=" in out
    order = [m.group(1) for m in re.finditer(r"^fold 0 (\w+): Dice", out, re.MULTILINE)]
    assert order == ["covidseg", "continued", "unimatch"], out  # (a) first
    for line in ("unimatch − covidseg, dice", "unimatch − continued, dice",
                 "continued − covidseg, dice"):
        assert line in out, out
    scores = json.loads((tmp_path / "semi.json").read_text())
    arms = {s["arm"] for s in scores["slices"]}
    assert {"covidseg", "continued", "unimatch"} <= arms and scores["settings"]["semi_steps"] == 2
