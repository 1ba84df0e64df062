"""The pseudo-labelled set that ``pseudolabel`` writes and ``meanteacher`` reads.

One file (``pseudo/pseudo_labels.npz``, plain arrays, loaded with ``allow_pickle=False``):

* ``images``  (n, H, W) float32 — accepted unlabelled patches (``source=similarity``) or whole
  unlabelled slices (``source=model``), zero-padded to one size;
* ``masks``   (n, H, W) float32 — soft targets in [0, 1];
* ``weights`` (n, H, W) float32 — each pixel's loss weight: the patch's similarity everywhere on
  the patch (similarity), the model's confidence where it passes the threshold and 0 elsewhere
  (model); 0 on padding;
* ``case_ids``, ``coords`` (z, top-left y, x) — where each item came from;
* ``source``, ``dataset_key`` and ``unlabelled_data`` (the unlabelled data reference, "" for the
  dataset's own unlabelled split: where ``meanteacher`` takes whole unlabelled slices from for its
  consistency term).

The oracle truth of the demo phantoms is never in it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from covidseg.base.errors import ConfigError
from covidseg.semi.vocabulary import PseudoSource

PSEUDO_FILE = "pseudo_labels.npz"


@dataclass(frozen=True)
class Source:
    """What a pseudo-label source makes: ``whole_slices`` — whole unlabelled slices labelled by
    the network (else similarity-assigned patches); ``truth`` — the unlabelled cases' true masks
    in place of the network's labels (the oracle: an upper bound)."""

    whole_slices: bool
    truth: bool = False


# the pseudo-label sources by name (``source=``)
SOURCES = {PseudoSource.MODEL: Source(whole_slices=True),
           PseudoSource.SIMILARITY: Source(whole_slices=False),
           PseudoSource.ORACLE: Source(whole_slices=True, truth=True)}


def pseudo_source(name: str) -> Source:
    if name not in SOURCES:
        raise ConfigError(f"source={name!r} is not one of {', '.join(SOURCES)}")
    return SOURCES[name]


@dataclass
class PseudoSet:
    images: np.ndarray
    masks: np.ndarray
    weights: np.ndarray
    case_ids: np.ndarray
    coords: np.ndarray
    source: str = "similarity"
    dataset_key: str = ""
    unlabelled_data: str = ""

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def empty(cls, size: int, **meta) -> PseudoSet:
        z = np.zeros((0, size, size), np.float32)
        return cls(z, z.copy(), z.copy(), np.zeros(0, str), np.zeros((0, 3), int), **meta)

    def save(self, path: Path) -> Path:
        np.savez_compressed(path, **{f.name: np.asarray(getattr(self, f.name))
                                     for f in fields(self)})
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> PseudoSet:
        with np.load(path, allow_pickle=False) as z:
            missing = [f.name for f in fields(cls) if f.name not in z.files]
            if missing:
                raise ConfigError(f"{path}: not a covidseg pseudo-labelled set (missing "
                                  f"{', '.join(missing)}; made by an older version? re-run "
                                  "pseudolabel)")
            values = {f.name: z[f.name] for f in fields(cls)}
        for k in ("source", "dataset_key", "unlabelled_data"):
            values[k] = str(values[k])
        return cls(**values)


def load_pseudo_set(ref: str) -> tuple[PseudoSet, str | None]:
    """The pseudo-labelled set of a pseudolabel run id (or a local ``.npz``); (set, run id)."""
    path = Path(ref).expanduser()
    run_id = None
    if not path.is_file():
        from covidseg.tracking import (
            download_run_artifacts,
            is_run_ref,
            resolve_run_ref,
        )

        if not is_run_ref(ref):
            raise ConfigError(f"pseudo={ref!r} is not a pseudolabel run id or an .npz file")
        run_id, _ = resolve_run_ref(ref)
        path = download_run_artifacts(run_id, f"pseudo/{PSEUDO_FILE}")
    return PseudoSet.load(path), run_id
