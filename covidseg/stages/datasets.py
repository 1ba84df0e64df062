"""What a stage's ``data=`` means: a preprocess run (its dataset from this machine's cache, else
downloaded), a preprocessed folder, or ``demo`` — resolved here, above the data layer, because it
may ask the tracking server or run preprocessing; :func:`open_dataset` also records the run's
lineage and dataset input."""

from __future__ import annotations

from pathlib import Path

from covidseg import tracking
from covidseg.base.errors import ConfigError
from covidseg.base.paths import cache_root
from covidseg.data.store import PreprocessedDataset
from covidseg.tracking import Tag


def open_dataset(data: str, tracker, context: str = "training") -> PreprocessedDataset:
    """:func:`resolve_dataset` for a stage's run: the dataset, with the run's lineage tag pointing
    at the preprocess run (for ``demo`` or a folder: a finished run that built the same dataset
    key, when the server knows one), and logged as the run's dataset input (``context``:
    training or evaluation; digest = the content key)."""

    ds, source = resolve_dataset(data)
    if source is None:
        source = tracker.find_run({Tag.DATASET_KEY: ds.key, Tag.ENTRY_POINT: "preprocess"})
    tracker.link_source("data", source)
    desc = ds.descriptor
    tracker.log_dataset_input(
        name=f"{desc.get('dataset', 'covidseg')}-{Path(desc.get('data_root', '')).name or ds.key}",
        digest=ds.key, source={"preprocess_run": source, "dataset_key": ds.key},
        profile={"cases": desc.get("n_cases"), "test": len(ds.splits.test),
                 "unlabelled": len(ds.splits.unlabelled),
                 "labels": desc.get("config", {}).get("labels", "binary")},
        context=context)
    return ds


def resolve_dataset(data: str) -> tuple[PreprocessedDataset, str | None]:
    """Open the preprocessed dataset a training stage was given; returns (dataset, source run id).

    ``data`` is a preprocess run id or ``runs:/<id>`` (the local cache is used when it holds the
    same dataset key, else the run's ``dataset`` artifacts are downloaded), a preprocessed folder,
    a raw data folder (preprocessed as the plan says: :func:`raw_preprocess_config`), or ``demo``
    (the default demo cohort, preprocessed on first use).
    """

    if data == "demo":
        from covidseg.config import PreprocessConfig
        from covidseg.stages.preprocess import preprocess_dataset

        summary = preprocess_dataset(PreprocessConfig(), progress=True)
        return PreprocessedDataset(Path(summary["dataset_path"])), None
    if tracking.is_run_ref(data):
        run_id, _ = tracking.resolve_run_ref(data)
        run = tracking.run_info(run_id)
        key = run.data.tags.get(Tag.DATASET_KEY)
        if not key:
            raise ConfigError(f"run {run_id} is not a preprocess run (no covidseg.dataset_key tag)")
        local = cache_root() / "preprocessed" / key
        if (local / "dataset.json").exists():
            return PreprocessedDataset(local), run_id
        holder = run.data.tags.get(Tag.DATASET_RUN)
        if not holder:
            raise ConfigError(f"run {run_id}: its dataset was not uploaded (larger than "
                              f"log_dataset_mb) and is not in this machine's cache ({local})")
        root = tracking.download_run_artifacts(holder, "dataset")
        ds = PreprocessedDataset(root)
        if ds.key != key:
            raise ConfigError(f"run {run_id}: downloaded dataset key {ds.key} != tag {key}")
        return ds, run_id
    path = Path(data).expanduser()
    if (path / "dataset.json").exists():
        return PreprocessedDataset(path), None
    if path.is_dir():
        return preprocess_raw(path), None
    raise ConfigError(f"data={data!r} is not a preprocess run id, runs:/ URI, folder or 'demo'")


def raw_preprocess_config(path: Path):
    """How a training stage preprocesses a raw data folder it was given (``data=FOLDER``): the
    layout detected; for a 2D slice set the side the plan derives from the slices
    (:func:`covidseg.train.plan.slice_size_for`); no held-out test set unless the folder has an
    official one (every labelled case then trains or validates: cross-validation is the
    estimate)."""
    from covidseg.config import PreprocessConfig
    from covidseg.data.layouts import build_manifest
    from covidseg.data.readers import is_slice_image
    from covidseg.train.plan import slice_size_for

    _, records = build_manifest(path, "auto")
    labelled = [r for r in records if r.labelled and r.split != "test"]
    size = 0
    if labelled and all(is_slice_image(Path(r.image)) for r in labelled):
        size = slice_size_for([image_shape(Path(r.image)) for r in labelled])
    official = any(r.split == "test" for r in records)
    return PreprocessConfig(data=str(path), image_size=size, test_cases=20 if official else 0)


def image_shape(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, from its header."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    w, h = reader.GetSize()[:2]
    return int(h), int(w)


def preprocess_raw(path: Path) -> PreprocessedDataset:
    """A raw data folder preprocessed as :func:`raw_preprocess_config` says (cached: a second run
    on the same files finds it)."""
    from covidseg.stages.preprocess import preprocess_dataset

    summary = preprocess_dataset(raw_preprocess_config(path), progress=True)
    return PreprocessedDataset(Path(summary["dataset_path"]))
