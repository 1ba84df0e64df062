"""Layout adapters: build a case manifest from a public dataset's own folder layout.

A manifest row (:class:`CaseRecord`) is: case id, image path, optional infection (or lesion)
mask, optional lung mask, source dataset, labelled or not, official split if any.

Adapters (``dataset=``):

* ``covid19-ct-seg`` — COVID-19-CT-Seg (Zenodo 3757476): ``COVID-19-CT-Seg_20cases/*.nii.gz``,
  ``Infection_Mask/<same name>``, ``Lung_Mask/<same name>``.
* ``mosmed`` — MosMedData: ``studies/CT-0..CT-4/study_NNNN.nii.gz``,
  ``masks/study_NNNN_mask.nii.gz``
  (the 50 masked CT-1 studies are labelled, the rest unlabelled; the CT grade is kept).
* ``msd-lung`` — Medical Segmentation Decathlon Task06_Lung: ``dataset.json`` with
  ``imagesTr``/``labelsTr`` (tumour masks) and ``imagesTs`` (official test split, unlabelled).
* ``nsclc`` — NSCLC pleural-effusion / lung masks: ``images/LUNG1-NNN.nii.gz``,
  ``masks/LUNG1-NNN_effusion*.nii.gz`` and ``masks/LUNG1-NNN_lung*.nii.gz``.
Each row also says what its mask marks (``task``): ``infection`` for the COVID sets, ``tumour``
(MSD), ``effusion`` (NSCLC), ``nodule`` (the demo's non-COVID cohort).  Splits are made over the
labelled ``infection`` cases; the others are auxiliary data for supervised pretraining.

* ``glob`` — patterns ``images=``, ``masks=``, ``test_images=``, ``test_masks=``, ``unlabelled=``
  (relative to ``data`` or absolute); images and masks are paired by file stem (mask suffixes
  such as ``_mask``, ``_seg``, ``_label`` ignored).  Works for 2D slice sets (PNG/JPG/TIF).
* ``demo`` — the synthetic phantom cohort written by :mod:`covidseg.data.phantom`.
"""

from __future__ import annotations

import csv
import glob as globmod
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from covidseg.data.readers import SLICE_SUFFIXES, VOLUME_SUFFIXES, stem_of, suffix_of
from covidseg.data.vocabulary import Layout, Task
from covidseg.errors import ConfigError, first_line

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

    def __post_init__(self):
        self.labelled = bool(self.infection) if self.labelled is None else bool(self.labelled)


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


def _is_image(p: Path) -> bool:
    return (p.is_file() and suffix_of(p) in IMAGE_SUFFIXES and not p.name.startswith("._")
            and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _is_image(p))


def _unique_ids(records: list[CaseRecord]) -> list[CaseRecord]:
    seen: dict[str, int] = {}
    for r in records:
        if r.case_id in seen:
            seen[r.case_id] += 1
            r.case_id = f"{r.case_id}__{seen[r.case_id]}"
        else:
            seen[r.case_id] = 0
    return records


# --- adapters -------------------------------------------------------------------------------

def covid19_ct_seg(root: Path, **_) -> list[CaseRecord]:
    img_dirs = [d for d in root.iterdir() if d.is_dir() and d.name.startswith("COVID-19-CT-Seg")]
    if not img_dirs and (root / "images").is_dir():
        img_dirs = [root / "images"]
    if not img_dirs:
        raise ConfigError(f"{root}: no COVID-19-CT-Seg_20cases folder (COVID-19-CT-Seg layout)")
    records = []
    for img in _images_in(img_dirs[0]):
        name = img.name
        inf = root / "Infection_Mask" / name
        lung = root / "Lung_Mask" / name
        records.append(CaseRecord(stem_of(img), str(img), str(inf) if inf.exists() else None,
                                  str(lung) if lung.exists() else None, "covid19-ct-seg",
                                  inf.exists()))
    return records


def mosmed(root: Path, **_) -> list[CaseRecord]:
    studies = root / "studies"
    if not studies.is_dir():
        raise ConfigError(f"{root}: no studies/ folder (MosMedData layout)")
    masks = {stem_of(m).replace("_mask", ""): m for m in _images_in(root / "masks")}
    records = []
    for grade_dir in sorted(d for d in studies.iterdir() if d.is_dir()):
        for img in _images_in(grade_dir):
            sid = stem_of(img)
            m = masks.get(sid)
            records.append(CaseRecord(sid, str(img), str(m) if m else None, None, "mosmed",
                                      m is not None, None, grade_dir.name))
    return records


def msd_lung(root: Path, **_) -> list[CaseRecord]:
    meta_path = root / "dataset.json"
    if not meta_path.exists():
        raise ConfigError(f"{root}: no dataset.json (MSD Task06_Lung layout)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{meta_path}: not valid JSON ({exc.msg})") from exc
    records = []
    for item in meta.get("training", []):
        img, lab = root / item["image"], root / item["label"]
        if img.name.startswith("._"):
            continue
        records.append(CaseRecord(stem_of(img), str(img), str(lab), None, "msd-lung", True,
                                  "train", task="tumour"))
    for item in meta.get("test", []):
        img = root / (item if isinstance(item, str) else item["image"])
        if img.name.startswith("._"):
            continue
        records.append(CaseRecord(stem_of(img), str(img), None, None, "msd-lung", False, "test",
                                  task="tumour"))
    return records


def nsclc(root: Path, **_) -> list[CaseRecord]:
    img_dir = root / "images" if (root / "images").is_dir() else root
    mask_dir = root / "masks" if (root / "masks").is_dir() else root
    masks = _images_in(mask_dir)
    records = []
    for img in _images_in(img_dir):
        sid = stem_of(img)
        if not re.match(r"LUNG1-\d+$", sid):
            continue
        eff = [m for m in masks
               if stem_of(m).startswith(sid + "_") and "effusion" in m.name.lower()]
        lung = [m for m in masks if stem_of(m).startswith(sid + "_") and "lung" in
                stem_of(m)[len(sid):].lower()]
        records.append(CaseRecord(sid, str(img), str(eff[0]) if eff else None,
                                  str(lung[0]) if lung else None, "nsclc", bool(eff),
                                  task="effusion"))
    if not records:
        raise ConfigError(f"{root}: no LUNG1-NNN images (NSCLC layout)")
    return records


_MASK_SUFFIX = re.compile(r"([_-](mask|seg|segmentation|label|labels|gt|infection|lesion))+$",
                          re.IGNORECASE)


def _expand(root: Path, pattern: str | None) -> list[Path]:
    if not pattern:
        return []
    pat = pattern if Path(pattern).is_absolute() else str(root / pattern)
    hits = sorted(Path(p) for p in globmod.glob(pat, recursive=True))
    return [p for p in hits if _is_image(p) or p.is_dir()]


def _pair(images: list[Path], masks: list[Path], what: str) -> list[tuple[Path, Path | None]]:
    if not masks:
        return [(i, None) for i in images]
    by_stem = {_MASK_SUFFIX.sub("", stem_of(m)): m for m in masks}
    pairs = [(i, by_stem.get(_MASK_SUFFIX.sub("", stem_of(i)))) for i in images]
    if any(m is None for _, m in pairs):
        if len(images) == len(masks):  # names do not match: fall back to sorted order
            return list(zip(images, masks))
        missing = [str(i) for i, m in pairs if m is None][:3]
        raise ConfigError(f"{what}: {len(images)} images but {len(masks)} masks and no mask "
                          f"matches {', '.join(missing)}")
    return pairs


def glob_layout(root: Path, images=None, masks=None, test_images=None, test_masks=None,
                unlabelled=None, lungs=None, source=None, task="infection",
                **_) -> list[CaseRecord]:
    if not (images or unlabelled or test_images):
        raise ConfigError("dataset=glob needs at least one of images=, unlabelled=, test_images=")
    source = source or root.name or "glob"
    records = []
    lung_masks = {_MASK_SUFFIX.sub("", stem_of(p)).replace("_lung", ""): p
                  for p in _expand(root, lungs)}

    def lung_for(img: Path):
        p = lung_masks.get(stem_of(img))
        return str(p) if p else None

    for pattern, mpattern, split in ((images, masks, None), (test_images, test_masks, "test")):
        imgs = _expand(root, pattern)
        if pattern and not imgs:
            raise ConfigError(f"no images match {pattern!r} under {root}")
        msks = _expand(root, mpattern)
        if mpattern and not msks:
            raise ConfigError(f"no masks match {mpattern!r} under {root}")
        for img, m in _pair(imgs, msks, pattern or ""):
            records.append(CaseRecord(stem_of(img), str(img), str(m) if m else None, lung_for(img),
                                      source, m is not None, split, task=task))
    if unlabelled:
        imgs = _expand(root, unlabelled)
        if not imgs:
            raise ConfigError(f"no images match {unlabelled!r} under {root}")
        for img in imgs:
            records.append(CaseRecord(stem_of(img), str(img), None, lung_for(img), source, False,
                                      task=task))
    return records


def demo_layout(root: Path, **_) -> list[CaseRecord]:
    from covidseg.data.phantom import DEMO_LAYOUT

    records = []
    for cohort, (img_dir, inf_dir, lung_dir, truth_dir) in DEMO_LAYOUT.items():
        for img in _images_in(root / img_dir):
            inf = root / inf_dir / img.name if inf_dir else None
            lung = root / lung_dir / img.name
            truth = root / truth_dir / img.name if truth_dir else None
            records.append(CaseRecord(stem_of(img), str(img),
                                      str(inf) if inf is not None and inf.exists() else None,
                                      str(lung) if lung.exists() else None, f"phantom-{cohort}",
                                      inf is not None,
                                      task="nodule" if cohort == "noncovid" else "infection",
                                      truth=str(truth) if truth is not None and truth.exists()
                                      else None))
    return records


ADAPTERS = {
    Layout.COVID19_CT_SEG: covid19_ct_seg,
    Layout.MOSMED: mosmed,
    Layout.MSD_LUNG: msd_lung,
    Layout.NSCLC: nsclc,
    Layout.GLOB: glob_layout,
    Layout.DEMO: demo_layout,
}


# Folders of images and masks that ``dataset=auto`` reads without patterns: the labelled part
# under labelled/ or train/ (images/ + masks/), optionally test/ (images/ + masks/) and
# unlabelled/images/ (or unlabelled/) — the layout of most public 2D slice sets and of
# covidseg's own slice export
FOLDER_PATTERNS = {
    "labelled": {"images": "labelled/images/*", "masks": "labelled/masks/*"},
    "train": {"images": "train/images/*", "masks": "train/masks/*"},
}
FOLDER_EXTRAS = {"test_images": "test/images/*", "test_masks": "test/masks/*",
                 "unlabelled": "unlabelled/images/*"}


def folder_patterns(root: Path) -> dict | None:
    """The glob patterns of an images/masks folder layout under ``root`` (see
    :data:`FOLDER_PATTERNS`), or None."""
    for part, pats in FOLDER_PATTERNS.items():
        if (root / part / "images").is_dir() and (root / part / "masks").is_dir():
            found = dict(pats)
            for key, pat in FOLDER_EXTRAS.items():
                if (root / pat.rsplit("/", 1)[0]).is_dir():
                    found[key] = pat
            if "unlabelled" not in found and (root / "unlabelled").is_dir() and any(
                    _is_image(p) for p in (root / "unlabelled").iterdir()):
                found["unlabelled"] = "unlabelled/*"
            if "test_images" in found and "test_masks" not in found:
                del found["test_images"]
            return found
    return None


def detect_layout(root: Path, patterns: dict) -> str:
    """Which adapter fits ``root`` (``dataset=auto``); for an images/masks folder layout
    (:func:`folder_patterns`) the glob adapter, whose patterns the caller fills in."""
    if any(patterns.get(k) for k in ("images", "unlabelled", "test_images")):
        return "glob"
    if folder_patterns(root):
        return "glob"
    if (root / "cohort.json").exists():
        return "demo"
    if (root / "dataset.json").exists():
        return "msd-lung"
    if (root / "Infection_Mask").is_dir() or any(root.glob("COVID-19-CT-Seg*")):
        return "covid19-ct-seg"
    if (root / "studies").is_dir():
        return "mosmed"
    if any(root.glob("**/LUNG1-*")):
        return "nsclc"
    raise ConfigError(f"{root}: cannot tell which dataset layout this is; pass dataset= "
                      f"({', '.join(ADAPTERS)}) or images=/masks= glob patterns")


ROLES = ("", "labelled", "unlabelled", "test", "auxiliary")
SOURCE_KEYS = {"data", "dataset", "task", "role", "name", "images", "masks", "test_images",
               "test_masks", "unlabelled", "lungs"}


def read_sources(path) -> list[dict]:
    """The entries of a sources file (YAML or JSON: a list, or ``{"sources": [...]}``)."""
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{p}: sources file does not exist")
    text = p.read_text()
    try:
        doc = json.loads(text)
    except ValueError:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or first_line(exc)
            raise ConfigError(f"{p}: not YAML/JSON{where} ({problem})") from exc
    entries = doc.get("sources") if isinstance(doc, dict) else doc
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{p}: expected a list of sources (each with data:)")
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not e.get("data") or not isinstance(e["data"], str):
            raise ConfigError(f"{p}: source {i + 1} has no data: folder")
        unknown = set(e) - SOURCE_KEYS
        if unknown:
            raise ConfigError(f"{p}: source {i + 1} has unknown keys {sorted(unknown)} "
                              f"(known: {', '.join(sorted(SOURCE_KEYS))})")
        if e.get("task", "infection") not in Task.values():
            raise ConfigError(f"{p}: source {i + 1}: task={e['task']!r} is not one of "
                              f"{', '.join(Task)}")
        if e.get("role", "") not in ROLES:
            raise ConfigError(f"{p}: source {i + 1}: role={e['role']!r} is not one of "
                              f"{', '.join(r for r in ROLES if r)}")
        if "name" in e and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*(_[A-Za-z0-9.-]+)*",
                                            str(e["name"])):
            raise ConfigError(f"{p}: source {i + 1}: name={e['name']!r} must be letters, digits, "
                              ". - and single _ (it prefixes case ids as NAME__id)")
    return entries


def combine_sources(path) -> list[CaseRecord]:
    """One manifest from several sources (``preprocess -P sources=FILE``): each source read by its
    adapter (``dataset``, default auto; relative ``data`` folders are relative to the file), its
    masks' ``task`` set when given, its ``role`` applied — ``unlabelled`` drops its masks,
    ``test`` puts its labelled cases in the held-out test split, ``labelled`` keeps them out of
    it, ``auxiliary`` marks them as non-COVID pretraining data (task ``other`` unless given) —
    and its case ids prefixed with its ``name`` (default: the folder's name)."""
    base = Path(path).expanduser().resolve().parent
    records, names = [], set()
    for i, e in enumerate(read_sources(path)):
        root = Path(e["data"]).expanduser()
        root = root if root.is_absolute() else base / root
        patterns = {k: e[k] for k in ("images", "masks", "test_images", "test_masks",
                                      "unlabelled", "lungs") if e.get(k)}
        try:
            _, recs = build_manifest(root, e.get("dataset", "auto"), **patterns)
        except ConfigError as exc:
            raise ConfigError(f"{path}: source {i + 1}: {exc}") from exc
        name = str(e.get("name") or re.sub(r"[^A-Za-z0-9.-]+", "-", root.name))
        if name in names:
            raise ConfigError(f"{path}: two sources are named {name!r}: give each a name:")
        names.add(name)
        role = e.get("role", "")
        for r in recs:
            r.case_id, r.source = f"{name}__{r.case_id}", name
            if e.get("task"):
                r.task = e["task"]
            if role == "unlabelled":
                r.infection, r.labelled, r.split = None, False, None
            elif role == "test":
                r.split = "test" if r.labelled else r.split
            elif role == "labelled":
                r.split = "train" if r.labelled and r.split != "test" else r.split
            elif role == "auxiliary" and r.task == "infection":
                r.task = "other"  # auxiliary data is not COVID infection (unless it says what)
        records += recs
    return _unique_ids(records)


def build_manifest(root, dataset: str = "auto", **patterns) -> tuple[str, list[CaseRecord]]:
    """Manifest of the cases under ``root`` read by the ``dataset`` adapter (or detected)."""
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"{root}: data folder does not exist")
    if dataset == "auto":
        dataset = detect_layout(root, patterns)
        if dataset == "glob" and not any(patterns.get(k) for k in ("images", "unlabelled",
                                                                    "test_images")):
            patterns = {**patterns, **folder_patterns(root)}
    if dataset not in ADAPTERS:
        raise ConfigError(f"dataset={dataset!r} is not one of {', '.join(['auto', *ADAPTERS])}")
    records = _unique_ids(ADAPTERS[dataset](root, **patterns))
    if not records:
        raise ConfigError(f"{root}: the {dataset} layout found no images")
    return dataset, records
