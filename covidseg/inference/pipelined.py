"""Many inputs predicted at once: reading, the network and writing as three overlapping stages.

With ``prefetch`` ≥ 1 threads read and preprocess the next ``prefetch`` inputs
(:func:`prepare_workers` at a time; lung extraction included — NumPy, SciPy and SimpleITK
release the GIL), the calling thread runs the network, and one more thread maps the previous
input's output back to its grid and writes it.  Each stage does exactly what the sequential order
(``prefetch=0``) does, so the files written are the same.  On the CPU the network's thread count
follows the other stages (:class:`CpuShare`).  An input that fails (a :class:`CaseError`) is
recorded and the others go on.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk
import torch

from covidseg.base.errors import CaseError
from covidseg.inference.predictor import Predictor

log = logging.getLogger("covidseg.predict")

FAILED_COLUMNS = ["input", "kind", "error"]  # failed.csv next to the masks: an input a row


@dataclass(frozen=True)
class OutputSettings:
    """Where and how each input's prediction is written (:meth:`Predictor.finish`)."""

    folder: Path | str
    threshold: float | str | None = None  # None: the model's own
    restrict_to_lungs: bool = True  # lesion outside the lung mask removed
    probabilities: bool = False  # also the probability maps

    def finish_args(self) -> tuple:
        return self.folder, self.threshold, self.restrict_to_lungs, self.probabilities


class CpuShare:
    """The CPU's cores shared between the network and the pipeline's other stages.

    While ``k`` preparing / writing tasks run, the network (called between its forward passes)
    gets ``cores − k`` torch threads, at least one; when they are idle, all ``cores``.  On a
    2-core CPU a 2-thread network beside a busy preparing thread is oversubscribed, and its
    OpenMP threads wait for each other at every layer, so one descheduled thread stalls both —
    measured in ``benchmarks/volume_inference.py`` (``--threads``).  ``threads`` > 0 fixes the
    count instead.  SimpleITK's filters in those stages get one thread per stage's share of the
    cores (one on 2 cores) for the same reason.  Neither the probabilities nor SimpleITK's results
    depend on the thread counts (the files are compared with the sequential run's in the tests).
    """

    def __init__(self, threads: int = 0, stages: int = 2):
        import threading

        self.cores = torch.get_num_threads()
        self.fixed = threads
        self.busy = 0
        self._lock = threading.Lock()
        self._now = None
        self._itk = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, self.cores // (stages + 1)))

    def run(self, fn, *args):
        """``fn(*args)`` counted as a busy stage task."""
        with self._lock:
            self.busy += 1
        try:
            return fn(*args)
        finally:
            with self._lock:
                self.busy -= 1

    def before_batch(self) -> None:
        n = self.fixed or max(1, self.cores - self.busy)
        if n != self._now:
            torch.set_num_threads(n)
            self._now = n

    def restore(self) -> None:
        if self._now is not None and self._now != self.cores:
            torch.set_num_threads(self.cores)
        self._now = None
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(self._itk)


def prepare_workers(prefetch: int) -> int:
    """Inputs prepared at once: up to ``prefetch``, and at most half the CPUs (the network and
    the writing thread want the others; on a 2-core CPU one input is prepared at a time)."""
    return max(1, min(prefetch, (os.cpu_count() or 2) // 2))


def predict_inputs(predictor: Predictor, inputs: list[Path], outputs: OutputSettings,
                   lungs: dict | None = None, prefetch: int = 2, progress: bool = True,
                   network_threads: int = 0) -> tuple[list[dict], list[dict]]:
    """Predict every input; (reports, failures), both in input order (a failure: a row of
    :data:`FAILED_COLUMNS`).  ``lungs``: an input's lung mask file; ``prefetch``: inputs prepared
    ahead (0: one input after the other, all in this thread); ``network_threads`` > 0 fixes the
    network's torch threads on the CPU."""
    from tqdm import tqdm

    lungs = lungs or {}
    bar = tqdm(inputs, desc="predict", unit="volume", disable=not progress)
    if prefetch <= 0:
        results = [_outcome(_predict_one, predictor, path, lungs.get(path), outputs)
                   for path in bar]
    else:
        results = _pipelined(predictor, inputs, outputs, lungs, prefetch, network_threads, bar)
    reports, failed = [], []
    for path, res in zip(inputs, results):
        if isinstance(res, CaseError):
            failed.append(dict(zip(FAILED_COLUMNS, (path.name, res.kind, str(res)))))
            log.warning("%s", res)
        else:
            reports.append(res)
    return reports, failed


def _predict_one(predictor: Predictor, path: Path, lung, outputs: OutputSettings) -> dict:
    prepared = predictor.prepare(path, lung)
    return predictor.finish(prepared, predictor.network(prepared), *outputs.finish_args())


def _outcome(fn, *args):
    """``fn(*args)``, or the :class:`CaseError` it raised (that input failed, the others go on)."""
    try:
        return fn(*args)
    except CaseError as exc:
        return exc


def _pipelined(predictor: Predictor, inputs: list[Path], outputs: OutputSettings, lungs: dict,
               prefetch: int, network_threads: int, bar) -> list:
    """The three stages (module docstring); a report or the CaseError of each input, in order."""
    from concurrent.futures import ThreadPoolExecutor

    results: list = [None] * len(inputs)
    workers = prepare_workers(prefetch)
    cpu = CpuShare(network_threads, workers + 1) if predictor.device.type == "cpu" else None
    share = cpu.run if cpu else (lambda fn, *args: fn(*args))
    with ThreadPoolExecutor(workers, "covidseg-prepare") as prep_pool, \
            ThreadPoolExecutor(1, "covidseg-write") as write_pool:
        pending = deque(prep_pool.submit(share, predictor.prepare, p, lungs.get(p))
                        for p in inputs[:prefetch])
        writing: deque = deque()

        def collect() -> None:
            while writing:
                j, fut = writing.popleft()
                results[j] = _outcome(fut.result)

        try:
            for i, _ in enumerate(bar):
                if i + prefetch < len(inputs):
                    nxt = inputs[i + prefetch]
                    pending.append(prep_pool.submit(share, predictor.prepare, nxt,
                                                    lungs.get(nxt)))
                prepared = _outcome(pending.popleft().result)
                if isinstance(prepared, CaseError):
                    results[i] = prepared
                    continue
                probs = predictor.network(prepared, cpu.before_batch if cpu else None)
                collect()  # at most one input is being written while the network runs
                writing.append((i, write_pool.submit(share, predictor.finish, prepared, probs,
                                                     *outputs.finish_args())))
            collect()
        finally:
            for fut in pending:
                fut.cancel()
            if cpu:
                cpu.restore()
    return results
