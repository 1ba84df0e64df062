"""The slice viewer page: its slices, overlays and per-slice Dice, read back from the HTML."""

import base64
import io
import json
import re

import numpy as np
import pytest

from covidseg.inference.viewer import kept_slices, run_lengths, slice_viewer_html


def page_data(page: str) -> dict:
    m = re.search(r'<script id="viewer-data" type="application/json">(.*?)</script>', page, re.S)
    return json.loads(m.group(1))


def decode(runs, shape) -> np.ndarray:
    flat, on, at = np.zeros(int(np.prod(shape)), bool), False, 0
    for n in runs:
        flat[at:at + n] = on
        at, on = at + n, not on
    assert at == flat.size
    return flat.reshape(shape)


def constructed():
    """Six 40×40 slices: truth a 10×10 square on slices 1-3, the prediction the same square on
    slice 1, half of it on slice 2, nothing on 3 and a false 5×5 on slice 5."""
    image = np.linspace(-1000, 400, 6 * 40 * 40, dtype=np.float32).reshape(6, 40, 40)
    ref = np.zeros((6, 40, 40), bool)
    ref[1:4, 10:20, 10:20] = True
    pred = np.zeros_like(ref)
    pred[1, 10:20, 10:20] = True
    pred[2, 10:15, 10:20] = True
    pred[5, 30:35, 30:35] = True
    return image, ref, pred


def test_slices_overlays_and_dice_are_embedded():
    image, ref, pred = constructed()
    page = slice_viewer_html(image, pred, ref, title="case_7", caption="grid: preprocessed")
    d = page_data(page)
    assert [s["z"] for s in d["slices"]] == list(range(6)) and d["depth"] == 6
    by_z = {s["z"]: s for s in d["slices"]}
    # per slice: 1 (equal), 2·50/(100+50), no prediction, both empty, prediction only
    assert by_z[1]["dice"] == pytest.approx(1.0)
    assert by_z[2]["dice"] == pytest.approx(2 * 50 / 150)
    assert by_z[3]["dice"] == 0.0 and by_z[0]["dice"] is None and by_z[5]["dice"] == 0.0
    assert d["case_dice"] == pytest.approx(2 * 150 / (300 + 175))
    # both overlays, as masks that decode back to the arrays
    for z in range(6):
        assert np.array_equal(decode(by_z[z]["ref"], (40, 40)), ref[z])
        assert np.array_equal(decode(by_z[z]["pred"], (40, 40)), pred[z])
    assert d["start"] == 1  # opens on the slice with the most lesion
    # every slice a JPEG of the slice's size; the page loads nothing from anywhere
    from PIL import Image

    im = Image.open(io.BytesIO(base64.b64decode(by_z[4]["img"])))
    assert im.format == "JPEG" and im.size == (40, 40) and im.mode == "L"
    assert not re.search(r"https?://|<link|src=\"(?!data:)", page)
    for element in ('id="show-ref"', 'id="show-pred"', 'id="alpha"', 'id="slider"', '"wheel"'):
        assert element in page


def test_prediction_alone_has_no_truth_and_no_dice():
    image, _, pred = constructed()
    d = page_data(slice_viewer_html(image, pred, title="in"))
    assert d["truth"] is False and d["case_dice"] is None
    assert all("dice" not in s and "ref" not in s for s in d["slices"])


def test_large_cases_are_subsampled_and_capped():
    image = np.random.default_rng(0).normal(size=(200, 512, 480)).astype(np.float32)
    pred = image > 2
    page = slice_viewer_html(image, pred, pred, max_size=256, max_slices=40)
    d = page_data(page)
    assert len(d["slices"]) == 40 and d["slices"][0]["z"] == 0 and d["slices"][-1]["z"] == 199
    assert (d["height"], d["width"], d["step"]) == (256, 240, 2)
    assert all(s["dice"] == pytest.approx(1.0) for s in d["slices"])
    assert len(page) < 6_000_000  # noise is JPEG's worst case


def test_helpers():
    assert run_lengths(np.array([1, 1, 0, 1])) == [0, 2, 1, 1]
    assert run_lengths(np.array([0, 0, 0])) == [3]
    assert kept_slices(3, 10) == [0, 1, 2] and kept_slices(10, 3) == [0, 4, 9]
    with pytest.raises(ValueError, match="equal"):
        slice_viewer_html(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
