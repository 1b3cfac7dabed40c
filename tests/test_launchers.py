"""Launchers: the Ray launcher (a local cluster with 2 workers) records exactly what the local
launcher records; local worker processes survive one of them being killed with SIGKILL."""
import json
import os
import signal
import subprocess
import time

import pandas as pd
import pytest

from harness.store import RunStore
from tests.conftest import TINY_SETS, harness
from tests.test_fault_tolerance import command, counts

#: metrics that depend on the machine's load rather than on the run
TIMING = "tokens_per_s|peak_memory|wall_time"


def comparable(store: RunStore) -> dict:
    m = store.metrics()
    m = m[~m.metric.str.contains(TIMING)]
    return {(r.run_id, r.split, r.metric, None if pd.isna(r.length) else int(r.length)): r.value
            for r in m.itertuples()}


def test_ray_launcher_records_what_the_local_launcher_records(tmp_path, data_dir):
    pytest.importorskip("ray")
    # lm trains; agreement_lm scores the trained lm run, so it waits for its upstream
    args = ["run", "--arch", "gru,transformer", "--tasks", "lm,agreement_lm", "--device", "cpu",
            "--data-dir", data_dir, "--no-progress", *TINY_SETS]
    assert harness(*args, "--results", tmp_path / "local") == 0
    assert harness(*args, "--results", tmp_path / "ray", "--launcher", "ray", "--workers", "2") == 0
    local, ray = RunStore(tmp_path / "local"), RunStore(tmp_path / "ray")
    expected, got = comparable(local), comparable(ray)
    assert len(ray.runs()) == 4 and (ray.runs().status == "finished").all()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-3, abs=1e-6), key
    for run_id in ray.runs().run_id:  # the driver wrote each worker's files into the store
        folder = ray.run_dir(run_id)
        assert (folder / "config.json").is_file() and (folder / "result.json").is_file()
    info = ray.runs().set_index("task")["info"]
    assert all("worker_host" in i for i in info)


def test_killed_local_worker_is_replaced_and_its_run_redone(tmp_path, data_dir):
    store = RunStore(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command(tmp_path, data_dir, "0,1,2", 60) + ["--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline, victim = time.time() + 180, None
    while time.time() < deadline and victim is None:
        with store._connect() as conn:
            row = conn.execute("SELECT pid FROM runs WHERE status='running' AND pid != ?",
                               (proc.pid,)).fetchone()
        victim = row[0] if row else None
        time.sleep(0.05)
    assert victim, "expected a worker to claim a run"
    time.sleep(1.0)  # mid-run
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"died (exit code {-signal.SIGKILL})" in out
    assert counts(store) == {"finished": 3}
    assert sorted(store.runs().seed) == [0, 1, 2]
    assert victim not in set(store.runs().pid), "the killed worker finished nothing it had claimed"
    with store._connect() as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_killed_ray_worker_is_retried(tmp_path, data_dir):
    pytest.importorskip("ray")
    store = RunStore(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command(tmp_path, data_dir, "0,1", 60) + ["--launcher", "ray", "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline, victims = time.time() + 180, []
    while time.time() < deadline and not victims:  # Ray names a worker after the task it runs
        found = subprocess.run(["pgrep", "-f", "ray::execute_remote"], capture_output=True, text=True)
        victims = [int(pid) for pid in found.stdout.split()]
        time.sleep(0.1)
    assert victims, "expected a Ray worker running a harness run"
    time.sleep(1.0)
    os.kill(victims[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert counts(store) == {"finished": 2}
    workers = {json.loads(info)["worker_pid"] for info in store.runs()["info"]}
    assert victims[0] not in workers, "the killed worker's run was retried on another worker"
