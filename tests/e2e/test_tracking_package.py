"""The tracking package's shape: both trackers implement the whole :class:`Tracker` protocol
themselves (a forgotten method is a failure here, not a silent no-op), the tag names are one
enum that behaves as plain strings, tracking depends on no covidseg stage, and the throw-away
server stays off the runtime path.  (That only ``covidseg.tracking`` imports MLflow is checked
in ``tests/unit/house/test_layers.py``.)"""

from __future__ import annotations


def test_tidy_judges_each_run_by_its_own_beat_and_a_live_run_revives(tracking_uri, monkeypatch):
    """tidy fails a RUNNING run silent for five of its own beats, not one that beats every 10
    minutes and beat a minute ago; a run failed so while its process lives (its beats came late)
    is RUNNING again at its next beat, the error tag gone."""
    import time

    from mlflow.tracking import MlflowClient

    from covidseg.tracking import heartbeat as hb

    client = MlflowClient(tracking_uri)
    exp = client.create_experiment("heartbeats")
    minute_ago = str(int(time.time()) - 60)
    silent = client.create_run(exp, tags={"covidseg.heartbeat": minute_ago,
                                          "covidseg.heartbeat_s": "1"}).info.run_id
    slow = client.create_run(exp, tags={"covidseg.heartbeat": minute_ago,
                                        "covidseg.heartbeat_s": "600"}).info.run_id
    untagged = client.create_run(exp).info.run_id  # another tool's run: left alone
    monkeypatch.setenv("COVIDSEG_HEARTBEAT_GRACE_S", "5")
    assert hb.tidy_runs([exp]) == [silent]
    run = client.get_run(silent)
    assert run.info.status == "FAILED" and run.data.tags["covidseg.error"].startswith(hb.SILENT)
    assert {client.get_run(r).info.status for r in (slow, untagged)} == {"RUNNING"}
    hb._BEATER.beat(silent)  # its process was alive after all
    run = client.get_run(silent)
    assert run.info.status == "RUNNING" and "covidseg.error" not in run.data.tags
    assert float(run.data.tags["covidseg.heartbeat"]) > float(minute_ago)




