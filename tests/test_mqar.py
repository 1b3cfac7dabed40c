"""MQAR: targets checked against an independent reading of each sequence, the settings as asked,
gaps as Zoology's power law draws them; the shared per-position base scores token and sequence
accuracy per length and per cell."""
import random
from collections import Counter

import pytest
import torch

from harness.core.registry import ARCHITECTURES, TASKS
from harness.core.train_config import TrainConfig
from tasks.mqar import gap_probabilities, recall_answers
from tasks.token_targets import IGNORE, Tagged, accuracy_metrics

TRAIN = TrainConfig(**TASKS.get("mqar").budgets["smoke"])


def make(**options):
    cls = TASKS.get("mqar")
    defaults = dict(vocab_size=256, n_train=300, n_valid=50, n_test_per_cell=20,
                    train_settings=[(64, 4), (128, 8)], test_settings=[(64, 4), (128, 8), (256, 16)])
    return cls(cls.Options(**{**defaults, **options}), None)


@pytest.mark.parametrize("random_filler", [True, False])
def test_every_target_is_the_value_paired_with_the_queried_key(random_filler):
    task = make(random_filler=random_filler)
    for split in ("train", "valid", "test"):
        for e in task.split(split, TRAIN):
            pairs = int(e.cell.removeprefix("pairs_"))
            assert len(e.tokens) == e.length
            keys, values = e.tokens[0:2 * pairs:2], e.tokens[1:2 * pairs:2]
            assert len(set(keys)) == pairs and all(2 <= k < 128 for k in keys)
            assert all(128 <= v < 256 for v in values)
            scored = {i: t for i, t in enumerate(e.targets) if t != IGNORE}
            # every pair is queried exactly once, and nowhere else a key turns up
            assert scored == recall_answers(e.tokens, pairs)
            assert len(scored) == pairs
            if not random_filler:
                assert set(e.tokens[2 * pairs:]) <= set(keys) | {1}


def test_settings_are_the_ones_asked_for():
    task = make()
    train = task.split("train", TRAIN)
    assert Counter(e.length for e in train) == {64: 150, 128: 150}
    test = task.split("test", TRAIN)
    assert Counter((e.length, e.cell) for e in test) == {(64, "pairs_4"): 20, (128, "pairs_8"): 20,
                                                         (256, "pairs_16"): 20}
    assert not {e.tokens for e in test} & {e.tokens for e in train}
    again = make().split("test", TRAIN)
    assert [e.tokens for e in again] == [e.tokens for e in test], "the data seed fixes the data"
    assert [e.tokens for e in make(data_seed=1).split("test", TRAIN)] != [e.tokens for e in test]


def test_query_gaps_follow_the_power_law():
    p = gap_probabilities(10, 0.01)
    assert p.sum() == pytest.approx(1.0) and (p[:-1] > p[1:]).all()
    assert p[0] / p[1] == pytest.approx(2 ** 0.99)
    # queries cluster right after the pairs: the first query slots are taken far more often
    task = make(n_train=600, train_settings=[(128, 4)], test_settings=[(128, 4)])
    slots = Counter()
    for e in task.split("train", TRAIN):
        slots.update((i - 8) // 2 for i, t in enumerate(e.targets) if t != IGNORE)
    assert slots[0] > 5 * slots[50]


def test_settings_that_cannot_hold_their_pairs_are_refused():
    cls = TASKS.get("mqar")
    with pytest.raises(ValueError, match=r"L=16, pairs=8\): L must be even and at least 4 × pairs"):
        cls.Options(train_settings=[(16, 8)])
    with pytest.raises(ValueError, match="vocab_size 16 has only 6 distinct keys"):
        cls.Options(vocab_size=16, train_settings=[(64, 8)], test_settings=[(64, 8)])
    with pytest.raises(ValueError, match=r"longer than the budget's seq_len 128 \(--set seq_len=256\)"):
        make(train_settings=[(256, 8)]).split("train", TRAIN)


def test_token_and_sequence_accuracy_per_length_and_cell():
    a = Tagged((5, 6, 7, 8), (IGNORE, 1, IGNORE, 2), 4, "pairs_2")
    b = Tagged((5, 6, 7, 8, 9, 9), (IGNORE, 1, 1, IGNORE, 3, IGNORE), 6, "pairs_3")
    metrics = {(m.name, m.length): m.value for m in accuracy_metrics("test", [a, b], [(2, 2), (1, 3)])}
    assert metrics[("accuracy", None)] == pytest.approx(3 / 5)
    assert metrics[("sequence_accuracy", None)] == pytest.approx(1 / 2)
    assert metrics[("accuracy", 6)] == pytest.approx(1 / 3) and metrics[("sequence_accuracy", 6)] == 0
    assert metrics[("accuracy_pairs_2", 4)] == 1.0 and metrics[("examples", None)] == 2
    with pytest.raises(ValueError, match="3 tokens but 2 targets"):
        Tagged((1, 2, 3), (1, 2), 3)


def test_the_loss_and_the_scores_read_only_the_scored_positions():
    task = make(n_train=64)
    torch.manual_seed(0)
    backbone = ARCHITECTURES.get("lstm")(d_model=16, n_layers=1, options=ARCHITECTURES.get("lstm").Options())
    model = task.build_model(backbone)
    batch = next(task.train_batches(TRAIN, torch.Generator().manual_seed(0)))
    loss = task.loss(model, batch)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(torch.log(torch.tensor(256.0)).item(), rel=0.1)
    full = model(batch["tokens"], batch["mask"])  # every position's logits; unscored ones ignored
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(
        full.flatten(0, 1), batch["targets"].flatten(), ignore_index=IGNORE).item(), rel=1e-6)
    # a model that answers every query right scores 1.0, however wrong it is elsewhere
    examples = task.split("test", TRAIN)

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, tokens, mask, where):
            logits = torch.zeros(*tokens.shape, 256)
            for row in range(len(tokens)):
                seq = tuple(tokens[row][mask[row]].tolist())
                e = next(x for x in examples if x.tokens == seq)
                for i, t in enumerate(e.targets):
                    logits[row, i, t if t != IGNORE else 0] = 1.0
            return logits[where]

    scores = {(m.name, m.length): m.value for m in task.evaluate(Oracle(), "test", TRAIN, None)}
    assert scores[("accuracy", None)] == 1.0 and scores[("sequence_accuracy_pairs_16", 256)] == 1.0


def test_evaluation_batches_hold_at_most_eval_tokens_and_score_the_same(monkeypatch):
    import tasks.token_targets as base

    task = make()
    examples = task.split("test", TRAIN)  # lengths 64, 128 and 256
    torch.manual_seed(0)
    backbone = ARCHITECTURES.get("gru")(d_model=8, n_layers=1, options=ARCHITECTURES.get("gru").Options())
    model = task.build_model(backbone).eval()
    whole = task.predict(model, examples)
    shapes = []
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda tokens, mask, where: shapes.append(tokens.shape) or original(tokens, mask, where))
    monkeypatch.setattr(base, "EVAL_TOKENS", 1000)
    assert task.predict(model, examples) == whole
    assert max(b * t for b, t in shapes) <= 1000 and len(shapes) > 3
