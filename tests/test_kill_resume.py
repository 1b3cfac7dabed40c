"""A sweep killed with SIGKILL at ten random moments (fixed seed) never leaves a half-stored or
duplicated run, and resumed, it ends with exactly the numbers of a sweep that was never killed."""
import json
import random
import signal
import subprocess
import sys
import time

import pytest

from harness.core.registry import TASKS
from harness.store import FINISHED, RunStore
from tests.conftest import TINY_SETS

KILLS = 10


def command(results, data_dir):
    return [sys.executable, "-m", "harness", "run", "--arch", "gru,cnn", "--tasks", "extrapolation",
            "--set", "probe=parity", "--seeds", "0,1,2", "--results", str(results), "--data-dir", str(data_dir),
            "--device", "cpu", "--no-progress", *TINY_SETS, "--set", "n_train=200", "--set", "n_valid=40",
            "--set", "n_test_per_cell=8"]


def scores(store: RunStore) -> dict:
    """Every stored number that does not measure the machine."""
    m = store.metrics()
    keep = [TASKS.get(t.split("/")[0]).spec(n).role != "efficiency" for t, n in zip(m.task, m.metric)]
    m = m[keep]
    return {(r.run_id, r.split, r.metric, None if r.length != r.length else int(r.length)): r.value
            for r in m.itertuples()}


def check_nothing_half_stored(store: RunStore) -> None:
    with store._connect() as conn:
        rows = conn.execute("SELECT run_id, status FROM runs").fetchall()
        dupes = conn.execute("SELECT count(*) FROM (SELECT run_id, split, metric, length, count(*) AS n "
                             "FROM metrics GROUP BY run_id, split, metric, length HAVING n > 1)").fetchone()[0]
        orphans = conn.execute("SELECT count(*) FROM metrics WHERE run_id IN "
                               "(SELECT run_id FROM runs WHERE status = 'running')").fetchone()[0]
    assert dupes == 0 and orphans == 0
    assert len({r for r, _ in rows}) == len(rows)
    for run_id, status in rows:
        if status == FINISHED:  # complete: its numbers, its checkpoint and its record
            folder = store.run_dir(run_id)
            assert (folder / "best.pt").is_file() and json.loads((folder / "result.json").read_text())["status"] == FINISHED
            assert not store.metrics().query("run_id == @run_id").empty
        else:  # a claim cut off by the kill: never shown, redone on resume
            assert status == "running"
    assert set(store.runs().status) <= {FINISHED}


def _claimed_by(store: RunStore, pid: int) -> bool:
    with store._connect() as conn:
        return conn.execute("SELECT count(*) FROM runs WHERE status = 'running' AND pid = ?",
                            (pid,)).fetchone()[0] > 0


def test_ten_random_kills_then_resume_give_the_uninterrupted_numbers(tmp_path, data_dir):
    subprocess.run(command(tmp_path / "reference", data_dir), check=True, capture_output=True, timeout=600)
    reference_store = RunStore(tmp_path / "reference")
    reference = scores(reference_store)
    assert len(reference_store.runs()) == 6 and reference
    walls = reference_store.metrics().query("metric == 'wall_time_s'").value
    per_run = float(walls.median())

    rng = random.Random(20261201)
    store = RunStore(tmp_path / "killed")
    finished_seen, cut_mid_run = [], 0
    for _ in range(KILLS):
        proc = subprocess.Popen(command(tmp_path / "killed", data_dir), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # a random moment once the sweep has started its runs: inside a run, or between two
        while proc.poll() is None and not _claimed_by(store, proc.pid):
            time.sleep(0.02)
        if proc.poll() is None:
            time.sleep(rng.uniform(0.0, 1.5) * per_run)
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        with store._connect() as conn:
            cut_mid_run += conn.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0] > 0
        check_nothing_half_stored(store)
        finished_seen.append(len(store.runs()))
    assert finished_seen == sorted(finished_seen), "a finished run is never lost"
    assert cut_mid_run >= 3, "the kills are meant to land inside runs"
    done = subprocess.run(command(tmp_path / "killed", data_dir), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    check_nothing_half_stored(store)
    assert len(store.runs()) == 6
    resumed = scores(store)
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        assert resumed[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
