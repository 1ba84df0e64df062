"""What every benchmark script shares: the machine header, side-by-side timing, the table and the
final ratio line, and a tracking server when a benchmark logs to MLflow.

Scripts in this folder import it as ``from bench import …`` (they run as
``python benchmarks/NAME.py``).  Timings are medians of repeated runs measured in the same
process, one arm after the other; nothing here asserts a wall-clock time.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(REPO))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep the tables readable


def machine(device) -> str:
    """One line naming the hardware and the versions that shape the numbers."""
    import torch

    if device.type == "cuda":
        hw = f"GPU {torch.cuda.get_device_name(device)}"
    else:
        hw = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
             f"{torch.get_num_threads()} torch threads"
    return (f"{hw} | python {platform.python_version()} torch {torch.__version__} "
            f"(cuda {torch.version.cuda or '-'})")


def header(title: str, device, **settings) -> None:
    print(f"== {title}")
    print(f"machine: {machine(device)}")
    if settings:
        print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    sys.stdout.flush()


def sync(device) -> None:
    import torch

    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device=None, repeat: int = 3, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def table(rows: list[dict], floatfmt: str = "{:.3g}") -> None:
    """A plain aligned text table of ``rows`` (same keys in each)."""
    if not rows:
        return
    cols = list(rows[0])
    cells = [[c for c in cols]] + [[floatfmt.format(r[c]) if isinstance(r[c], float) else str(r[c])
                                     for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    for j, row in enumerate(cells):
        print("  ".join(v.rjust(w) if j else v.ljust(w) for v, w in zip(row, widths)))
        if j == 0:
            print("  ".join("-" * w for w in widths))
    sys.stdout.flush()


def ratios(**values: float) -> None:
    """The final line every script prints: ``RATIOS name=value ...``."""
    print("RATIOS " + " ".join(f"{k}={v:.3f}" for k, v in values.items()))
    sys.stdout.flush()


@contextlib.contextmanager
def tracking_server():
    """The server in ``MLFLOW_TRACKING_URI``, or a throw-away local ``mlflow server``."""
    from covidseg.tracking.local_server import LocalServer

    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith("http"):
        yield uri
        return
    with tempfile.TemporaryDirectory(prefix="covidseg-bench-mlflow-") as tmp:
        with LocalServer(Path(tmp)) as server:
            os.environ["MLFLOW_TRACKING_URI"] = server.uri
            try:
                yield server.uri
            finally:
                os.environ.pop("MLFLOW_TRACKING_URI", None)


def demo_dataset(labelled: int, size: int, depth_mm: int, unlabelled: int = 0,
                 image_size: int = 0, test_cases: int = 1, folds: int = 2, noncovid: int = 0):
    """A preprocessed phantom dataset (built once, then found in covidseg's cache)."""
    from covidseg.config import PreprocessConfig
    from covidseg.data.store import PreprocessedDataset
    from covidseg.stages.preprocess import preprocess_dataset

    cfg = PreprocessConfig(data="demo", demo_labelled=labelled, demo_unlabelled=unlabelled,
                           demo_noncovid=noncovid, demo_size=size, demo_depth=depth_mm,
                           image_size=image_size, test_cases=test_cases, folds=folds,
                           lung_method="classical")
    summary = preprocess_dataset(cfg, progress=False)
    return PreprocessedDataset(Path(summary["dataset_path"]))
