"""The run store: claims, outcomes, stale claims, concurrent writers, safe paths."""
import multiprocessing as mp
import subprocess
import sys

import pytest

from harness.config import RunConfig
from harness.core.train_config import TrainConfig
from harness.core.metrics import Metric
from harness.store import RunStore


def cfg(seed=0, lr=1e-3):
    return RunConfig(arch="gru", task="lm", seed=seed, train=TrainConfig(steps=1, batch_size=1, seq_len=4, lr=lr))


def test_run_id_is_a_stable_content_hash():
    assert cfg().run_id == cfg().run_id
    assert cfg().run_id != cfg(seed=1).run_id != cfg(lr=2e-3).run_id
    # defaults are stored explicitly, so spelling one out changes nothing
    explicit = RunConfig(arch="gru", task="lm", seed=0, arch_options={"dropout": 0.0},
                         train=TrainConfig(steps=1, batch_size=1, seq_len=4, lr=1e-3))
    assert explicit.run_id == cfg().run_id
    # an optional field left unset does not enter the hash (ids survive its introduction)
    assert cfg().model_copy(update={"upstream": "0" * 16}).run_id != cfg().run_id
    # and the id is the same in a fresh interpreter
    code = ("from harness.config import RunConfig; from harness.core.train_config import TrainConfig; print(RunConfig(arch='gru', task='lm', "
            "train=TrainConfig(steps=1, batch_size=1, seq_len=4, lr=1e-3)).run_id)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == cfg().run_id


def test_finished_runs_are_skipped_and_their_metrics_readable(tmp_path):
    store = RunStore(tmp_path)
    c = cfg()
    assert store.claim(c)
    assert store.runs().empty, "a run in progress is not visible"
    store.finish(c.run_id, "finished", [Metric("test", "ppl", 12.5, 8), Metric("run", "params", 3)], {"a": 1})
    assert not store.claim(c)
    assert not store.claim(c, retry_failed=True), "retrying failed runs never reruns finished ones"
    m = store.metrics()
    assert set(m.columns) >= {"run_id", "arch", "split", "metric", "length", "value"}
    assert m.set_index("metric").loc["ppl", "value"] == 12.5


def test_claim_of_a_dead_process_is_taken_over(tmp_path):
    store = RunStore(tmp_path)
    c = cfg()
    assert store.claim(c)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    with store._connect() as conn:
        conn.execute("UPDATE runs SET pid=? WHERE run_id=?", (int(dead), c.run_id))
    assert store.claim(c)


def test_release_forgets_an_interrupted_run(tmp_path):
    store = RunStore(tmp_path)
    c = cfg()
    store.claim(c)
    store.release(c.run_id)
    assert store.status(c.run_id) is None


def test_paths_and_statuses_are_checked(tmp_path):
    store = RunStore(tmp_path)
    for bad in ("../../etc", "a/b", "", "ABCDEF0123456789"):
        with pytest.raises(ValueError):
            store.run_dir(bad)
    with pytest.raises(ValueError):
        store.finish(cfg().run_id, "weird", [], {})


def _writer(root, seeds, out):
    store = RunStore(root)
    claimed = []
    for seed in seeds:
        c = cfg(seed=seed)
        if store.claim(c):
            store.finish(c.run_id, "finished", [Metric("test", "ppl", float(seed), 8)] * 5, {})
            claimed.append(seed)
    out.put(claimed)


def test_concurrent_writers_neither_collide_nor_corrupt(tmp_path):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), range(i * 20, i * 20 + 40), out)) for i in range(2)]
    for p in procs:
        p.start()
    claimed = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    # seeds 20-39 were wanted by both: each is run by exactly one writer
    assert sorted(claimed[0] + claimed[1]) == list(range(60))
    store = RunStore(tmp_path)
    assert len(store.runs()) == 60 and (store.runs().status == "finished").all()
    assert len(store.metrics()) == 300
    with store._connect() as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
