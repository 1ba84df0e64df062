""":class:`MlflowTracker`: the :class:`~covidseg.tracking.base.Tracker` of one MLflow run.

It logs through an explicit ``MlflowClient`` (safe from any thread, no "active run" needed), in
batches MLflow accepts, and redacts every parameter, tag and text before it leaves the machine.
"""

from __future__ import annotations

import csv
import io
import math
import time
import warnings
from collections.abc import Callable

from covidseg.base.redact import redact
from covidseg.tracking.base import draw_and_log
from covidseg.tracking.tags import Tag


def np_isfinite(v) -> bool:
    """``v`` is a finite number (NaN, inf and non-numbers are not)."""
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def rows_to_csv(rows: list[dict]) -> str:
    """``rows`` as CSV text; the columns are every key, in order of first appearance."""
    buf = io.StringIO()
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


class MlflowTracker:
    """Logs to one MLflow run through an explicit client (safe from any thread)."""

    enabled = True

    def __init__(self, run_id: str):
        from mlflow.tracking import MlflowClient

        self.run_id: str | None = run_id
        self.client = MlflowClient()
        self._sources: dict[str, str] = {}

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), redact(str(v))[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step or 0)) for k, v in metrics.items()
                 if v is not None]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i:i + 500])

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(str(k), redact(str(v))[:5000])
                                                 for k, v in tags.items()])

    def log_figure(self, fig, artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        try:
            self.client.log_figure(self.run_id, fig, artifact_file)
        finally:
            plt.close(fig)

    def figure(self, artifact_file: str, fn: Callable, *args, **kwargs) -> None:
        """Draw ``fn(*args, **kwargs)`` and log it; a figure that cannot be drawn or uploaded is
        skipped with a warning — it never fails the run."""
        draw_and_log(self, artifact_file, fn, *args, **kwargs)

    def log_dict(self, obj, artifact_file: str) -> None:
        import json

        self.client.log_dict(self.run_id, json.loads(redact(json.dumps(obj, default=str))),
                             artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, redact(text), artifact_file)

    def log_table(self, rows: list[dict], artifact_file: str) -> None:
        """``rows`` as CSV at ``artifact_file`` and, beside it, as an MLflow table (``.json``:
        the UI's artifact view and ``mlflow.load_table`` compare it across runs)."""
        import json

        import pandas as pd

        text = redact(rows_to_csv(rows))
        self.client.log_text(self.run_id, text, artifact_file)
        if rows and artifact_file.endswith(".csv"):
            clean = json.loads(redact(json.dumps(rows, default=str)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.client.log_table(self.run_id, data=pd.DataFrame(clean),
                                      artifact_file=artifact_file[:-4] + ".json")

    def log_artifact(self, local_path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(local_path), artifact_path)

    def log_artifacts(self, local_dir, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def link_source(self, role: str, run_id: str | None) -> None:
        """Lineage: record that this run used ``run_id`` as its ``role`` input."""
        if not run_id:
            return
        self._sources[role] = run_id
        self.set_tags({Tag.source(role): run_id,
                       Tag.SOURCES: ",".join(sorted(set(self._sources.values())))})

    def log_dataset_input(self, name: str, digest: str, source: dict, profile: dict,
                          context: str = "training") -> None:
        """The preprocessed dataset as the run's MLflow dataset input (the UI's "Datasets"):
        ``digest`` is its content key, so two runs on the same data show the same digest."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name=name[:500], digest=digest, source_type="covidseg-preprocessed",
                          source=json.dumps(source), profile=json.dumps(profile))
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(
            dataset, tags=[InputTag("mlflow.data.context", context)])])

    def find_run(self, tags: dict) -> str | None:
        """Id of a FINISHED run (any experiment) carrying all ``tags``, or None."""
        exps = [e.experiment_id for e in self.client.search_experiments()]
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs(
            exps, filter_string=query + " and attributes.status = 'FINISHED'", max_results=1)
        return runs[0].info.run_id if runs else None

    def last_step(self, key: str) -> int:
        """Highest step logged for metric ``key`` in this run (-1 if none)."""
        return max((m.step for m in self.client.get_metric_history(self.run_id, key)),
                   default=-1)

    def log_model(self, model_dir, name: str = "model", register_as: str = "",
                  alias: str = "", metrics: dict | None = None) -> str:
        """Log a covidseg model folder (``model.json`` + ``model.pt``) as an MLflow pyfunc model
        (models from code, ``covidseg/serving/pyfunc_model.py``), optionally registered (and
        given ``alias``); ``metrics`` go on the model's page.  Returns its URI, also recorded in
        the run's ``covidseg.model_uri`` tag."""
        import mlflow

        from covidseg.tracking.logged_model import (
            MODEL_CODE,
            PACKAGE,
            model_requirements,
            model_signature,
        )

        card = redact(self.model_card(model_dir, register_as, metrics))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info = mlflow.pyfunc.log_model(
                name=name, python_model=str(MODEL_CODE),
                artifacts={"weights": str(model_dir)}, code_paths=[str(PACKAGE)],
                pip_requirements=model_requirements(), signature=model_signature(model_dir),
                registered_model_name=register_as or None)
        if metrics and getattr(info, "model_id", None):  # the model page shows its scores
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            items = [Metric(k, float(v), now, 0, model_id=info.model_id, run_id=self.run_id)
                     for k, v in metrics.items() if v is not None and np_isfinite(v)]
            for i in range(0, len(items), 500):
                self.client.log_batch(self.run_id, metrics=items[i:i + 500])
        self.publish_card(card, getattr(info, "model_id", None), register_as,
                          info.registered_model_version)
        tags = {Tag.MODEL_URI: info.model_uri}
        if register_as and info.registered_model_version:
            tags[Tag.REGISTERED] = f"models:/{register_as}/{info.registered_model_version}"
            if alias:  # e.g. champion: predict -P model=models:/NAME@champion follows it
                self.client.set_registered_model_alias(register_as, alias,
                                                       str(info.registered_model_version))
                tags[Tag.ALIAS] = f"models:/{register_as}@{alias}"
        self.set_tags(tags)
        return info.model_uri

    def model_card(self, model_dir, name: str = "", scores: dict | None = None) -> str:
        """The Markdown card (:func:`covidseg.tracking.model_card.model_card`) of the model in
        ``model_dir``, from what this run holds: its metrics (and ``scores``), its plan
        parameters, its training dataset input and the ``fp_*`` fingerprint of the preprocess run
        it names as its data source."""
        import json
        from pathlib import Path

        from mlflow.exceptions import MlflowException

        from covidseg.tracking.model_card import model_card

        config = json.loads((Path(model_dir) / "model.json").read_text())
        run = self.client.get_run(self.run_id)
        params = run.data.params
        plan = {k: params[f"plan_{k}"] for k in ("kind", "epochs", "iterations_per_epoch",
                                                 "total_iterations") if params.get(f"plan_{k}")}
        inputs = sorted(run.inputs.dataset_inputs if run.inputs else [],
                        key=lambda i: {t.key: t.value for t in i.tags}.get(
                            "mlflow.data.context") != "training")
        dataset = ({"name": inputs[0].dataset.name, "digest": inputs[0].dataset.digest}
                   if inputs else {})
        fingerprint = {}
        source = run.data.tags.get(Tag.source("data"))
        if source:
            dataset["source_run"] = source
            try:
                fingerprint = {k: v for k, v in self.client.get_run(source).data.metrics.items()
                               if k.startswith("fp_")}
            except MlflowException:  # the preprocess run was deleted: the card goes without
                pass
        return model_card(config, {**run.data.metrics, **(scores or {})}, name=name,
                          run_id=self.run_id, dataset=dataset, fingerprint=fingerprint, plan=plan)

    def publish_card(self, card: str, model_id: str | None, register_as: str = "",
                     version=None) -> None:
        """``card`` where MLflow shows it: the run's ``model_card.md``, the logged model's
        description (tag ``mlflow.note.content``) and ``model_card.md`` beside its MLmodel, and the
        registered version's description."""
        import tempfile
        from pathlib import Path

        self.client.log_text(self.run_id, card, "model_card.md")
        if model_id:
            self.client.set_logged_model_tags(model_id, {"mlflow.note.content": card})
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model_card.md"
                path.write_text(card)
                self.client.log_model_artifact(model_id, str(path))
        if register_as and version:
            self.client.update_model_version(register_as, str(version), description=card)

