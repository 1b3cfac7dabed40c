"""figqa_ft: an lm run's model fine-tuned to choose between Fig-QA's two endings."""
import json

import pytest
import torch

from architectures.sizing import build_backbone
from harness.core.registry import TASKS
from harness.runner import load_trained
from harness.store import RunStore
from tasks.figqa_ft import load_figqa
from tasks.lm import LanguageModel, LMOptions
from tests.conftest import TINY_SETS, harness


@pytest.fixture(scope="module")
def lm(lm_task):
    torch.manual_seed(0)
    return LanguageModel(build_backbone("lstm", "tiny"), len(lm_task.corpus.vocab), LMOptions()).eval()


@pytest.fixture(scope="module")
def task(data_dir, lm_task, lm):
    """Built, as a run's task is, with its upstream: the items are read with the lm vocabulary."""
    cls = TASKS.get("figqa_ft")
    return cls(cls.Options(), data_dir, lm_task.as_upstream(lm))


def test_a_task_built_without_its_upstream_says_so_instead_of_training(data_dir):
    cls = TASKS.get("figqa_ft")
    bare = cls(cls.Options(), data_dir)  # what a sweep builds to check the data
    assert len(bare.items["dev"]) == 1094
    with pytest.raises(LookupError, match="built without its upstream run's model"):
        next(bare.train_batches(None, torch.Generator()))


def test_splits_keep_pairs_together_and_dev_apart(task):
    train, valid, dev = (task.items[s] for s in ("train", "valid", "dev"))
    assert len(train) + len(valid) == 8016 and len(dev) == 1094
    assert 0.07 < len(valid) / 8016 < 0.13
    assert not {r.qid for r in train} & {r.qid for r in valid}, "both items of a pair on one side"
    assert not {(r.start, r.endings) for r in train + valid} & {(r.start, r.endings) for r in dev}


def test_scores_are_the_zero_shot_log_likelihoods(task, lm, lm_task):
    pytest.importorskip("lm_eval")
    from tasks.lm_eval.adapter import HarnessLM

    items = task.items["dev"][:24]
    adapter = HarnessLM(lm, lm_task.corpus.vocab, batch_size=7)
    expected = torch.tensor([[adapter._score([adapter.split(r.start, " " + e)])[0][0] for e in r.endings]
                             for r in items])
    batch = task._batch(task._encoded("dev")[:24], max_len=64)
    with torch.no_grad():
        got = task.scores(lm, batch)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)
    assert batch["labels"].tolist() == [r.label for r in items]


def test_accuracy_picks_the_higher_scored_ending_first_on_ties(task, lm, lm_task, monkeypatch):
    batch = task._batch(task._encoded("dev"), max_len=64)
    with torch.no_grad():
        s = task.scores(lm, batch)
    chosen = (s[:, 1] > s[:, 0]).long()
    expected = (chosen == batch["labels"]).float().mean().item()
    train = TASKS.get("figqa_ft").budgets["smoke"]
    from harness.core.train_config import TrainConfig

    metrics = {m.name: m.value for m in task.evaluate(lm, "dev", TrainConfig(**train), None)}
    assert metrics["accuracy"] == pytest.approx(expected)
    assert metrics["items"] == 1094
    assert metrics["ties"] == pytest.approx((s[:, 0] == s[:, 1]).float().mean().item())


def test_fine_tuning_lowers_the_two_way_cross_entropy(task, lm_task):
    torch.manual_seed(1)
    model = LanguageModel(build_backbone("gru", "tiny"), len(lm_task.corpus.vocab), LMOptions())
    batch = task._batch(task._encoded("train")[:16], max_len=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = task.loss(model, batch).item()
    for _ in range(30):
        optimizer.zero_grad()
        task.loss(model, batch).backward()
        optimizer.step()
    with torch.no_grad():
        after = task.loss(model, batch).item()
    assert after < 0.5 * before, (before, after)


def test_a_malformed_row_names_the_file_and_line(tmp_path):
    bad = tmp_path / "train.csv"
    bad.write_text("startphrase,ending1,ending2,labels,valid,qid\nA,b,c,0,1,1\nD,e,f,x,1,2\n")
    with pytest.raises(ValueError, match=r"train.csv:3: labels must be 0 or 1"):
        load_figqa(bad)
    bad.write_text("startphrase,ending1,labels\nA,b,0\n")
    with pytest.raises(ValueError, match=r"train.csv:1: missing columns ending2, qid"):
        load_figqa(bad)


def test_harness_run_tunes_the_lm_run_and_reports_dev_accuracy(tmp_path, data_dir, task, lm_task):
    common = ("--arch", "cnn", "--results", tmp_path, "--data-dir", data_dir, "--no-progress", *TINY_SETS,
              "--set", "train_file=train_s")
    assert harness("run", "--tasks", "figqa_ft", *common) == 0
    store = RunStore(tmp_path)
    runs = store.runs().set_index("task")
    assert set(runs.status) == {"finished"}
    lm_id, ft_id = runs.loc["lm", "run_id"], runs.loc["figqa_ft", "run_id"]
    config = json.loads(runs.loc["figqa_ft", "config"])
    assert config["upstream"] == lm_id and config["train"]["seq_len"] == 16
    info = json.loads(runs.loc["figqa_ft", "info"])
    assert info["upstream"] == lm_id and info["items"]["dev"] == 1094
    metrics = store.metrics()
    mine = metrics[metrics.run_id == ft_id].set_index(["split", "metric"]).value
    assert mine["dev", "items"] == 1094
    assert ("train", "tokens_per_s") in mine.index

    _, tuned = load_trained(store, ft_id, data_dir)
    _, pretrained = load_trained(store, lm_id, data_dir)
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, pretrained.state_dict()[k])]
    assert changed, "fine-tuning changed the language model's weights"
    # the stored dev accuracy is the tuned checkpoint's: its higher-scored ending, the first on a tie
    right, dev = 0, task._encoded("dev")
    with torch.no_grad():
        for i in range(0, len(dev), task.options.eval_batch_size):
            batch = task._batch(dev[i:i + task.options.eval_batch_size], config["train"]["seq_len"])
            s = task.scores(tuned, batch)
            right += int(((s[:, 1] > s[:, 0]).long() == batch["labels"]).sum())
    assert mine["dev", "accuracy"] == pytest.approx(right / 1094)
    assert harness("run", "--tasks", "figqa_ft", *common) == 0
    assert len(RunStore(tmp_path).runs()) == 2, "nothing reran"
