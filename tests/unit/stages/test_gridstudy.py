"""Grid cells as enqueued Optuna trials (``covidseg.stages.gridstudy``) on a real PostgreSQL and
an SQLite file: no cell held twice by concurrent claimers (threads and processes), a stale claim
taken over and a fresh one not, a worker killed mid-cell replaced, failures retried a bounded
number of times, dependencies respected, registration idempotent (twins of a cell run once), a
settled grid's failed cells reopened."""

import threading
import time

import pytest

from covidseg.base.errors import ConfigError
from covidseg.stages.gridstudy import DONE, FAILED, PENDING, RUNNING, Cell, GridStudy


@pytest.fixture(params=["sqlite"])
def url(tmp_path):
    """An SQLite file (tests/e2e/test_gridstudy.py runs the tests taking ``url`` on PostgreSQL)."""
    return f"sqlite:///{tmp_path / 'claims.db'}"
def grid_of(url, name="g", n=4, **kw):
    claims = GridStudy(url, name, **kw)
    claims.register("fp", [Cell(f"c{i}", i, info={"i": i}) for i in range(n)])
    return claims


def test_concurrent_claimers_never_get_the_same_cell(url):
    n_cells, n_workers = 100, 6
    grid_of(url, n=n_cells).close()
    got: dict[int, list[str]] = {w: [] for w in range(n_workers)}
    errors = []
    barrier = threading.Barrier(n_workers)

    def worker(w):
        try:
            claims = GridStudy(url, "g")
            barrier.wait()
            while (claim := claims.claim(f"w{w}")) is not None:
                got[w].append(claim.key)
                time.sleep(0.01)  # a cell takes time to run: the other claimers get their turn
                assert claims.finish(claim, f"run-{claim.key}-{w}")
            claims.close()
        except Exception as exc:  # reported below (an assert in a thread is not a failure)
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    everything = [k for keys in got.values() for k in keys]
    duplicates = sorted({k for k in everything if everything.count(k) > 1})
    assert not duplicates, f"cells claimed twice: {duplicates[:10]}"
    assert sorted(everything) == sorted(f"c{i}" for i in range(n_cells))
    assert sum(1 for keys in got.values() if keys) >= 2  # the work was split
    rows = GridStudy(url, "g").rows()
    assert {r["state"] for r in rows} == {DONE}
    assert all(r["run_id"] == f"run-{r['cell']}-{w}" for w, keys in got.items() for r in rows
               if r["cell"] in keys)


def test_a_stale_claim_is_taken_over_and_a_fresh_one_is_not(url):
    a = grid_of(url, n=3, heartbeat_s=0.2, grace_s=1.0)
    b = GridStudy(url, "g", heartbeat_s=0.2, grace_s=1.0)
    held = a.claim("A")
    assert held.key == "c0" and held.failures == 0
    assert a.started(held, "run-of-A")
    # fresh (heartbeats going on for longer than the grace period): not taken
    with a.keep_alive(held):
        first = b.claim("B")
        assert b.finish(first, "run-c1")
        time.sleep(1.6)
        second = b.claim("B")
        assert b.claim("B") is None  # A's claim is fresh, B holds the other: nothing free
    assert (first.key, second.key) == ("c1", "c2")
    # A stops sending heartbeats (a dead worker): after the grace period B takes its cell over
    time.sleep(3.1)  # SQLite stamps heartbeats to the second: > 1 s is 2-3 s
    taken = b.claim("B")
    assert taken.key == "c0" and taken.failures == 1 and taken.stale_run == "run-of-A"
    row = next(r for r in b.rows() if r["cell"] == "c0")
    assert row["state"] == RUNNING and row["worker"] == "B"
    assert "worker A stopped sending heartbeats" in row["error"]
    # A comes back: its claim is gone, its results are not recorded
    assert not a.heartbeat(held) and held.lost
    assert not a.finish(held, "run-of-A")
    assert b.finish(taken, "run-of-B")
    assert next(r for r in b.rows() if r["cell"] == "c0")["run_id"] == "run-of-B"
    # a cell whose worker dies again (retries=1 exhausted) is failed, not claimed a third time
    time.sleep(3.1)  # c2, claimed by B, went stale
    again = a.claim("A")
    assert again.key == "c2" and again.failures == 1
    time.sleep(3.1)
    assert a.claim("A") is None  # c2 died a second time: failed
    states = {r["cell"]: (r["state"], r["failures"]) for r in a.rows()}
    assert states == {"c0": (DONE, 1), "c1": (DONE, 0), "c2": (FAILED, 2)}
    assert a.settled()


def test_failures_are_retried_then_recorded_and_dependencies_wait(tmp_path):
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    claims = GridStudy(url, "g", retries=1)
    claims.register("fp", [Cell("pretrain", 0), Cell("ft-a", 1, needs="pretrain"),
                           Cell("scratch", 2), Cell("bad", 3), Cell("ft-b", 4, needs="bad")])
    pre = claims.claim("w")
    assert pre.key == "pretrain"
    # the dependants of a running cell wait; independent cells go first
    assert claims.claim("w").key == "scratch"
    assert claims.finish(pre, "pre-run")
    ft = claims.claim("w")
    assert ft.key == "ft-a" and ft.needs_run == "pre-run"
    bad = claims.claim("w")
    assert bad.key == "bad" and claims.fail(bad, "CUDA out of memory\nline two") == PENDING
    bad = claims.claim("w")
    assert bad.key == "bad" and bad.failures == 1
    assert claims.fail(bad, "CUDA out of memory") == FAILED
    assert claims.claim("w") is None  # ft-b needs the failed cell: failed too
    rows = {r["cell"]: r for r in claims.rows()}
    assert rows["bad"]["error"] == "CUDA out of memory" and rows["ft-b"]["state"] == FAILED
    assert (rows["bad"]["failures"], rows["ft-b"]["failures"]) == (2, 0)
    assert "needs bad, which failed" in rows["ft-b"]["error"]
    # a worker that is stopped gives its cell back without counting a failure
    assert claims.release(ft)
    ft = claims.claim("w")
    assert ft.key == "ft-a" and ft.failures == 0


def test_registration_is_idempotent_and_a_name_means_one_grid(tmp_path):
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    a = grid_of(url, n=3)
    done = a.claim("A")
    a.finish(done, "r0")
    b = grid_of(url, n=3)  # a second worker registers the same cells: nothing changes
    assert [(r["cell"], r["state"]) for r in b.rows()] == [("c0", DONE), ("c1", PENDING),
                                                           ("c2", PENDING)]
    with pytest.raises(ConfigError, match="other parameters.*grid_name"):
        GridStudy(url, "g").register("another-fingerprint", [Cell("c0", 0)])
    other = grid_of(url, name="h", n=2)  # another grid in the same database
    assert [r["cell"] for r in other.rows()] == ["c0", "c1"] and other.counts()[PENDING] == 2


def test_twins_of_workers_registering_together_run_once(url):
    """Workers registering a grid together each enqueue the cells they do not see yet, so a cell
    may get several trials (here every cell a twin, as a second worker's registration writes it
    through Optuna, and some a third); four claimers then run every cell once, its other trials
    PRUNED."""
    import optuna

    grid_of(url, n=12).close()
    study = optuna.load_study(study_name="g", storage=url)
    for t in study.get_trials() + study.get_trials()[::3]:
        study.enqueue_trial({}, user_attrs=t.user_attrs)
    got, errors, barrier = [], [], threading.Barrier(4)

    def worker(w):
        try:
            claims = GridStudy(url, "g")
            barrier.wait()
            while (claim := claims.claim(f"w{w}")) is not None:
                got.append(claim.key)
                assert claims.finish(claim, f"run-{claim.key}")
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert sorted(got) == sorted(f"c{i}" for i in range(12)), "a cell ran twice (or never)"
    claims = GridStudy(url, "g")
    assert {r["state"] for r in claims.rows()} == {DONE}
    states = [t.state.name for t in claims.study.get_trials()]
    assert (states.count("COMPLETE"), states.count("PRUNED")) == (12, 16)


def test_a_settled_grid_reopens_its_failed_cells_with_their_failures_reset(tmp_path):
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    claims = GridStudy(url, "g", retries=0)
    claims.register("fp", [Cell("pre", 0), Cell("ft", 1, needs="pre"), Cell("ok", 2)])
    assert claims.fail(claims.claim("w"), "boom") == FAILED
    ok = claims.claim("w")
    assert ok.key == "ok" and claims.finish(ok, "run-ok")
    assert claims.claim("w") is None and claims.settled()  # ft needs pre, which failed
    assert claims.reopen_failed() == 2
    assert claims.reopen_failed() == 0  # not settled now: nothing to reopen
    rows = {r["cell"]: r for r in claims.rows()}
    assert (rows["pre"]["state"], rows["pre"]["failures"]) == (PENDING, 0)
    assert rows["pre"]["error"] == "retried after: boom" and rows["ok"]["state"] == DONE
    pre = claims.claim("w")
    assert pre.key == "pre" and claims.finish(pre, "run-pre")
    ft = claims.claim("w")
    assert ft.key == "ft" and ft.needs_run == "run-pre" and claims.finish(ft, "run-ft")
    assert claims.counts() == {PENDING: 0, RUNNING: 0, DONE: 3, FAILED: 0}


def test_bad_storage_urls_are_one_line_errors_without_the_password(tmp_path):
    for bad, words in (("not a url", "is not a database URL"),
                       ("mysql://u:pw123@h/db", "need postgresql:// or sqlite:///"),
                       ("postgresql://u:pw123@127.0.0.1:1/db", "storage postgresql://u:***@")):
        with pytest.raises(ConfigError) as info:
            GridStudy(bad, "g")
        message = str(info.value)
        assert words in message and "pw123" not in message and "\n" not in message
    with pytest.raises(ConfigError, match="grace period"):
        GridStudy("", "g", heartbeat_s=5, grace_s=5)


def test_the_optuna_dashboard_shows_a_grids_progress(tmp_path):
    """optuna-dashboard's own app (its JSON API, what its pages draw) on the grid's storage: the
    grid is a study, its cells trials — done with their value, running, waiting — named by the
    user attribute ``grid_cell``."""
    import io
    import json
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    url = f"sqlite:///{tmp_path / 'claims.db'}"
    claims = grid_of(url, name="grid-demo", n=3)
    first = claims.claim("host/1")
    assert claims.finish(first, "run-0", value=0.75)
    claims.claim("host/2")
    app = wsgi(url)

    def get(path):
        environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
        setup_testing_defaults(environ)
        status = []
        body = b"".join(app(environ, lambda s, h, *a: status.append(s)))
        assert status[0].startswith("200"), (path, status, body[:300])
        return json.loads(body)

    (study,) = [s for s in get("/api/studies")["study_summaries"] if s["study_name"] == "grid-demo"]
    trials = get(f"/api/studies/{study['study_id']}")["trials"]
    seen = [(t["state"], {a["key"]: a["value"] for a in t["user_attrs"]}["grid_cell"],
             t.get("values")) for t in trials]
    assert seen == [("Complete", "c0", [0.75]), ("Running", "c1", None), ("Waiting", "c2", None)]


def test_a_claimer_acting_on_an_old_read_does_not_prune_a_running_twin(tmp_path):
    """Twins t0 < t1 of a cell; C runs t0 and fails it (a retry is queued); A pops t1, t0 being
    no longer live; B, acting on what it read before, would prune t1 — a trial it never popped.
    Only the worker that popped a trial changes it: A's heartbeat and finish stand."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    a, b, c = (GridStudy(url, "g", heartbeat_s=1, grace_s=5, retries=1) for _ in range(3))
    a.register("fp", [Cell("X", 0)])
    b._enqueue({"cell": "X", "position": 0, "needs": "", "info": {}})  # the twin t1
    first = c.claim("C")
    old_read = b._by_cell()
    c.fail(first, "boom")
    taken = a.claim("A")
    assert taken is not None and taken.key == "X"
    b._by_cell = lambda: old_read
    b.claim("B")
    assert a.heartbeat(taken) and a.finish(taken, "run-a")
    assert {r["state"] for r in GridStudy(url, "g").rows()} == {DONE}
