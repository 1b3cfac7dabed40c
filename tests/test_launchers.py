"""Launchers: the Ray launcher (a local cluster with 2 workers) records exactly what the local
launcher records; local worker processes survive one of them being killed with SIGKILL.

The worker to kill is caught mid-run without sleeping: a hook (a ``sitecustomize`` on the
subprocess's PYTHONPATH) makes the first process to start timing training steps write its pid to a
file and wait there until it is killed. The test signals exactly that pid, after checking that it
descends from the sweep process the test started."""
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.store import RunStore
from tests.conftest import TINY_SETS, harness
from tests.test_fault_tolerance import command, counts

#: metrics that depend on the machine's load rather than on the run
TIMING = "tokens_per_s|peak_memory|wall_time"

#: sitecustomize for the sweep subprocess: the first process (of any that inherit the
#: environment) to call ``Stopwatch.start`` -- training, after its warm-up steps -- links a file
#: holding its pid to $HARNESS_TEST_PAUSE (atomic: only one process wins) and sleeps until killed
PAUSE_HOOK = '''
import os
import sys

PAUSE = os.environ.get("HARNESS_TEST_PAUSE")


def _pause_the_first(stopwatch):
    start = stopwatch.start

    def start_or_pause(self):
        mine = f"{PAUSE}.{os.getpid()}"
        with open(mine, "w") as f:
            f.write(str(os.getpid()))
        try:
            os.link(mine, PAUSE)
        except FileExistsError:
            return start(self)
        finally:
            os.unlink(mine)
        import time
        while True:
            time.sleep(60)

    stopwatch.start = start_or_pause


class _PatchMeasure:
    def find_spec(self, name, path=None, target=None):
        if name != "harness.core.measure":
            return None
        sys.meta_path.remove(self)
        import importlib.util
        spec = importlib.util.find_spec(name)
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _pause_the_first(module.Stopwatch)

        spec.loader.exec_module = exec_and_patch
        return spec


if PAUSE:
    sys.meta_path.insert(0, _PatchMeasure())
'''


def start_paused_sweep(tmp_path: Path, args: list[str]) -> tuple[subprocess.Popen, Path]:
    """Start ``args`` with the pause hook; returns the process and the file the paused pid goes to."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(PAUSE_HOOK)
    pause = tmp_path / "paused.pid"
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, "HARNESS_TEST_PAUSE": str(pause)}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return proc, pause


def _psutil():
    """psutil, installed on its own or the copy Ray ships (importing ray puts it on sys.path)."""
    try:
        import psutil
    except ImportError:
        pytest.importorskip("ray", reason="psutil (or ray, which ships it) finds the sweep's processes")
        import psutil
    return psutil


def paused_worker(proc: subprocess.Popen, pause: Path, timeout: float = 180):
    """The psutil process of the worker that paused mid-run: a descendant of ``proc``."""
    psutil = _psutil()
    deadline = time.time() + timeout
    while not pause.exists():
        assert proc.poll() is None, f"the sweep ended before a worker paused: {proc.communicate()}"
        assert time.time() < deadline, "no worker reached its timed training steps"
        time.sleep(0.05)
    pid = int(pause.read_text())
    descendants = {p.pid: p for p in psutil.Process(proc.pid).children(recursive=True)}
    assert pid in descendants, "the paused process is one the test's sweep started"
    return descendants[pid]


def stop_everything_started(proc: subprocess.Popen) -> None:
    """Kill ``proc`` and whatever it started, if still running (a failed test leaves nothing)."""
    psutil = _psutil()
    if proc.poll() is not None:
        return
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    proc.kill()
    for child in descendants:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.communicate()


def comparable(store: RunStore) -> dict:
    m = store.metrics()
    m = m[~m.metric.str.contains(TIMING)]
    return {(r.run_id, r.split, r.metric, None if pd.isna(r.length) else int(r.length)): r.value
            for r in m.itertuples()}


def test_ray_launcher_records_what_the_local_launcher_records(tmp_path, small_data):
    pytest.importorskip("ray")
    # lm trains; agreement_lm scores the trained lm run, so it waits for its upstream
    args = ["run", "--arch", "gru,transformer", "--tasks", "lm,agreement_lm", "--device", "cpu",
            "--data-dir", small_data, "--no-progress", *TINY_SETS]
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
    assert {json.loads(i)["worker_host"] for i in info} == {socket.gethostname()}  # a local cluster


def test_local_workers_wait_for_the_upstream_run_another_worker_holds(tmp_path, small_data):
    # one worker trains each lm; the other reaches agreement_lm meanwhile and must wait for it
    args = ["run", "--arch", "gru,transformer", "--tasks", "lm,agreement_lm", "--device", "cpu",
            "--data-dir", small_data, "--no-progress", *TINY_SETS]
    assert harness(*args, "--results", tmp_path / "one") == 0
    assert harness(*args, "--results", tmp_path / "two", "--workers", "2") == 0
    one, two = RunStore(tmp_path / "one"), RunStore(tmp_path / "two")
    assert len(two.runs()) == 4 and (two.runs().status == "finished").all(), two.runs()[["task", "status", "error"]]
    runs = two.runs().set_index(["arch", "task"])
    for arch in ("gru", "transformer"):
        assert runs.loc[(arch, "agreement_lm"), "started_at"] >= runs.loc[(arch, "lm"), "finished_at"]
    expected, got = comparable(one), comparable(two)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-3, abs=1e-6), key


def test_killed_local_worker_is_replaced_and_its_run_redone(tmp_path, data_dir):
    _psutil()
    store = RunStore(tmp_path)
    proc, pause = start_paused_sweep(tmp_path, command(tmp_path, data_dir, "0,1,2", 60) + ["--workers", "2"])
    try:
        victim = paused_worker(proc, pause).pid
        with store._connect() as conn:  # paused mid-run: it holds a claim it has not finished
            claimed = conn.execute("SELECT count(*) FROM runs WHERE status='running' AND pid=?",
                                   (victim,)).fetchone()[0]
        assert claimed == 1
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        stop_everything_started(proc)
    assert proc.returncode == 0, err
    assert f"died (exit code {-signal.SIGKILL})" in out
    assert counts(store) == {"finished": 3}
    lines = [line for line in out.splitlines() if line.startswith("[")]  # the redone run ends once
    assert [line.split("]")[0] for line in lines] == ["[1/3", "[2/3", "[3/3"], out
    assert sorted(line.split("seed=")[1][0] for line in lines) == ["0", "1", "2"], out
    assert all(": finished in " in line for line in lines), out
    assert sorted(store.runs().seed) == [0, 1, 2]
    assert victim not in set(store.runs().pid), "the killed worker's run was redone by another worker"
    with store._connect() as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_killed_ray_worker_is_retried(tmp_path, data_dir):
    pytest.importorskip("ray")
    store = RunStore(tmp_path)
    proc, pause = start_paused_sweep(tmp_path, command(tmp_path, data_dir, "0,1", 60)
                                     + ["--launcher", "ray", "--workers", "2"])
    try:
        victim = paused_worker(proc, pause)  # a worker of the Ray cluster the sweep started
        assert "execute_remote" in " ".join(victim.cmdline()), "Ray names a worker after the task it runs"
        victim.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        stop_everything_started(proc)
    assert proc.returncode == 0, err
    assert counts(store) == {"finished": 2}
    workers = {json.loads(info)["worker_pid"] for info in store.runs()["info"]}
    assert victim.pid not in workers, "the killed worker's run was retried on another worker"


@pytest.mark.parametrize("verbose", [False, True])
def test_local_workers_keep_the_libraries_as_quiet_as_the_command_does(tmp_path, data_dir, capfd, verbose):
    # lm-eval warns (a logging line) each time it loads wsc273's data; only --verbose shows it
    args = ["run", "--arch", "gru", "--tasks", "lm,wsc273", "--device", "cpu", "--data-dir", data_dir,
            "--no-progress", "--workers", "2", "--results", tmp_path, "--set", "limit=2", *TINY_SETS]
    assert harness(*args, *(["--verbose"] if verbose else [])) == 0
    out, err = capfd.readouterr()
    assert ("Custom kwargs can be passed" in out + err) == verbose
    # one progress line per run, counted over the whole plan, printed by the process that started
    # the workers (not a line per worker, nor one for the run the other worker holds)
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in lines] == ["[1/2", "[2/2"], out
    assert {line.split(" ")[2] for line in lines} == {"lm", "wsc273"}
    assert all(re.search(r": finished in \d+ s \(worker [01]\) · ", line) for line in lines), lines
    assert "skipped" not in out
    from harness.launchers import usable_cores

    share = max(1, usable_cores() // 2)  # each worker's torch and BLAS threads: half the cores
    for info in RunStore(tmp_path).runs()["info"]:
        env = json.loads(info)["env"]
        assert (env["threads"], env["blas_threads"]) == (share, share), env


def test_workers_give_a_retried_run_one_line_for_its_new_outcome(tmp_path, data_dir, capfd):
    args = ["run", "--arch", "gru", "--tasks", "lm", "--seeds", "0,1", "--device", "cpu", "--data-dir", data_dir,
            "--no-progress", "--results", tmp_path, *TINY_SETS, "--set", "steps=20"]
    assert harness(*args) == 0
    store = RunStore(tmp_path)
    with store._connect() as conn:  # seed 0 failed an hour ago
        conn.execute("UPDATE runs SET status='failed', finished_at=finished_at-3600 WHERE seed=0")
    capfd.readouterr()
    assert harness(*args, "--workers", "2", "--retry-failed") == 0
    out = capfd.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert len(lines) == 2, out
    assert lines[0].startswith("[1/2] gru lm size=tiny seed=1") and ": finished, skipped · " in lines[0]
    assert lines[1].startswith("[2/2] gru lm size=tiny seed=0"), out  # the rerun, not the old failure
    assert re.search(r": finished in \d+ s \(worker [01]\) · ", lines[1]), out


def test_workers_leave_the_dataset_check_to_the_process_that_started_them(tmp_path, monkeypatch):
    import torch

    from harness import launchers

    calls = []
    monkeypatch.setattr(launchers, "run_sweep", lambda *a, **kw: calls.append(kw))
    threads, handler = torch.get_num_threads(), signal.getsignal(signal.SIGTERM)
    try:
        launchers._worker(0, 0, [], str(tmp_path), launchers.Launch(workers=2))
    finally:
        torch.set_num_threads(threads)
        signal.signal(signal.SIGTERM, handler)
    assert len(calls) == 1 and calls[0]["check"] is False
    assert calls[0]["log"] is launchers._silent, "the progress line is the starting process's"


# ---------------------------------------------------------------- the local launcher's defaults

def _main_command_configs():
    from harness.sweep import expand, selected_tasks

    return expand(["lstm", "transformer"], selected_tasks(["all"]))


@pytest.mark.parametrize("cores, runs, finished, expected", [
    (2, 26, 0, 2),  # the README's main command on 2 cores: a worker per core
    (2, 1, 0, 1),  # one run: one process with every thread, as before
    (2, 26, 25, 1),  # one run left to run
    (64, 26, 0, 8),  # no more than CPU_WORKERS_MAX unasked
    (64, 4, 0, 4),  # no more than the runs
    (1, 26, 0, 1),
])
def test_cpu_runs_get_a_worker_per_core_by_default(tmp_path, monkeypatch, cores, runs, finished, expected):
    from harness import launchers
    from harness.launchers import CPU_WORKERS_MAX, default_workers

    monkeypatch.delenv("HARNESS_WORKERS")
    monkeypatch.setattr(launchers, "usable_cores", lambda: cores)
    configs = [c for c in _main_command_configs() if not c.upstream][:runs]
    store = RunStore(tmp_path)
    for cfg in configs[:finished]:
        store.claim(cfg)
        store.finish(cfg.run_id, "finished", [], {})
    assert CPU_WORKERS_MAX == 8
    assert default_workers(configs, store) == expected


def test_runs_waiting_for_one_model_count_as_one(tmp_path, monkeypatch):
    from harness import launchers
    from harness.sweep import expand

    monkeypatch.delenv("HARNESS_WORKERS")
    monkeypatch.setattr(launchers, "usable_cores", lambda: 8)
    store = RunStore(tmp_path)
    # an lm run and the five suites that score it: nothing can run beside the lm run
    one_model = expand(["gru"], ["lm", "agreement_lm", "figqa", "wsc273", "blimp_agreement", "marvin_linzen"])
    assert len(one_model) == 6 and launchers.default_workers(one_model, store) == 1
    assert launchers.default_workers(expand(["gru", "lstm", "cnn"], ["figqa"]), store) == 3
    lm = one_model[0]
    store.claim(lm)
    store.finish(lm.run_id, "finished", [], {})
    assert launchers.default_workers(one_model, store) == 5  # once it is trained, they can


def test_usable_cores_are_this_process_s_not_the_host_s(monkeypatch):
    from harness.launchers import thread_env, usable_cores

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # the host's, in a container limited to two
    assert usable_cores() == 2
    assert thread_env(2)["OMP_NUM_THREADS"] == "1"


def test_the_workers_variable_sets_the_default_and_a_bad_value_is_refused(tmp_path, monkeypatch):
    from harness.launchers import default_workers

    configs, store = _main_command_configs(), RunStore(tmp_path)
    monkeypatch.setenv("HARNESS_WORKERS", "3")
    assert default_workers(configs, store) == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("HARNESS_WORKERS", bad)
        with pytest.raises(ValueError, match=rf"HARNESS_WORKERS must be .* not '{bad}'"):
            default_workers(configs, store)


def test_gpu_runs_get_a_worker_per_visible_gpu_by_default(tmp_path, monkeypatch):
    from harness import launchers
    from harness.sweep import expand

    monkeypatch.delenv("HARNESS_WORKERS")
    monkeypatch.setattr(launchers, "visible_gpus", lambda: 4)
    configs = expand(["lstm"], ["lm"], device="cuda", seeds=[0, 1, 2, 3, 4, 5])
    assert launchers.default_workers(configs, RunStore(tmp_path)) == 4
    assert launchers.default_workers(configs[:2], RunStore(tmp_path)) == 2  # no more than the runs


def test_workers_claim_the_most_work_first_and_never_a_run_before_its_upstream():
    from harness.launchers import claim_order, expected_work

    configs = _main_command_configs()
    ordered = claim_order(configs)
    assert sorted(c.run_id for c in ordered) == sorted(c.run_id for c in configs)
    # mt and ner train the most of the main command's runs: mt's 400 steps of 32 × 64 tokens through
    # an encoder and a decoder (twice the work per token of ner's one backbone) equal ner's 400
    # steps of 32 × 128; a zero-shot score trains nothing
    assert {(c.arch, c.task) for c in ordered[:4]} == {(a, t) for a in ("lstm", "transformer") for t in ("mt", "ner")}
    by_task = {c.task: c for c in configs if c.arch == "lstm"}
    def per_token(task):
        train = by_task[task].train
        return expected_work(by_task[task]) / (train.total_steps * train.batch_size * train.seq_len)
    assert per_token("mt") == pytest.approx(2 * per_token("ner"))
    zero_shot = {"agreement_lm", "figqa", "wsc273", "blimp_agreement", "marvin_linzen"}
    assert {c.task for c in ordered[-10:]} == zero_shot and all(expected_work(c) == 0 for c in ordered[-10:])
    position = {c.run_id: i for i, c in enumerate(ordered)}
    dependents = [c for c in configs if c.upstream]
    assert {c.task for c in dependents} == zero_shot | {"figqa_ft"}
    assert all(position[c.upstream] < position[c.run_id] for c in dependents)
    work = [expected_work(c) for c in ordered if not c.upstream]
    assert work == sorted(work, reverse=True)


def test_the_claim_order_keeps_upstream_runs_first_whatever_order_it_is_given():
    from harness.launchers import claim_order

    configs = _main_command_configs()
    for given in (configs[::-1], sorted(configs, key=lambda c: c.run_id)):
        position = {c.run_id: i for i, c in enumerate(claim_order(given))}
        assert all(position[c.upstream] < position[c.run_id] for c in configs if c.upstream)


def test_a_token_budget_counts_the_steps_it_takes():
    from harness.config import expected_work
    from harness.sweep import expand

    full, capped = expand(["gru"], ["agreement"], overrides={"token_budget": [None, 64 * 8 * 100]})
    assert capped.train.total_steps == 100 and full.train.total_steps == 600
    assert expected_work(capped) == pytest.approx(expected_work(full) / 6)


def test_a_fine_tuned_run_costlier_than_its_upstream_still_follows_it():
    from harness.launchers import claim_order, expected_work
    from harness.sweep import expand

    up, ft = expand(["gru"], ["figqa_ft"])
    ft = ft.model_copy(update={"train": ft.train.model_copy(update={"steps": 100_000})})
    assert ft.upstream == up.run_id and expected_work(ft) > expected_work(up)
    other = expand(["lstm"], ["agreement"])
    assert expected_work(other[0]) < expected_work(up)
    assert [c.run_id for c in claim_order([up, ft, *other])] == [up.run_id, ft.run_id, other[0].run_id]


def test_a_multi_run_command_uses_a_worker_per_core_unasked(tmp_path, data_dir, capfd, monkeypatch):
    from harness.launchers import usable_cores

    cores = usable_cores()
    if cores < 2:
        pytest.skip("needs two CPU cores")
    monkeypatch.delenv("HARNESS_WORKERS")
    # three sizes in plan order tiny (0.5M parameters), d64 (0.1M), d256 (1.6M): the workers claim
    # d256 and tiny first, and d64, the least work, last
    args = ["run", "--arch", "gru", "--tasks", "agreement", "--size", "tiny,d64,d256", "--device", "cpu",
            "--data-dir", data_dir, "--no-progress", "--results", tmp_path, *TINY_SETS]
    assert harness(*args) == 0
    out = capfd.readouterr().out
    assert "local launcher: 2 worker processes on the CPU" in out
    assert len(re.findall(r": finished in \d+ s \(worker [01]\) · ", out)) == 3, out
    runs = RunStore(tmp_path).runs()
    assert list(runs.sort_values("started_at")["size"])[-1] == "d64", runs[["size", "started_at"]]
    share = max(1, cores // 2)
    for info in runs["info"]:
        env = json.loads(info)["env"]
        assert (env["threads"], env["blas_threads"]) == (share, share), env


def test_the_flag_beats_the_variable_and_ray_keeps_its_own_meaning(tmp_path, monkeypatch):
    from argparse import Namespace

    from harness import launchers
    from harness.cli import _workers

    configs, store = [c for c in _main_command_configs() if not c.upstream], RunStore(tmp_path)
    monkeypatch.delenv("HARNESS_WORKERS")
    monkeypatch.setattr(launchers, "usable_cores", lambda: 2)
    local = Namespace(launcher="local", workers=None, retry_failed=False)
    assert _workers(local, configs, store) == 2
    monkeypatch.setenv("HARNESS_WORKERS", "3")
    assert _workers(local, configs, store) == 3
    assert _workers(Namespace(launcher="local", workers=1, retry_failed=False), configs, store) == 1
    # Ray's --workers is the CPUs of the cluster it starts: None (all) unless given
    assert _workers(Namespace(launcher="ray", workers=None, retry_failed=False), configs, store) is None
