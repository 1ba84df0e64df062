"""Grid cells as enqueued Optuna trials (``covidseg.stages.gridstudy``) on a real PostgreSQL:
the claim tests of tests/unit/stages/test_gridstudy.py (SQLite there) run here on PostgreSQL, and
worker processes on both backends: a worker killed mid-cell is replaced, every cell done once."""

import uuid

import pytest

from covidseg.stages.gridstudy import DONE, GridStudy
from tests.unit.stages.test_gridstudy import (  # noqa: F401  (collected here with url below)
    grid_of,
    test_a_stale_claim_is_taken_over_and_a_fresh_one_is_not,
    test_concurrent_claimers_never_get_the_same_cell,
    test_twins_of_workers_registering_together_run_once,
)


@pytest.fixture(params=["postgresql"])
def url(request, tmp_path):
    """The imported tests' ``url``: a database on a real PostgreSQL (or an SQLite file where a
    test asks for ``sqlite``)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'claims.db'}"
    return request.getfixturevalue("postgres")(f"claims_{uuid.uuid4().hex[:8]}")


WORKER = """
import sys, time
from covidseg.stages.gridstudy import GridStudy
url, w, hang = sys.argv[1], sys.argv[2], int(sys.argv[3])
grid, done = GridStudy(url, "g", heartbeat_s=0.5, grace_s=2.0), 0
while True:
    claim = grid.claim(w)
    if claim is None:
        if grid.settled():
            break
        time.sleep(0.3)  # the others' cells: wait, or take over a silent one
        continue
    print("claim", claim.key, claim.failures, claim.stale_run or "-", flush=True)
    with grid.keep_alive(claim):
        grid.started(claim, f"run-{claim.key}-{w}")
        done += 1
        if done == hang:
            print("hang", claim.key, flush=True)
            time.sleep(3600)  # killed here, in the middle of its cell
        time.sleep(0.02)
    assert grid.finish(claim, f"run-{claim.key}-{w}")
"""


@pytest.mark.parametrize("url", ["sqlite", "postgresql"], indirect=True)
def test_worker_processes_claim_each_cell_once_and_a_killed_workers_cell_is_redone(url):
    """Three worker processes (as ``grid`` workers are) share 60 cells; one is killed (SIGKILL)
    in the middle of its fifth cell: another takes that cell over once its heartbeat is older
    than the grace period, and in the end every cell is done once."""
    import subprocess
    import sys

    from tests.conftest import subprocess_env

    n_cells = 60
    grid_of(url, n=n_cells).close()
    hang = {"w0": "5", "w1": "0", "w2": "0"}  # w0 hangs in its fifth cell
    workers = {w: subprocess.Popen([sys.executable, "-c", WORKER, url, w, n], text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=subprocess_env())
               for w, n in hang.items()}
    dead = workers["w0"]
    lines = []
    for line in dead.stdout:
        lines.append(line.split())
        if line.startswith("hang"):
            dead.kill()
            break
    dead.wait(30)
    hung = lines[-1][1]
    claims = {"w0": [ln[1:] for ln in lines if ln[0] == "claim"]}
    for w in ("w1", "w2"):
        out, err = workers[w].communicate(timeout=300)
        assert workers[w].returncode == 0, err[-2000:]
        claims[w] = [ln.split()[1:] for ln in out.splitlines() if ln.startswith("claim")]
    everything = [c[0] for cs in claims.values() for c in cs]
    assert sorted(set(everything)) == sorted(f"c{i}" for i in range(n_cells))
    twice = sorted({k for k in everything if everything.count(k) > 1})
    assert twice == [hung], f"cells claimed twice: {twice}"
    (again,) = [(w, c) for w in ("w1", "w2") for c in claims[w] if c[0] == hung]
    assert again[1][1:] == ["1", f"run-{hung}-w0"]  # one failure, the dead worker's run
    grid = GridStudy(url, "g")
    rows = {r["cell"]: r for r in grid.rows()}
    assert {r["state"] for r in rows.values()} == {DONE}
    assert rows[hung]["run_id"] == f"run-{hung}-{again[0]}" and rows[hung]["failures"] == 1
    complete = [t.user_attrs["grid_cell"] for t in grid.study.get_trials()
                if t.state.name == "COMPLETE"]
    assert sorted(complete) == sorted(rows), "a cell completed twice"


