"""The agreement generator, checked by independent rules, and the nearest-noun baseline."""
import random

import pytest
import torch

from harness.core.train_config import TrainConfig
from harness.core.registry import TASKS
from tasks.agreement import NOUNS, Grammar

NUMBER = {form: number for pair in NOUNS for number, form in enumerate(pair)}
TRAIN = TrainConfig(**TASKS.get("agreement").budgets["smoke"])


@pytest.fixture(scope="module")
def task():
    cls = TASKS.get("agreement")
    return cls(cls.Options(n_train=3000, n_test_per_cell=6), None)


def words(task, example):
    return [task.vocab[i] for i in example.tokens]


def analyse(prefix):
    """Independent reading of a prefix: subject number, distance to the verb, attractors.
    The subject is the first noun after a fronted phrase's comma, if there is one."""
    start = prefix.index(",") + 1 if "," in prefix else 0
    nouns = [(i, NUMBER[w]) for i, w in enumerate(prefix) if w in NUMBER and i >= start]
    (subject_at, number), rest = nouns[0], nouns[1:]
    distance = len(prefix) - subject_at  # the verb would stand at index len(prefix)
    return number, distance, sum(n != number for _, n in rest), rest


def test_labels_distances_and_attractors_are_exactly_as_generated(task):
    for split in ("train", "valid", "test"):
        for e in task.split(split, TRAIN):
            number, distance, attractors, _ = analyse(words(task, e))
            assert e.label == number
            assert e.length == distance
            assert e.cell == f"attractors_{attractors}"


def test_the_first_noun_is_no_shortcut(task):
    train = task.split("train", TRAIN)
    fronted = [e for e in train if "," in words(task, e)]
    assert 0.4 < len(fronted) / len(train) < 0.6
    first_noun = [NUMBER[next(w for w in words(task, e) if w in NUMBER)] == e.label for e in train]
    assert 0.65 < sum(first_noun) / len(train) < 0.85  # right only when no phrase, or by chance


def test_every_requested_cell_is_produced():
    grammar, rng = Grammar(len(NOUNS)), random.Random(3)
    for distance in range(1, 40):
        for attractors in range(0, 5):
            if not grammar.feasible(distance, attractors):
                with pytest.raises(ValueError, match="no sentence"):
                    grammar.sentence(distance, attractors, rng)
                continue
            for _ in range(5):
                prefix, number = grammar.sentence(distance, attractors, rng)
                assert analyse(prefix)[:3] == (number, distance, attractors)


def test_train_is_short_and_few_attractors_test_is_long_and_unseen(task):
    train, test = task.split("train", TRAIN), task.split("test", TRAIN)
    assert max(e.length for e in train) == TRAIN.seq_len
    assert {e.cell for e in train} == {"attractors_0", "attractors_1"}
    assert max(e.length for e in test) == 8 * TRAIN.seq_len
    assert {e.cell for e in test} == {f"attractors_{k}" for k in range(5)}
    assert not {e.tokens for e in test} & {e.tokens for e in train}
    assert not {e.tokens for e in task.split("valid", TRAIN)} & {e.tokens for e in train}


def test_vocabulary_size_is_controlled():
    cls = TASKS.get("agreement")
    small = cls(cls.Options(n_nouns=3, n_train=200), None)
    used = {w for e in small.split("train", TRAIN) for w in words(small, e) if w in NUMBER}
    assert used <= {w for pair in NOUNS[:3] for w in pair}


class NearestNoun(torch.nn.Module):
    """Answers with the number of the last noun before the verb."""

    def __init__(self, vocab):
        super().__init__()
        self.number = torch.tensor([NUMBER.get(w, -1) for w in vocab])
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens, mask):
        numbers = torch.where(mask, self.number[tokens], -1)
        last = torch.stack([row[row >= 0][-1] for row in numbers])
        return torch.nn.functional.one_hot(last, 2).float()


def test_nearest_noun_baseline_scores_as_the_attractor_counts_predict(task):
    metrics = {(m.name, m.length): m.value for m in task.evaluate(NearestNoun(task.vocab), "test", TRAIN, None)}
    test = task.split("test", TRAIN)
    assert metrics[("accuracy_attractors_0", None)] == 1.0
    for k in range(1, 5):
        assert metrics[(f"accuracy_attractors_{k}", None)] == 0.0
    assert metrics[("accuracy", None)] == pytest.approx(sum(e.cell == "attractors_0" for e in test) / len(test))
    # per distance: the share of attractor-free sentences at that distance
    for d in (1, 4, 20, 64):
        at = [e for e in test if e.length == d]
        assert metrics[("accuracy", d)] == pytest.approx(sum(e.cell == "attractors_0" for e in at) / len(at))
