"""What every :class:`~covidseg.tracking.Tracker` does with the calls the stages make, as one
test base class (smp's ``tests/models/base.py`` shape): a tracker subclasses it in a few lines,
giving ``make_tracker``, ``stored`` — what the tracker kept of a run (``None``: a tracker that
keeps nothing, the :class:`~covidseg.tracking.NullTracker`) — and ``finish`` (end its run).
The same sequence of calls runs for every tracker; one that keeps things must give back exactly
what it was handed."""

from __future__ import annotations

import math

import pytest


def _figure(ax_title: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.set_title(ax_title)
    return fig


class TrackerContract:
    """Subclasses define ``make_tracker(self, request, tmp_path)`` and ``stored(self, tracker)``
    → ``None`` or a dict with ``params``, ``metrics`` (key → [(step, value)]), ``tags`` and
    ``artifacts`` (relative paths)."""

    def make_tracker(self, request, tmp_path):
        raise NotImplementedError

    def stored(self, tracker) -> dict | None:
        raise NotImplementedError

    def finish(self, tracker) -> None:
        """End the tracker's run as a stage's end does (nothing for a tracker without runs)."""

    @pytest.fixture
    def tracker(self, request, tmp_path):
        return self.make_tracker(request, tmp_path)

    def test_the_calls_a_stage_makes_are_kept_or_dropped_whole(self, tracker, tmp_path):
        tracker.log_params({"lr": 0.001, "encoder": "resnet18"})
        for step, loss in enumerate((0.9, 0.5, 0.25)):
            tracker.log_metrics({"train_loss": loss, "skipped": None}, step=step)
        tracker.set_tags({"covidseg.contract": "yes"})
        drawn = []
        tracker.figure("figures/contract.png", lambda: drawn.append(1) or _figure("contract"))
        tracker.log_dict({"a": [1, 2]}, "contract/obj.json")
        tracker.log_text("hello", "contract/hello.txt")
        tracker.log_table([{"case": "c1", "dice": 0.5}], "contract/table.csv")
        (tmp_path / "one.txt").write_text("1")
        tracker.log_artifact(tmp_path / "one.txt", "contract")
        folder = tmp_path / "many"
        folder.mkdir()
        (folder / "two.txt").write_text("2")
        tracker.log_artifacts(folder, "contract/many")
        tracker.link_source("model", None)  # a model from a folder: no run to link
        assert drawn == [1]  # the figure is drawn by every tracker (a broken one shows up)

        kept = self.stored(tracker)
        if kept is None:
            assert tracker.find_run({"covidseg.contract": "yes"}) is None
            assert tracker.last_step("train_loss") == -1
            return
        assert kept["params"] == {"lr": "0.001", "encoder": "resnet18"}
        assert kept["metrics"]["train_loss"] == [(0, 0.9), (1, 0.5), (2, 0.25)]
        assert "skipped" not in kept["metrics"]  # None is "not measured", not a value
        assert kept["tags"]["covidseg.contract"] == "yes"
        assert {"figures/contract.png", "contract/obj.json", "contract/hello.txt",
                "contract/table.csv", "contract/one.txt",
                "contract/many/two.txt"} <= set(kept["artifacts"])
        assert tracker.last_step("train_loss") == 2
        # finished work is what a stage may reuse: a running run is not found, a finished one is
        assert tracker.find_run({"covidseg.contract": "yes"}) is None
        self.finish(tracker)
        assert tracker.find_run({"covidseg.contract": "yes"}) == tracker.run_id

    def test_metric_values_are_floats_and_nan_survives(self, tracker):
        tracker.log_metrics({"val_volume_dice": 1, "val_ece": math.nan}, step=0)
        kept = self.stored(tracker)
        if kept is None:
            return
        assert kept["metrics"]["val_volume_dice"] == [(0, 1.0)]
        assert math.isnan(kept["metrics"]["val_ece"][0][1])
