"""The case manifest: one :class:`CaseRecord` per case (id, image, masks, source, labelled or
not, split, task), written and read as ``manifest.csv``; what counts as an image file."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from covidseg.data.readers import SLICE_SUFFIXES, VOLUME_SUFFIXES, suffix_of

IMAGE_SUFFIXES = VOLUME_SUFFIXES + SLICE_SUFFIXES


@dataclass
class CaseRecord:
    case_id: str
    image: str
    infection: str | None = None
    lung: str | None = None
    source: str = ""
    labelled: bool = False
    split: str | None = None  # official split: "test" / "train" when the dataset defines one
    grade: str | None = None  # e.g. MosMed CT-0..CT-4
    task: str = "infection"  # what the mask marks: infection (COVID) or tumour/effusion/nodule
    truth: str | None = None  # oracle lesions of an unlabelled case (demo phantoms only): stored
    #                           apart, never trained on, only to score pseudo-labels
    label_values: str | None = None  # the masks are one shared label map (nnU-Net): which of its
    #                                  values are the lesion and the lungs, "infection=2;lung=1,2"

    def __post_init__(self):
        self.labelled = bool(self.infection) if self.labelled is None else bool(self.labelled)

    def values_of(self, kind: str) -> tuple[int, ...] | None:
        """The label map values that mark ``kind`` (infection, lung); None: the whole mask."""
        if not self.label_values:
            return None
        spec = dict(part.split("=", 1) for part in self.label_values.split(";") if "=" in part)
        return tuple(int(v) for v in spec.get(kind, "").split(",") if v)


MANIFEST_FIELDS = [f.name for f in fields(CaseRecord)]


def write_manifest(records: list[CaseRecord], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS)
        w.writeheader()
        for r in records:
            w.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})


def read_manifest(path: Path) -> list[CaseRecord]:
    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            row = {k: (v if v != "" else None) for k, v in row.items()}
            row["labelled"] = str(row.get("labelled")).lower() == "true"
            out.append(CaseRecord(**row))
    return out


def is_image(p: Path) -> bool:
    return (p.is_file() and suffix_of(p) in IMAGE_SUFFIXES and not p.name.startswith("._")
            and not p.name.startswith("."))


def images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image(p))


def unique_ids(records: list[CaseRecord]) -> list[CaseRecord]:
    seen: dict[str, int] = {}
    for r in records:
        if r.case_id in seen:
            seen[r.case_id] += 1
            r.case_id = f"{r.case_id}__{seen[r.case_id]}"
        else:
            seen[r.case_id] = 0
    return records
