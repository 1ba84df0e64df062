"""Several sources combined into one dataset (``sources=``: a YAML/JSON file listing each
source's data, layout, task and role)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from covidseg.base.errors import ConfigError, first_line
from covidseg.data.layouts.adapters import build_manifest
from covidseg.data.layouts.manifest import CaseRecord, unique_ids
from covidseg.data.vocabulary import Task

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
    return unique_ids(records)
