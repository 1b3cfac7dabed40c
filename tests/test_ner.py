"""ner: CoNLL reading and IOB1→BIO, seqeval entity scores, and a run through the harness."""
import json

import pytest
import torch

from harness.core.registry import TASKS
from harness.store import RunStore
from tasks.ner import entity_types, iob1_to_bio, read_conll, starts_entity_with_i
from tests.conftest import TINY_SETS, harness


def test_iob1_to_bio_on_hand_examples():
    assert iob1_to_bio(["I-PER", "I-PER", "O", "I-LOC"]) == ("B-PER", "I-PER", "O", "B-LOC")
    # IOB1 uses B- only where an entity follows one of the same type
    assert iob1_to_bio(["I-ORG", "I-ORG", "B-ORG", "I-ORG"]) == ("B-ORG", "I-ORG", "B-ORG", "I-ORG")
    assert iob1_to_bio(["I-PER", "I-LOC", "I-LOC"]) == ("B-PER", "B-LOC", "I-LOC")
    assert iob1_to_bio(["O", "O"]) == ("O", "O")
    assert starts_entity_with_i(["O", "I-MISC"]) and not starts_entity_with_i(["B-MISC", "I-MISC", "O"])


def test_conll2003_reads_as_published(data_dir):
    task = TASKS.get("ner")(TASKS.get("ner").Options(), data_dir)
    assert {k: len(v) for k, v in task.sentences.items()} == {"train": 14041, "dev": 3250, "test": 3453}
    assert sum(len(s.words) for s in task.sentences["train"]) == 203621
    assert task.scheme == "iob1"
    assert task.tags == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    first = task.sentences["train"][0]  # EU rejects German call ...
    assert first.words[:3] == ("EU", "rejects", "German") and first.tags[:3] == ("B-ORG", "O", "B-MISC")
    assert not any(starts_entity_with_i(s.tags) for split in task.sentences.values() for s in split)


def _write(path, sentences):
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in s) for s in sentences) + "\n")
    return path


SENTENCES = [[("John", "B-PER"), ("Smith", "I-PER"), ("visited", "O"), ("Paris", "B-LOC")],
             [("Acme", "B-ORG"), ("Corp", "I-ORG"), ("hired", "O"), ("Mary", "B-PER")]]


@pytest.fixture
def own_files(tmp_path):
    return {split: _write(tmp_path / f"{split}.txt", SENTENCES) for split in ("train", "dev", "test")}


def test_seqeval_scores_on_a_hand_example(own_files, monkeypatch):
    import time
    import types

    import tasks.ner
    from harness.core import measure

    clock = iter([10.0, 10.5])  # the tagging starts and ends: half a second
    fake = types.ModuleType("time")
    fake.__dict__.update(vars(time))
    fake.perf_counter = lambda: next(clock)
    for module in (measure, tasks.ner):  # the timing is read through measure's Stopwatch or directly
        monkeypatch.setattr(module, "time", fake, raising=False)
    cls = TASKS.get("ner")
    task = cls(cls.Options(**{k: str(v) for k, v in own_files.items()}, min_word_count=1), None)
    assert task.scheme == "bio"
    predicted = [["B-PER", "I-PER", "O", "B-ORG"],  # PER right, LOC missed, ORG spurious
                 ["B-ORG", "I-ORG", "O", "B-PER"]]  # both right
    index = {t: i for i, t in enumerate(task.tags)}

    def logits(model, batch):
        out = torch.zeros(*batch["words"].shape, len(task.tags))
        for i, words in enumerate(batch["words"].tolist()):
            mine = predicted[0] if words[0] == task.word_index["john"] else predicted[1]
            for j, tag in enumerate(mine):
                out[i, j, index[tag]] = 1.0
        return out

    task.logits = logits
    model = torch.nn.Linear(1, 1)
    from harness.core.train_config import TrainConfig

    metrics = {(m.name, m.length): m.value for m in task.evaluate(model, "test", TrainConfig(steps=1, batch_size=1, seq_len=8), None)}
    # gold: PER, LOC, ORG, PER (4); predicted: PER, ORG, ORG, PER (4); right: PER, ORG, PER (3)
    assert metrics["precision", None] == pytest.approx(3 / 4)
    assert metrics["recall", None] == pytest.approx(3 / 4)
    assert metrics["f1", None] == pytest.approx(3 / 4)
    assert metrics["f1_PER", None] == pytest.approx(1.0)
    assert metrics["f1_LOC", None] == pytest.approx(0.0)
    assert metrics["f1_ORG", None] == pytest.approx(2 / 3)  # 1 right of 2 predicted, 1 gold
    assert metrics["f1_by_length", 5] == pytest.approx(3 / 4) and metrics["sentences_by_length", 5] == 2
    assert metrics["sentences_per_s", None] == 2 / 0.5 and metrics["tokens_per_s", None] == 8 / 0.5


def test_entity_types_are_the_names_of_seqevals_per_type_scores():
    from seqeval.metrics.sequence_labeling import get_entities

    gold = [["B-PER", "I-PER", "O", "I-LOC"], ["B-ORG", "B-ORG-X", "O"]]
    predicted = [["O", "B-MISC", "I-MISC", "O"], ["I-zeta", "O", "B-A_B"]]  # types only predicted
    found = sorted({kind for kind, _, _ in get_entities(gold)} | {kind for kind, _, _ in get_entities(predicted)})
    assert entity_types(gold, predicted) == found == ["A_B", "LOC", "MISC", "ORG", "ORG-X", "PER", "zeta"]


def test_scores_equal_seqeval_classification_report_on_conll_dev(data_dir, monkeypatch):
    """The micro and per-type scores (computed without the report's macro and weighted averages)
    are exactly seqeval's report, on CoNLL-2003 dev tagged with every kind of error: entities
    missed, retyped, cut short, started with I-, and of a type the gold never has."""
    import random

    from seqeval.metrics import classification_report

    from harness.core.train_config import TrainConfig

    cls = TASKS.get("ner")
    task = cls(cls.Options(), data_dir)
    gold = [list(s.tags) for s in task.sentences["dev"]]
    rng = random.Random(0)
    predicted = []
    for tags in gold:
        out = []
        for tag in tags:
            roll = rng.random()
            if tag != "O" and roll < 0.1:
                tag = "O"
            elif tag != "O" and roll < 0.2:
                tag = tag[:2] + rng.choice(["PER", "LOC", "ORG", "MISC"])
            elif tag.startswith("B-") and roll < 0.3:
                tag = "I-" + tag[2:]
            elif tag == "O" and roll < 0.01:
                tag = "B-DATE"
            out.append(tag)
        predicted.append(out)
    monkeypatch.setattr(task, "predict", lambda model, split: (predicted, 1.0))
    metrics = {m.name: m.value for m in task.evaluate(None, "dev", TrainConfig(steps=1, batch_size=1, seq_len=8), None,
                                                            lengths=False)}
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    micro = report.pop("micro avg")
    assert (metrics["precision"], metrics["recall"], metrics["f1"]) == (micro["precision"], micro["recall"],
                                                                          micro["f1-score"])
    types = {k: v["f1-score"] for k, v in report.items() if not k.endswith(" avg")}
    assert set(types) == {"PER", "LOC", "ORG", "MISC", "DATE"}
    assert {k[3:]: v for k, v in metrics.items() if k.startswith("f1_")} == types
    assert 0.3 < metrics["f1"] < 0.9 and types["DATE"] == 0.0


@pytest.mark.parametrize("content, message", [
    ("John B-PER\nSmith\n", r"train.txt:2: expected a token and a tag"),
    ("John B-PER\nSmith X-PER\n", r"train.txt:2: tag 'X-PER' is not O, B-TYPE or I-TYPE"),
])
def test_malformed_conll_names_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "train.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_conll(path)


def test_declared_bio_with_an_entity_starting_with_i_is_refused(own_files, tmp_path):
    bad = _write(tmp_path / "bad.txt", [[("John", "I-PER"), ("ran", "O")]])
    cls = TASKS.get("ner")
    with pytest.raises(ValueError, match=r"bad.txt:1: an I- tag starts an entity"):
        cls(cls.Options(train=str(bad), dev=str(own_files["dev"]), test=str(own_files["test"]), scheme="bio"), None)
    with pytest.raises(ValueError, match="all three"):
        cls.Options(train=str(bad))


def test_harness_run_tags_bidirectionally_unless_told(tmp_path, data_dir):
    common = ("--tasks", "ner", "--results", tmp_path, "--data-dir", data_dir, "--no-progress", *TINY_SETS)
    assert harness("run", "--arch", "lstm", *common) == 0
    assert harness("run", "--arch", "lstm", *common, "--set", "bidirectional=false") == 0
    runs = RunStore(tmp_path).runs()
    assert set(runs.status) == {"finished"} and len(runs) == 2
    flags = {json.loads(c)["arch_options"]["bidirectional"]: label for c, label in zip(runs.config, runs.label)}
    assert flags == {True: "lstm", False: "lstm[bidirectional=False]"}
    from harness.rows import row_labels

    assert set(row_labels(runs).values()) == {"lstm", "lstm[bidirectional=False]"}
    metrics = RunStore(tmp_path).metrics()
    names = set(metrics.metric)
    assert {"f1", "precision", "recall", "f1_PER", "f1_by_length", "sentences_per_s", "tokens_per_s"} <= names
    assert set(metrics[metrics.metric == "f1"].split) == {"dev", "test"}
