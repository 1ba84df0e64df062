"""The preprocessed dataset on disk, keyed by a content hash (the stages resolve a user's
``data=`` to one in :mod:`covidseg.stages.datasets`).

Layout of one dataset (``$COVIDSEG_CACHE/preprocessed/<key>/``)::

    dataset.json      descriptor: key, config, cases with their metadata, fingerprint, counts
    splits.json       held-out test ids, k folds, unlabelled ids (reproducible by seed)
    manifest.csv      the input manifest the dataset was built from
    failed.csv        cases that could not be processed, with the reason
    cases/<id>/image.npy, infection.npy, lung.npy, meta.json
    cases/<id>/truth.npy   oracle lesions of an unlabelled demo case (never loaded for training)
    cases/<id>/original.npz  the reference mask on the original grid (canonical orientation), for
                             original-grid evaluation

``dataset.json`` is written last: its presence marks a complete dataset (a cache hit).  A run
interrupted midway keeps the cases it finished (each has a ``meta.json``) and a re-run with the
same inputs and settings only processes the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from covidseg.base.errors import ConfigError
from covidseg.data.splits import Splits

STORE_VERSION = 1


def file_digest(path: Path, _block: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (of every file, in name order, for a DICOM folder)."""
    h = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.name.encode() if path.is_dir() else b"")
        try:
            with open(f, "rb") as fh:
                while chunk := fh.read(_block):
                    h.update(chunk)
        except OSError:
            h.update(b"<unreadable>")
    return h.hexdigest()


def content_key(records, settings: dict) -> str:
    """Key of a dataset: the bytes of every input file plus the settings that shape the output."""
    h = hashlib.sha256()
    h.update(json.dumps({"store": STORE_VERSION, **settings}, sort_keys=True).encode())
    for r in sorted(records, key=lambda r: r.case_id):
        h.update(json.dumps([r.case_id, r.source, r.labelled, r.split, r.grade, r.task]).encode())
        for p in (r.image, r.infection, r.lung):
            h.update(file_digest(Path(p)).encode() if p and Path(p).exists() else b"-")
        if r.truth:
            h.update(file_digest(Path(r.truth)).encode())
    return h.hexdigest()[:20]


class PreprocessedDataset:
    """A complete preprocessed dataset: descriptor, splits and per-case arrays."""

    def __init__(self, root: Path):
        self.root = Path(root)
        desc = self.root / "dataset.json"
        if not desc.exists():
            raise ConfigError(f"{self.root}: not a preprocessed dataset (no dataset.json)")
        self.descriptor = json.loads(desc.read_text())
        self.splits = Splits.from_json(json.loads((self.root / "splits.json").read_text()))
        self.cases = {c["case_id"]: c for c in self.descriptor["cases"]}

    @property
    def key(self) -> str:
        return self.descriptor["key"]

    def case_dir(self, case_id: str) -> Path:
        return self.root / "cases" / case_id

    def load(self, case_id: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray | None,
                                                              np.ndarray | None]:
        """(image, infection or None, lung or None) of one case, (z, y, x)."""
        d = self.case_dir(case_id)
        mode = "r" if mmap else None

        def opt(name):
            p = d / f"{name}.npy"
            return np.load(p, mmap_mode=mode) if p.exists() else None

        return np.load(d / "image.npy", mmap_mode=mode), opt("infection"), opt("lung")

    def load_original(self, case_id: str) -> np.ndarray | None:
        """The reference mask of a labelled case on its original grid (canonical orientation,
        ``meta["canonical_geometry"]``), or None (datasets preprocessed before it was kept)."""
        p = self.case_dir(case_id) / "original.npz"
        if not p.exists():
            return None
        with np.load(p) as f:
            return f["infection"]

    def load_truth(self, case_id: str) -> np.ndarray | None:
        """The oracle lesions of an unlabelled case (demo phantoms), or None.  Only for scoring
        pseudo-labels: :meth:`load`, and so every training stage, never returns them."""
        p = self.case_dir(case_id) / "truth.npy"
        return np.load(p, mmap_mode="r") if p.exists() else None

    def meta(self, case_id: str):
        """A case's metadata as a :class:`~covidseg.data.case.CaseMeta` (``cases[case_id]`` is
        the same as stored, a dict)."""
        from covidseg.data.case import CaseMeta

        return CaseMeta.from_json(self.cases[case_id])

    def ids(self, labelled: bool | None = None) -> list[str]:
        return [c for c, m in self.cases.items() if labelled is None or m["labelled"] == labelled]


def write_case(case_dir: Path, image: np.ndarray, infection, lung, meta: dict,
               dtype: str = "float32", truth=None, original=None) -> None:
    """Write one case's arrays, then its meta.json (the per-case completion marker)."""
    case_dir.mkdir(parents=True, exist_ok=True)
    np.save(case_dir / "image.npy", image.astype(dtype))
    if original is not None:  # masks compress ~100x: the copy costs little beside the image
        np.savez_compressed(case_dir / "original.npz", infection=original.astype(np.uint8))
    for name, arr in (("infection", infection), ("lung", lung), ("truth", truth)):
        p = case_dir / f"{name}.npy"
        if arr is not None:
            np.save(p, arr.astype(np.uint8))
        elif p.exists():
            p.unlink()
    tmp = case_dir / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1, default=float))
    os.replace(tmp, case_dir / "meta.json")


def read_case_meta(case_dir: Path) -> dict | None:
    p = case_dir / "meta.json"
    return json.loads(p.read_text()) if p.exists() else None


def dataset_size_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file()) / 1e6
