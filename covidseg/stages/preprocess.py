"""The ``preprocess`` entry point: ``data=`` resolved to a manifest (:mod:`covidseg.data.inputs`),
built into the cached dataset (:mod:`covidseg.data.preprocess`, the steps per case in
:mod:`covidseg.data.steps`), and what the run logs of it: tags (dataset key, cache hit), the
fingerprint as metrics, descriptor, splits, manifest, failures, figures and a per-case table as
artifacts, and the arrays themselves once per dataset key (when under ``log_dataset_mb``).
With ``export_nnunet=DIR`` the cohort is also written there as an nnU-Net raw dataset
(:mod:`covidseg.data.nnunet`); the run logs that folder's ``dataset.json`` and
``splits_final.json`` under ``nnunet/`` (the images stay in the folder).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import fields
from pathlib import Path

from covidseg.base.errors import ConfigError
from covidseg.config import PreprocessConfig
from covidseg.data import inputs
from covidseg.data.fingerprint import fingerprint_metrics
from covidseg.data.inputs import InputSettings, resolve_inputs
from covidseg.data.layouts import CaseRecord
from covidseg.data.nnunet import check_export_folder, export_nnunet
from covidseg.data.phantom import DemoSpec
from covidseg.data.preprocess import build_dataset
from covidseg.data.settings import PreprocessSettings, SplitSettings
from covidseg.data.store import PreprocessedDataset, dataset_size_mb
from covidseg.tracking import NullTracker, Tag

log = logging.getLogger("covidseg.preprocess")

# the columns of preprocess/cases.csv (keys of each case's metadata, CaseMeta)
CASE_COLUMNS = ("case_id", "source", "labelled", "intensity", "looked_like_hu", "lung_method",
                "lung_note", "spacing_in", "shape", "slice_fit", "lesion_fraction",
                "infection_in_lung", "lung_volume_ml", "lesion_volume_ml")


INTENSITY_WORDS = {"hu": "are in HU (lung window, z-scored over the lungs)",
                   "display": "are 8-bit display values (mapped alike: intensity=display)",
                   "image": "are neither (z-scored per image: intensity=image)"}


def _from_config(cls, cfg: PreprocessConfig, **given):
    """A settings object of the data layer: each field the parameter of the same name (those in
    ``given`` as given)."""
    return cls(**{f.name: given[f.name] if f.name in given else getattr(cfg, f.name)
                  for f in fields(cls)})


def preprocess_settings(cfg: PreprocessConfig) -> PreprocessSettings:
    """How each case is preprocessed, as the parameters say."""
    return _from_config(PreprocessSettings, cfg, window=(cfg.window_min, cfg.window_max))


def split_settings(cfg: PreprocessConfig) -> SplitSettings:
    return _from_config(SplitSettings, cfg)


def input_settings(cfg: PreprocessConfig) -> InputSettings:
    """Where the cases come from, as the parameters say (``demo_*``: the demo cohort's size)."""
    demo = DemoSpec(labelled=cfg.demo_labelled, unlabelled=cfg.demo_unlabelled,
                    noncovid=cfg.demo_noncovid, size=cfg.demo_size, depth_mm=cfg.demo_depth,
                    difficulty=cfg.demo_difficulty, display_fraction=cfg.demo_display_fraction,
                    seed=0)
    return _from_config(InputSettings, cfg, demo=demo)


def check_inputs(cfg: PreprocessConfig) -> None:
    """``preprocess``'s check before its run exists (:func:`covidseg.data.inputs.check_inputs`,
    and a valid ``export_nnunet`` folder name)."""
    if cfg.export_nnunet:
        check_export_folder(cfg.export_nnunet)
    inputs.check_inputs(input_settings(cfg))


def preprocess_dataset(cfg: PreprocessConfig, tracker=None, progress: bool = True) -> dict:
    """Build (or find in the cache) the preprocessed dataset; log it; return a summary."""
    tracker = tracker or NullTracker()
    cfg.validate()
    if cfg.export_nnunet:
        check_export_folder(cfg.export_nnunet)
    if cfg.window_min >= cfg.window_max:
        raise ConfigError(f"window_min={cfg.window_min} must be below window_max={cfg.window_max}")
    root, dataset, records = resolve_inputs(input_settings(cfg), progress)
    return preprocess_records(records, cfg, tracker, root=root, dataset=dataset, progress=progress)


def preprocess_records(records: list[CaseRecord], cfg: PreprocessConfig, tracker=None,
                       root: Path | None = None, dataset: str = "manifest",
                       progress: bool = True) -> dict:
    """Preprocess the cases of a manifest into the cache (or find them there); log; summarise."""
    tracker = tracker or NullTracker()
    built = build_dataset(records, preprocess_settings(cfg), split_settings(cfg), cfg.to_params(),
                          root=root, dataset=dataset, strict=cfg.strict, device=cfg.device,
                          progress=progress)
    summary = _log_dataset(built.dataset, tracker, cfg, built.cache_hit, built.seconds)
    if cfg.export_nnunet:
        summary["nnunet"] = _export_nnunet(built.dataset, cfg.export_nnunet, tracker)
    return summary


def _export_nnunet(ds: PreprocessedDataset, folder: str, tracker) -> dict:
    """The cohort as an nnU-Net raw dataset in ``folder``; its descriptor and folds logged."""
    done = export_nnunet(ds, folder)
    out = Path(done["folder"])
    for name in ("dataset.json", "splits_final.json"):
        if (out / name).exists():
            tracker.log_artifact(out / name, "nnunet")
    tracker.log_metrics({"nnunet_train": done["n_train"], "nnunet_test": done["n_test"],
                         "nnunet_unlabelled": done["n_unlabelled"],
                         "nnunet_failed": done["n_failed"]})
    log.info("nnU-Net raw dataset %s %s: %d training, %d test, %d unlabelled cases%s", out,
             "written" if done["written"] else "already exported", done["n_train"],
             done["n_test"], done["n_unlabelled"],
             f" ({done['n_failed']} left out: see dataset.json)" if done["n_failed"] else "")
    return done


def _log_dataset(ds: PreprocessedDataset, tracker, cfg, cache_hit: bool, seconds: float) -> dict:
    root = ds.root
    desc = ds.descriptor
    fp = desc["fingerprint"]
    tracker.set_tags({Tag.DATASET_KEY: ds.key, Tag.CACHE_HIT: str(cache_hit).lower(),
                      Tag.DATASET_PATH: str(root), Tag.LAYOUT: desc["dataset"]})
    metrics = fingerprint_metrics(fp)
    metrics.update({"n_cases": desc["n_cases"], "n_failed": desc["n_failed"],
                    "n_unlabelled": len(ds.splits.unlabelled),
                    "n_auxiliary": len(ds.splits.auxiliary or []),
                    "n_test": len(ds.splits.test), "n_folds": len(ds.splits.folds),
                    "seconds": seconds})
    tracker.log_metrics(metrics)
    for name in ("dataset.json", "splits.json", "fingerprint.json", "failed.csv", "manifest.csv"):
        tracker.log_artifact(root / name, "dataset" if name == "dataset.json" else "preprocess")
    for png in sorted((root / "figures").glob("*.png")):
        tracker.log_artifact(png, "figures")
    per_case = [{k: m.get(k) for k in CASE_COLUMNS} for m in desc["cases"]]
    tracker.log_table(per_case, "preprocess/cases.csv")
    size_mb = dataset_size_mb(root)
    # the arrays go to the server once per dataset key: a cache hit points at the run that has them
    holder = tracker.find_run({Tag.DATASET_KEY: ds.key, Tag.DATASET_UPLOADED: "true"}) \
        if cache_hit else None
    uploaded = holder is None and size_mb <= cfg.log_dataset_mb
    if uploaded:
        tracker.log_artifacts(root / "cases", "dataset/cases")
        tracker.log_artifact(root / "splits.json", "dataset")
        holder = tracker.run_id
    tracker.set_tags({Tag.DATASET_UPLOADED: str(uploaded).lower(),
                      **({Tag.DATASET_RUN: holder} if holder else {})})
    modes = {m["intensity"] for m in desc["cases"]}
    if len(modes) > 1 or cfg.intensity == "auto" and modes - {"hu"}:
        counts = Counter(m["intensity"] for m in desc["cases"])
        log.warning("intensity=%s: of %d cases %s (column 'intensity' of preprocess/cases.csv)",
                    cfg.intensity, len(desc["cases"]),
                    ", ".join(f"{n} {INTENSITY_WORDS[mode]}" for mode, n in sorted(counts.items())))
    return {"dataset_path": str(root), "key": ds.key, "cache_hit": cache_hit,
            "n_cases": desc["n_cases"], "n_failed": desc["n_failed"], "size_mb": size_mb,
            "uploaded": uploaded, "run_id": tracker.run_id}
