"""The tracker contract (tests/unit/tracking/contract.py) for the tracker the library runs with
when tracking is off; the MLflow tracker's is in tests/e2e/test_tracker_contract.py (a server)."""

from covidseg.tracking import NullTracker
from tests.unit.tracking.contract import TrackerContract


class TestNullTracker(TrackerContract):
    def make_tracker(self, request, tmp_path):
        return NullTracker()

    def stored(self, tracker):
        return None
