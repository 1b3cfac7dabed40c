"""The length-generalisation probes: answers checked by independent rules, lengths as promised."""
import pytest

from harness.core.train_config import TrainConfig
from harness.core.registry import TASKS
from harness.sweep import expand

TRAIN = TrainConfig(**TASKS.get("extrapolation").budgets["smoke"])
L = TRAIN.seq_len


def make(probe, **options):
    cls = TASKS.get("extrapolation")
    return cls(cls.Options(probe=probe, n_train=2000, n_test_per_cell=50, **options), None)


def symbols(task, e):
    return [task.vocab[i] for i in e.tokens]


def reduces_to_empty(word: str) -> bool:
    """Balanced iff deleting adjacent matched pairs empties it (independent of the generator)."""
    previous = None
    while previous != word:
        previous, word = word, word.replace("()", "").replace("[]", "")
    return word == ""


@pytest.mark.parametrize("probe", ["parity", "dyck", "recall"])
def test_answers_follow_an_independent_rule(probe):
    task = make(probe)
    for split in ("train", "test"):
        for e in task.split(split, TRAIN):
            s = symbols(task, e)
            if probe == "parity":
                assert e.label == s.count("1") % 2
            elif probe == "dyck":
                assert e.label == int(reduces_to_empty("".join(s)))
            else:
                pairs = dict(zip(s[0:-1:2], s[1:-1:2]))
                assert len(pairs) == (len(s) - 1) // 2, "keys are distinct"
                assert pairs[s[-1]] == f"v{e.label}"


@pytest.mark.parametrize("probe", ["parity", "dyck", "recall"])
def test_train_short_test_at_multiples_and_unseen(probe):
    task = make(probe)
    train, test = task.split("train", TRAIN), task.split("test", TRAIN)
    assert max(len(e.tokens) for e in train) <= L
    assert sorted({e.length for e in test}) == [L, 2 * L, 4 * L, 8 * L]
    for e in test:
        assert len(e.tokens) == (e.length if probe != "recall" else 2 * ((e.length - 1) // 2) + 1)
    assert not {e.tokens for e in test} & {e.tokens for e in train}
    labels = [e.label for e in test]
    assert min(labels.count(c) for c in set(labels)) > 0.3 * len(labels) / len(set(labels)), "classes balanced"


def test_recall_refuses_lengths_its_keys_cannot_fill():
    task = make("recall", n_keys=10)
    with pytest.raises(ValueError, match="needs 63 distinct keys; n_keys=10"):
        task.split("test", TRAIN)


def test_all_probes_run_unless_one_is_chosen():
    assert sorted(c.task_label for c in expand(["lstm"], ["extrapolation"])) == [
        "extrapolation/dyck", "extrapolation/parity", "extrapolation/recall"]
    chosen = expand(["lstm"], ["extrapolation"], overrides={"probe": ["dyck"]})
    assert [c.task_label for c in chosen] == ["extrapolation/dyck"]
