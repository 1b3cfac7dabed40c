"""Real processes: a sweep killed with SIGKILL loses no finished run and shows no half-written
one; restarted, it redoes only what was cut off; two sweeps on one store run each config once."""
import os
import re
import signal
import subprocess
import sys
import time

from harness.store import RunStore
from tests.conftest import TINY_SETS


def command(results, data_dir, seeds, steps):
    return [sys.executable, "-m", "harness", "run", "--arch", "gru", "--tasks", "lm", "--seeds", seeds,
            "--results", str(results), "--data-dir", str(data_dir), "--device", "cpu", "--no-progress",
            *TINY_SETS, "--set", f"steps={steps}", "--set", "eval_every=1000"]


def counts(store: RunStore) -> dict[str, int]:
    with store._connect() as conn:
        return dict(conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())


def test_sigkill_mid_run_then_resume(tmp_path, data_dir):
    store = RunStore(tmp_path)
    proc = subprocess.Popen(command(tmp_path, data_dir, "0,1", 60), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and counts(store) != {"finished": 1, "running": 1}:
        time.sleep(0.05)
    assert counts(store) == {"finished": 1, "running": 1}, "expected to catch the second run mid-way"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    visible = store.runs()
    assert list(visible.status) == ["finished"], "the killed run is not visible"
    assert len(store.metrics().run_id.unique()) == 1
    finished_before = visible.run_id.iloc[0]

    again = subprocess.run(command(tmp_path, data_dir, "0,1", 60), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "ran: 1 finished; already recorded: 1" in again.stdout
    runs = store.runs()
    assert sorted(runs.status) == ["finished", "finished"]
    assert finished_before in set(runs.run_id)


def test_two_sweeps_on_one_store_run_each_config_once(tmp_path, data_dir):
    cmd = command(tmp_path, data_dir, "0,1,2,3", 6)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes share two cores
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    ran = [int(re.search(r"ran: (\d+) finished", out).group(1)) if "ran: nothing" not in out else 0
           for out, _ in outs]
    assert sum(ran) == 4, outs
    store = RunStore(tmp_path)
    assert sorted(store.runs().seed) == [0, 1, 2, 3] and (store.runs().status == "finished").all()
    assert len(store.metrics()) == 4 * len(store.metrics()[store.metrics().seed == 0])
    with store._connect() as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_an_interrupt_a_library_wrapped_in_its_own_error_still_stops_the_sweep(tmp_path, data_dir, monkeypatch):
    """SIGTERM arrives as KeyboardInterrupt; if code in between re-raises it as another error, the
    run is given back (pending, to be redone), not recorded as failed."""
    import pytest

    from harness import runner
    from harness.config import RunConfig
    from harness.core.train_config import TrainConfig
    from harness.sweep import run_sweep
    from tests.conftest import TINY_TRAIN

    def wrapped_interrupt(*args, **kwargs):
        try:
            raise KeyboardInterrupt("signal 15")
        except KeyboardInterrupt as err:
            raise RuntimeError("a library's own error") from err

    monkeypatch.setitem(runner.BY_KIND, "trained", wrapped_interrupt)
    cfg = RunConfig(arch="gru", task="agreement", train=TrainConfig(**TINY_TRAIN))
    store = RunStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_sweep([cfg], store, data_dir=data_dir, progress=False, log=lambda *a, **k: None)
    assert store.status(cfg.run_id) != "failed"
    assert store.claim(cfg)  # released: the next sweep runs it
