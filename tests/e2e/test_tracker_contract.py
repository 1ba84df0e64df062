"""The tracker contract (tests/unit/tracking/contract.py) for the MLflow tracker, against a real
``mlflow server``: what it was handed is read back over HTTP."""

from covidseg.tracking import MlflowTracker
from tests.unit.tracking.contract import TrackerContract


def _artifacts(client, run_id, path=None) -> list[str]:
    out = []
    for item in client.list_artifacts(run_id, path):
        out.extend(_artifacts(client, run_id, item.path) if item.is_dir else [item.path])
    return out


class TestMlflowTracker(TrackerContract):
    def make_tracker(self, request, tmp_path):
        from mlflow.tracking import MlflowClient

        request.getfixturevalue("tracking_uri")
        client = MlflowClient()
        experiment = client.create_experiment(f"contract-{request.node.name}")
        return MlflowTracker(client.create_run(experiment).info.run_id)

    def stored(self, tracker):
        client = tracker.client
        run = client.get_run(tracker.run_id)
        metrics = {k: [(m.step, m.value) for m in sorted(client.get_metric_history(
            tracker.run_id, k), key=lambda m: m.step)] for k in run.data.metrics}
        return {"params": dict(run.data.params), "metrics": metrics, "tags": dict(run.data.tags),
                "artifacts": _artifacts(client, tracker.run_id)}

    def finish(self, tracker):
        tracker.client.set_terminated(tracker.run_id)
