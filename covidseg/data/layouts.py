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

* ``nnunet`` — an nnU-Net v2 raw dataset (``DatasetNNN_Name/``): ``dataset.json`` (one channel,
  ``labels``, ``file_ending``, ``numTraining``), ``imagesTr/<case>_0000<file_ending>`` with
  ``labelsTr/<case><file_ending>``, ``imagesTs/`` (with ``labelsTs/``: the official test split;
  a test image without a label is unlabelled), and ``splits_final.json`` (its validation folds
  become covidseg's folds).  The label names say which values are the lesion and which the lungs
  (:func:`nnunet_labels`); the label map is read through :attr:`CaseRecord.label_values`.
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


def _dataset_json(root: Path, layout: str) -> tuple[Path, dict]:
    """(path, contents) of the ``dataset.json`` of an MSD or nnU-Net folder."""
    meta_path = root / "dataset.json"
    if not meta_path.exists():
        raise ConfigError(f"{root}: no dataset.json ({layout} layout)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{meta_path}: not valid JSON ({exc.msg})") from exc
    if not isinstance(meta, dict):
        raise ConfigError(f"{meta_path}: not a JSON object")
    return meta_path, meta


def msd_lung(root: Path, **_) -> list[CaseRecord]:
    _, meta = _dataset_json(root, "MSD Task06_Lung")
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


# nnU-Net label names: what covidseg makes of each (value 0 is the background whatever its name)
LESION_WORDS = ("lesion", "infection", "covid", "ggo", "ground", "consolidation", "opacit")
LUNG_WORDS = {"lung", "lungs", "left", "right", "l", "r"}
NNUNET_CHANNEL = "_0000"  # nnU-Net's file name suffix of the first (here: only) channel


def nnunet_labels(labels, meta_path: Path) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(lesion values, lung values) of an nnU-Net ``labels`` dict ``{name: value}``: names like
    lesion/infection/covid/ggo/ground-glass/consolidation are the lesion (several: covidseg's
    classes in value order), lung/lungs (also left/right lung) the lungs; anything else, a
    region-based label (a list of values) or no lesion label is refused in one line."""
    if not isinstance(labels, dict) or not labels:
        raise ConfigError(f"{meta_path}: 'labels' is not a {{name: value}} mapping")
    lesion, lung = [], []
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise ConfigError(f"{meta_path}: label {name!r} is region-based ({list(value)}): "
                              "covidseg reads plain label maps (one value per label)")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{meta_path}: label {name!r} has value {value!r}, not an integer")
        words = set(re.split(r"[^a-z]+", str(name).lower())) - {""}
        if value == 0:
            continue
        if any(w in str(name).lower() for w in LESION_WORDS):
            lesion.append(value)
        elif words and words <= LUNG_WORDS and words & {"lung", "lungs"}:
            lung.append(value)
        else:
            raise ConfigError(f"{meta_path}: label {name!r} (value {value}) is not understood: "
                              "covidseg reads lesion labels (lesion, infection, covid, ggo, "
                              "consolidation), lung/lungs and background 0")
    if not lesion:
        raise ConfigError(f"{meta_path}: no lesion label among {', '.join(map(str, labels))} "
                          "(expected a name like lesion, infection, covid, ggo, consolidation)")
    return tuple(sorted(lesion)), tuple(sorted(set(lung) | set(lesion))) if lung else ()


def _nnunet_meta(root: Path) -> tuple[Path, dict]:
    meta_path, meta = _dataset_json(root, "nnU-Net raw dataset")
    missing = [k for k in ("channel_names", "labels", "numTraining", "file_ending")
               if k not in meta]
    if missing:
        raise ConfigError(f"{meta_path}: missing {', '.join(missing)} (nnU-Net v2 dataset.json)")
    channels = meta["channel_names"]
    if not isinstance(channels, dict) or len(channels) != 1:
        shown = ", ".join(map(str, channels.values())) if isinstance(channels, dict) else channels
        raise ConfigError(f"{meta_path}: channel_names has {len(channels)} channels ({shown}): "
                          "covidseg reads single-channel CT")
    if meta["file_ending"] not in IMAGE_SUFFIXES:
        raise ConfigError(f"{meta_path}: file_ending {meta['file_ending']!r} is not a format "
                          f"covidseg reads ({', '.join(IMAGE_SUFFIXES)})")
    return meta_path, meta


def _nnunet_folds(root: Path) -> dict[str, int]:
    """Case id -> fold of ``splits_final.json`` (each fold's ``val`` list), when the raw folder
    has one; refused when the validation sets overlap."""
    path = root / "splits_final.json"
    if not path.exists():
        return {}
    try:
        splits = json.loads(path.read_text())
        folds = {}
        for k, fold in enumerate(splits):
            for case in fold["val"]:
                if case in folds:
                    raise ConfigError(f"{path}: case {case!r} is in the validation set of folds "
                                      f"{folds[case]} and {k}: covidseg's folds partition the "
                                      "training cases")
                folds[case] = k
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise ConfigError(f"{path}: not an nnU-Net splits file (a list of {{'train': [...], "
                          f"'val': [...]}}): {first_line(exc)}") from exc
    return folds


def nnunet(root: Path, **_) -> list[CaseRecord]:
    meta_path, meta = _nnunet_meta(root)
    ending = meta["file_ending"]
    lesion, lung = nnunet_labels(meta["labels"], meta_path)
    values = f"infection={','.join(map(str, lesion))}" + (
        f";lung={','.join(map(str, lung))}" if lung else "")
    folds = _nnunet_folds(root)
    source = root.name

    def cases(folder: str) -> list[tuple[str, Path]]:
        if isinstance(meta.get("dataset"), dict) and folder == "imagesTr":  # explicit file lists
            try:
                return [(case, root / item["images"][0]) for case, item in meta["dataset"].items()]
            except (KeyError, TypeError, IndexError) as exc:
                raise ConfigError(f"{meta_path}: 'dataset' is not {{case: {{'images': [...], "
                                  f"'label': ...}}}} ({first_line(exc)})") from exc
        tail = NNUNET_CHANNEL + ending
        return [(p.name[:-len(tail)], p) for p in _images_in(root / folder)
                if p.name.endswith(tail)]

    def record(case, img, label: Path, split, labelled: bool) -> CaseRecord:
        """``labelled``: a training case is, even when its label file is missing (then that
        case alone fails, naming the file); a test case is when labelsTs has its label."""
        lab = str(label) if labelled else None
        return CaseRecord(case, str(img), lab, lab if lung else None, source, labelled, split,
                          label_values=values if labelled else None)

    train = cases("imagesTr")
    if len(train) != meta["numTraining"]:
        raise ConfigError(f"{meta_path}: numTraining is {meta['numTraining']} but imagesTr has "
                          f"{len(train)} cases named <case>{NNUNET_CHANNEL}{ending}")
    listed = meta["dataset"] if isinstance(meta.get("dataset"), dict) else {}
    records = []
    for case, img in train:
        label = root / str(listed[case].get("label")) if case in listed else \
            root / "labelsTr" / f"{case}{ending}"
        records.append(record(case, img, label, f"fold{folds[case]}" if case in folds else None,
                              True))
    for case, img in cases("imagesTs"):
        label = root / "labelsTs" / f"{case}{ending}"
        has = label.exists()  # without a label: an unlabelled image, not part of the test split
        records.append(record(case, img, label, "test" if has else None, has))
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
    Layout.NNUNET: nnunet,
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


def _is_nnunet(root: Path) -> bool:
    """An nnU-Net v2 raw dataset: dataset.json with channel_names (MSD's has modality and
    training lists) and imagesTr/."""
    try:
        meta = json.loads((root / "dataset.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "channel_names" in meta and (root / "imagesTr").is_dir()


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
        return "nnunet" if _is_nnunet(root) else "msd-lung"
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
