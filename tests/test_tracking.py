"""W&B tracking, offline: every run becomes a W&B run with its config, step losses and results."""
import json

import pytest

from harness.config import RunConfig
from harness.core.train_config import TrainConfig
from harness.runner import execute
from harness.store import RunStore
from tests.conftest import TINY_TRAIN

wandb = pytest.importorskip("wandb")


def test_run_is_tracked_offline(lm_task, tmp_path, monkeypatch):
    from harness.tracking import WandbTracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    store = RunStore(tmp_path)
    cfg = RunConfig(arch="gru", task="lm", train=TrainConfig(**TINY_TRAIN))
    assert store.claim(cfg)
    assert execute(cfg, store, lm_task.data_dir, tracker_factory=WandbTracker, progress=False) == "finished"

    runs = list((store.run_dir(cfg.run_id) / "wandb").glob(f"offline-run-*-{cfg.run_id}"))
    assert len(runs) == 1, "one offline W&B run, named by the run id"
    record = next(runs[0].glob("*.wandb")).read_bytes()
    assert record.count(b"train/loss") >= TINY_TRAIN["steps"]  # one history row per step
    assert b"test/ppl@16" in record and cfg.run_id.encode() in record
    table = json.loads(next(runs[0].glob("files/media/table/results_*.table.json")).read_text())
    logged = {(s, m, l): v for s, m, l, v in table["data"]}
    stored = store.metrics()
    ppl = stored.query("split == 'test' and metric == 'ppl' and length == 16").value.iloc[0]
    assert logged[("test", "ppl", 16)] == pytest.approx(ppl)
