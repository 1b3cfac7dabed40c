"""Zero-shot agreement on the real Linzen and Gulordava sets."""
import shutil
from collections import Counter

import pytest
import torch

from harness.core.registry import TASKS
from tasks.base import Upstream
from tasks.agreement_lm import LINZEN_FILES, load_gulordava, load_linzen


@pytest.fixture(scope="module")
def task(data_dir):
    cls = TASKS.get("agreement_lm")
    return cls(cls.Options(), data_dir)


def test_loaders_read_every_row(task):
    linzen, gulordava = task.items["linzen"], task.items["gulordava"]
    assert len(linzen) == 7489  # SOURCE.md
    assert Counter(i.group for i in linzen) == {"attractors_0": 1972, "attractors_1": 1957,
                                                "attractors_2": 1943, "attractors_3": 1287,
                                                "attractors_4": 330}
    assert len(gulordava) == 410
    assert Counter(i.group for i in gulordava) == {"original": 41, "nonce": 369}
    first = linzen[0]
    assert " ".join(first.prefix) == "as a consequence of being mostly privately owned , the town"
    assert (first.correct, first.wrong) == ("is", "are")
    assert gulordava[0].prefix == ("An", "agreeable", "insight", "executed", "in", "fifty")
    assert (gulordava[0].correct, gulordava[0].wrong) == ("represents", "represent")
    # four gold rows of the published file capitalise the forms; the lower-cased text decides
    assert all(i.correct == i.correct.lower() for i in linzen)


def test_a_malformed_row_is_named_by_file_and_line(data_dir, tmp_path):
    folder = tmp_path / "colorlessgreen"
    shutil.copytree(data_dir / "colorlessgreen", folder)
    gold = folder / LINZEN_FILES[1]
    gold.chmod(0o644)
    lines = gold.read_text().splitlines()
    lines[41] = "11\tis"
    gold.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"subj_agr_filtered\.gold:42: expected target_idx"):
        load_linzen(folder)
    load_gulordava(folder)  # the other set is untouched


class PrefersSmallerId(torch.nn.Module):
    """A hand-made LM: log-probability falls with the word's id, whatever the prefix."""

    def __init__(self, vocab_size):
        super().__init__()
        self.scores = -torch.arange(vocab_size, dtype=torch.float32)
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def next_token_logprobs(self, inputs, mask):
        return self.scores.expand(len(inputs), -1)


def test_accuracy_is_exactly_what_the_gold_labels_predict(task, lm_task):
    index = lm_task.corpus.index
    model = PrefersSmallerId(len(index))
    for split in ("linzen", "gulordava"):
        metrics = {m.name: m.value for m in task.evaluate_upstream(Upstream(model, tuple(lm_task.corpus.vocab)), split)}
        scored = [i for i in task.items[split] if i.correct in index and i.wrong in index]
        expected = sum(index[i.correct] < index[i.wrong] for i in scored) / len(scored)
        assert metrics["accuracy"] == pytest.approx(expected)
        assert metrics["coverage"] == pytest.approx(len(scored) / len(task.items[split]))
        assert 0.5 < metrics["coverage"] <= 1
        groups = {i.group for i in scored}
        for g in groups:
            hits = [index[i.correct] < index[i.wrong] for i in scored if i.group == g]
            assert metrics[f"accuracy_{g}"] == pytest.approx(sum(hits) / len(hits))
