"""The built-in demo cohort (``data=demo``): labelled, unlabelled (shifted centres, their true
lesions kept as oracle truth) and non-COVID phantoms written as NIfTI."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from covidseg.data.phantom.anatomy import seeded_rng
from covidseg.data.phantom.scan import COHORT_CENTRES, Phantom, make_phantom


def write_phantom(ph: Phantom, image_path: Path, infection_path: Path | None = None,
                  lung_path: Path | None = None, image: bool = True) -> None:
    """Write a phantom as NIfTI (or any SimpleITK format, by extension); ``image=False`` writes
    only its masks."""
    import SimpleITK as sitk

    def _img(arr, dtype):
        im = sitk.GetImageFromArray(arr.astype(dtype))
        im.SetSpacing(ph.spacing)
        nz, ny, nx = arr.shape
        im.SetOrigin((-nx * ph.spacing[0] / 2, -ny * ph.spacing[1] / 2, -nz * ph.spacing[2] / 2))
        return im

    if image:
        image_path.parent.mkdir(parents=True, exist_ok=True)
        img_dtype = np.int16 if ph.hu else np.uint8
        sitk.WriteImage(_img(np.round(ph.image), img_dtype), str(image_path), useCompression=True)
    if infection_path is not None:
        infection_path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(_img(ph.infection, np.uint8), str(infection_path), useCompression=True)
    if lung_path is not None:
        lung_path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(_img(ph.lung, np.uint8), str(lung_path), useCompression=True)


@dataclass(frozen=True)
class DemoSpec:
    """Size of the built-in demo cohort (``data=demo``)."""

    labelled: int = 30
    unlabelled: int = 20
    noncovid: int = 10
    size: int = 128
    depth_mm: int = 48
    difficulty: float = 0.5
    display_fraction: float = 0.0  # share of labelled cases stored as 0-255 display values
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True) + f"|phantom-v{PHANTOM_VERSION}"
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


PHANTOM_VERSION = 2  # 2: the unlabelled cohort's true lesions are written (oracle truth)

# Folder layout of a demo cohort (read by the "demo" layout adapter): images, infection masks,
# lungs, and the oracle truth of unlabelled cases — their lesions, never used for training, only
# to measure pseudo-labels (``pseudolabel``'s ``oracle_*`` metrics)
DEMO_LAYOUT = {
    "labelled": ("covid/images", "covid/infection", "covid/lungs", None),
    "unlabelled": ("unlabelled/images", None, "unlabelled/lungs", "unlabelled/truth"),
    "noncovid": ("noncovid/images", "noncovid/masks", "noncovid/lungs", None),
}


def build_cohort(root: Path, spec: DemoSpec, progress: bool = False) -> Path:
    """Write the three demo cohorts under ``root`` (skipped when already complete)."""
    root = Path(root)
    done = root / "cohort.json"
    if done.exists():
        return root
    jobs = []
    for i in range(spec.labelled):
        hu = not (spec.display_fraction > 0 and (i % max(1, round(1 / spec.display_fraction))) == 1)
        jobs.append(("labelled", f"covid_{i:03d}", "covid", COHORT_CENTRES["covid"], hu, 1000 + i))
    for i in range(spec.unlabelled):
        jobs.append(("unlabelled", f"unlab_{i:03d}", "covid", COHORT_CENTRES["unlabelled"], True,
                     5000 + i))
    for i in range(spec.noncovid):
        jobs.append(("noncovid", f"nodule_{i:03d}", "noncovid", COHORT_CENTRES["noncovid"], True,
                     9000 + i))
    tmp = root.with_name(root.name + f".partial-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    iterator = jobs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(jobs, desc="building demo phantoms", unit="vol")
    for cohort, case_id, kind, centres, hu, offset in iterator:
        seed = spec.seed * 100_003 + offset
        centre = centres[seeded_rng(seed, "centre").integers(len(centres))]
        ph = make_phantom(seed, size=spec.size, depth_mm=spec.depth_mm, kind=kind, centre=centre,
                          difficulty=spec.difficulty, hu=hu)
        img_dir, inf_dir, lung_dir, truth_dir = DEMO_LAYOUT[cohort]
        name = f"{case_id}.nii.gz"
        write_phantom(ph, tmp / img_dir / name, tmp / inf_dir / name if inf_dir else None,
                      tmp / lung_dir / name)
        if truth_dir:
            write_phantom(ph, tmp / img_dir / name, tmp / truth_dir / name, None, image=False)
    (tmp / "cohort.json").write_text(json.dumps({"spec": asdict(spec), "key": spec.key()},
                                                indent=1))
    if root.exists():  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, root)
    return root


# --- a public-looking 2D slice set --------------------------------------------------------------
