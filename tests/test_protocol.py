"""Best-of-learning-rate protocol: each row at the rate with the best mean dev score."""
import json

import pytest

from harness.store import RunStore
from harness.sweep import expand, run_sweep
from harness.render import number as _number
from harness.protocol import best_lr
from harness.tables import make_table
from tests.conftest import TINY_TRAIN


@pytest.fixture(scope="module")
def grid_store(tmp_path_factory, small_data):
    root = tmp_path_factory.mktemp("grid")
    overrides = {k: [v] for k, v in TINY_TRAIN.items() if k != "lr"} | {"lr": [1e-4, 1e-2]}
    configs = expand(["gru"], ["lm", "agreement_lm"], seeds=[0, 1], overrides=overrides)
    assert len(configs) == 8
    summary = run_sweep(configs, RunStore(root), data_dir=small_data, progress=False, log=lambda *a, **k: None)
    assert summary.ran == {"finished": 8}
    return RunStore(root)


def test_choice_follows_the_mean_dev_score(grid_store):
    m = grid_store.metrics()
    runs = grid_store.runs()
    lr = {r.run_id: json.loads(r.config)["train"]["lr"] for r in runs.itertuples()}
    dev = m[(m.task == "lm") & (m.split == "valid") & (m.metric == "ppl") & (m.length == 16)]
    mean_dev = dev.assign(lr=dev.run_id.map(lr)).groupby("lr").value.mean()
    best = mean_dev.idxmin()
    kept, chosen = best_lr(grid_store)
    assert chosen[("gru", "lm", "tiny")] == best
    assert chosen[("gru", "agreement_lm", "tiny")] == best, "zero-shot runs follow their upstream lm"
    assert sorted(lr[i] for i in kept) == [best] * 4

    test = m[(m.task == "lm") & (m.split == "test") & (m.metric == "ppl") & (m.length == 16)]
    expected = test[test.run_id.map(lr) == best].value.mean()
    table = make_table(grid_store, protocol="best-lr", task="lm")
    row = next(line for line in table.splitlines() if line.startswith("| gru "))
    assert row.split("|")[4].strip().strip("*") == f"{_number(expected)} ± {_number(test[test.run_id.map(lr) == best].value.std())}"
    assert f"protocol: best learning rate per row and task by mean dev score over seeds (gru agreement_lm: {best:g}; gru lm: {best:g})" in table


def test_every_setting_protocol_keeps_one_row_per_rate(grid_store):
    table = make_table(grid_store, task="lm")
    assert "| gru[lr=0.0001]" in table and "| gru[lr=0.01]" in table
    assert "protocol: every setting reported" in table
    with pytest.raises(Exception, match="did you mean 'best-lr'"):
        make_table(grid_store, protocol="bestlr")
