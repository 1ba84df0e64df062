"""Preprocessing throughput: covidseg vs the same steps assembled from MONAI transforms (SPEC §6).

The same CT phantom volumes (NIfTI, HU, with infection masks) go through:

* ``covidseg (lung_method=none)``: :func:`covidseg.data.steps.preprocess_case` + the store
  writer — read (SimpleITK), reorient to LPS, resample in-plane to 1 mm (masks nearest
  neighbour, slice spacing kept), clip to the lung window, z-score over the body, write arrays;
* ``MONAI``: ``LoadImaged`` (nibabel) → ``EnsureChannelFirstd`` → ``Orientationd(LPS)`` →
  ``Spacingd(1, 1, keep)`` (bilinear / nearest) → ``ScaleIntensityRanged`` (clip to the window)
  → ``NormalizeIntensityd`` (z-score) → the same array writer — the same work;
* ``covidseg (lung_method=classical)``: what ``preprocess`` does by default without lungmask
  weights — the above plus the classical lung extraction and a z-score over the lungs (MONAI has
  no lung extraction to compare with: shown for the cost of it).

MONAI is installed by the ``[bench]`` extra (``pip install -e ".[bench]"``).

    python benchmarks/preprocessing.py [--volumes 4] [--size 512] [--depth_mm 100]

Ratio = covidseg volumes/min ÷ MONAI volumes/min (same steps).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from bench import header, ratios, table


def monai_pipeline(window):
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
    )

    keys = ["image", "label"]
    return Compose([
        LoadImaged(keys, reader="NibabelReader", image_only=True),
        EnsureChannelFirstd(keys),
        Orientationd(keys, axcodes="LPS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys, pixdim=(1.0, 1.0, -1.0), mode=("bilinear", "nearest")),
        ScaleIntensityRanged("image", a_min=window[0], a_max=window[1], b_min=window[0],
                             b_max=window[1], clip=True),
        NormalizeIntensityd("image"),
    ])


def run_covidseg(cases, cfg, out: Path) -> None:
    from covidseg.data.layouts import CaseRecord
    from covidseg.data.steps import preprocess_case
    from covidseg.data.store import write_case
    from covidseg.stages.preprocess import preprocess_settings

    settings = preprocess_settings(cfg)
    for i, (image, mask) in enumerate(cases):
        res = preprocess_case(CaseRecord(case_id=f"c{i}", image=str(image), infection=str(mask)),
                              settings, None)
        write_case(out / f"c{i}", res.image, res.infection, res.lung, res.meta)


def run_monai(cases, pipeline, out: Path) -> None:
    from covidseg.data.store import write_case

    for i, (image, mask) in enumerate(cases):
        d = pipeline({"image": str(image), "label": str(mask)})
        write_case(out / f"c{i}", np.asarray(d["image"][0]), np.asarray(d["label"][0]) > 0.5, None,
                   {"case_id": f"c{i}"})


def main() -> None:
    import torch

    from covidseg.config import PreprocessConfig
    from covidseg.data.phantom import make_phantom, write_phantom

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--volumes", type=int, default=4)
    ap.add_argument("--size", type=int, default=512, help="in-plane pixels of each volume")
    ap.add_argument("--depth_mm", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    try:
        import monai
    except ImportError:
        raise SystemExit('preprocessing.py compares with MONAI: '
                         'pip install -e ".[bench]"') from None
    with tempfile.TemporaryDirectory(prefix="covidseg-bench-prep-") as tmp:
        tmp = Path(tmp)
        cases, shapes = [], []
        for i in range(args.volumes):
            ph = make_phantom(300 + i, size=args.size, depth_mm=args.depth_mm,
                              centre="ABCD"[i % 4])
            image, mask = tmp / "in" / f"ct_{i}.nii.gz", tmp / "in" / f"mask_{i}.nii.gz"
            write_phantom(ph, image, mask)
            cases.append((image, mask))
            shapes.append(ph.image.shape)
        header("preprocessing: covidseg vs MONAI transforms", torch.device("cpu"),
               volumes=args.volumes,
               shape=f"{args.size}x{args.size}x{shapes[0][0]}..{shapes[-1][0]}",
               monai=monai.__version__)
        monai_steps = monai_pipeline((-1250.0, 250.0))  # built once, like covidseg's config
        arms = {
            "covidseg (lung_method=none)": lambda out: run_covidseg(
                cases, PreprocessConfig(lung_method="none", intensity="hu"), out),
            "MONAI (same steps)": lambda out: run_monai(cases, monai_steps, out),
            "covidseg (lung_method=classical)": lambda out: run_covidseg(
                cases, PreprocessConfig(lung_method="classical", intensity="hu"), out),
        }
        times: dict[str, list[float]] = {k: [] for k in arms}
        for r in range(args.repeat + 1):  # the first round warms imports and caches: not timed
            for name, fn in arms.items():
                out = tmp / f"out-{r}-{len(times[name])}-{abs(hash(name))}"
                t0 = time.perf_counter()
                fn(out)
                if r:
                    times[name].append(time.perf_counter() - t0)
        check = {}
        for name in arms:
            out = tmp / f"check-{abs(hash(name))}"
            arms[name](out)
            check[name] = np.load(out / "c0" / "image.npy")
    ours, theirs = check["covidseg (lung_method=none)"], check["MONAI (same steps)"]
    rows = []
    for name, t in times.items():
        s = float(np.median(t))
        rows.append({"pipeline": name, "s/volume": s / args.volumes,
                     "volumes/min": 60 * args.volumes / s})
    table(rows)
    print(f"output of case 0: covidseg {list(ours.shape)} (z, y, x), MONAI {list(theirs.shape)} "
          "(its array order)")
    vpm = {r["pipeline"]: r["volumes/min"] for r in rows}
    monai_vpm = vpm["MONAI (same steps)"]
    ratios(covidseg_over_monai=vpm["covidseg (lung_method=none)"] / monai_vpm,
           with_lungs_over_monai=vpm["covidseg (lung_method=classical)"] / monai_vpm)


if __name__ == "__main__":
    main()
