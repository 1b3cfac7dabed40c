"""Minimal-pair suites through lm-eval: each YAML task loads the real files with the expected
number of documents; a model that always prefers the first choice scores exactly what the gold
labels predict; your own pairs file is validated, scored and its checksum stored."""
import csv
import hashlib
import json
import tempfile

import pytest

pytest.importorskip("lm_eval")
from lm_eval.api.model import LM  # noqa: E402

from harness.core.registry import TASKS  # noqa: E402
from harness.store import RunStore  # noqa: E402
from tasks.lm_eval.suites import BLIMP_AGREEMENT, check_pairs_file  # noqa: E402
from tests.conftest import TINY_SETS, harness  # noqa: E402


class PrefersFirst(LM):
    """Scores choice i with -i, so the first choice always wins (ties: every choice scores 0)."""

    def __init__(self, ties: bool = False):
        super().__init__()
        self.ties = ties

    def loglikelihood(self, requests):
        return [(0.0 if self.ties else -float(r.idx), False) for r in requests]

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError

    def generate_until(self, requests):
        raise NotImplementedError


def suite(name, data_dir, **options):
    cls = TASKS.get(name)
    return cls(cls.Options(**options), data_dir)


def metric(metrics, split, name):
    return next(m.value for m in metrics if m.split == split and m.name == name)


def test_fig_qa_dev_loads_1094_items_and_first_choice_accuracy_matches_the_labels(data_dir):
    with open(data_dir / "figqa" / "dev.csv", encoding="utf-8", newline="") as f:
        labels = [int(row["labels"]) for row in csv.DictReader(f)]
    metrics = suite("figqa", data_dir).score(PrefersFirst())
    assert metric(metrics, "figqa", "items") == 1094 == len(labels)
    assert metric(metrics, "figqa", "accuracy") == pytest.approx(labels.count(0) / len(labels))
    assert metric(metrics, "figqa", "ties") == 0


def test_blimp_agreement_loads_1000_pairs_per_paradigm_and_the_good_sentence_is_first(data_dir):
    metrics = suite("blimp_agreement", data_dir).score(PrefersFirst())
    paradigms = [p for group in BLIMP_AGREEMENT.values() for p in group]
    assert len(paradigms) == 16
    for p in paradigms:
        assert metric(metrics, f"blimp_{p}", "items") == 1000
        assert metric(metrics, f"blimp_{p}", "accuracy") == 1.0
    assert metric(metrics, "mean", "accuracy") == 1.0
    assert {m.split for m in metrics if m.name == "accuracy"} >= set(BLIMP_AGREEMENT)


def test_all_of_blimp_is_67_paradigms(data_dir):
    task = suite("blimp", data_dir, limit=2)
    assert len(task.rendered()) == 67
    with tempfile.TemporaryDirectory() as folder:
        manager = task.task_manager(folder)
        assert sorted(manager.all_tasks) == sorted(task.rendered())


def test_ties_are_counted(data_dir):
    metrics = suite("blimp_agreement", data_dir, limit=10).score(PrefersFirst(ties=True))
    assert metric(metrics, "blimp_anaphor_gender_agreement", "ties") == 1.0


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"sentence_good": "The cats are here .", "sentence_bad": "The cats is here ."},
            {"sentence_good": "The dog runs .", "sentence_bad": "The dog run ."},
            {"sentence_good": "She likes herself .", "sentence_bad": "She likes himself ."}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_your_own_pairs_are_scored_and_their_checksum_stored(tmp_path, pairs_file, data_dir):
    metrics = suite("minimal_pairs", data_dir, path=str(pairs_file)).score(PrefersFirst())
    assert metric(metrics, "pairs", "items") == 3 and metric(metrics, "pairs", "accuracy") == 1.0
    results = tmp_path / "runs"
    assert harness("run", "--arch", "gru", "--tasks", "minimal_pairs", "--set", f"path={pairs_file}",
                   "--device", "cpu", "--results", results, "--data-dir", data_dir, "--no-progress",
                   *TINY_SETS) == 0
    runs = RunStore(results).runs()
    info = json.loads(runs[runs.task == "minimal_pairs"]["info"].iloc[0])
    assert info["data_sha256"] == hashlib.sha256(pairs_file.read_bytes()).hexdigest()
    m = RunStore(results).metrics()
    assert m[(m.task == "minimal_pairs") & (m.metric == "items")].value.tolist() == [3]


@pytest.mark.parametrize("content,message", [
    ('{"sentence_good": "a b", "sentence_bad": "a c"}\nnot json\n', "pairs.jsonl:2: not JSON"),
    ('{"sentence_good": "a b"}\n', "pairs.jsonl:1: expected an object"),
    ("\n", "no minimal pairs"),
])
def test_a_malformed_pairs_file_names_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "pairs.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        check_pairs_file(path)


def test_minimal_pairs_without_a_file_is_a_clear_error(tmp_path, data_dir, capsys):
    assert harness("run", "--arch", "gru", "--tasks", "minimal_pairs", "--results", tmp_path,
                   "--data-dir", data_dir, "--no-progress") == 2
    assert "--set path=" in capsys.readouterr().err


def test_wsc273_has_273_schemas_scored_both_ways(data_dir):
    import xml.etree.ElementTree as ET

    schemas = ET.parse(data_dir / "wsc" / "WSCollection.xml").getroot().findall("schema")[:273]
    first = sum(s.find("correctAnswer").text.strip().startswith("A") for s in schemas)
    metrics = suite("wsc273", data_dir).score(PrefersFirst())
    for mode in ("wsc273_partial", "wsc273_full"):
        assert metric(metrics, mode, "items") == 273
        assert metric(metrics, mode, "accuracy") == pytest.approx(first / 273)


def test_wsc273_substitutes_candidates_as_lm_eval_does(data_dir):
    import importlib.util

    from tasks.lm_eval.suites import TEMPLATES

    spec = importlib.util.spec_from_file_location("wsc273", TEMPLATES / "wsc273.py")
    wsc273 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wsc273)
    docs = wsc273.load(data_dir / "wsc" / "WSCollection.xml")["test"]
    doc = docs[0]
    assert wsc273.partial_contexts(doc) == ["The city councilmen refused the demonstrators a permit because "
                                            "the city councilmen", "The city councilmen refused the "
                                            "demonstrators a permit because the demonstrators"]
    assert wsc273.partial_target(doc) == " feared violence."  # lm-eval keeps the space after the pronoun
    assert wsc273.full_sentences(doc)[1].endswith("because the demonstrators feared violence.")
    possessive = next(d for d in docs if d["pronoun"].lower() == "his")
    assert all(option.endswith("'s") for option in possessive["options"])


def test_marvin_linzen_per_construction_whole_sentence_and_critical_word(data_dir):
    task = suite("marvin_linzen", data_dir, per_condition=20)
    metrics = task.score(PrefersFirst())
    assert metric(metrics, "ml_simple_agrmt_sentence", "items") == 2 * 20
    assert metric(metrics, "ml_obj_rel_across_anim_word", "items") == 4 * 20
    assert metric(metrics, "ml_npi_across_anim_sentence", "items") == 2 * 20
    assert not [m for m in metrics if m.split == "ml_npi_across_anim_word"], "NPI pairs differ in two words"
    # simple NPI pairs differ in one word, the licensor ("no" / "the" authors have ever ...), whose
    # probability after the empty prefix is the same for every pair: no word-level score
    assert not [m for m in metrics if m.split in ("ml_simple_npi_anim_word", "ml_simple_npi_inanim_word",
                                                   "npi_word")]
    assert {m.value for m in metrics if m.name == "accuracy"} == {1.0}, "the grammatical one comes first"
    assert {m.split for m in metrics if m.name == "accuracy"} >= {"agreement_sentence", "agreement_word",
                                                                  "reflexives_word", "npi_sentence"}


def test_marvin_linzen_leaves_nothing_in_the_hugging_face_cache(data_dir, tmp_path, monkeypatch):
    """Its pairs are written to a temporary folder, a new path each run: the arrow copies the
    datasets library makes of them go there too, not into the user's cache."""
    import datasets

    cache = tmp_path / "hf_cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    suite("marvin_linzen", data_dir, per_condition=2).score(PrefersFirst())
    assert not cache.exists() or not any(cache.iterdir())
    suite("blimp_agreement", data_dir, limit=2).score(PrefersFirst())  # files of the data folder: cached
    assert any((cache / "json").iterdir()), "the user's cache is the one patched here"


def test_the_critical_word_is_the_one_that_differs():
    from tasks.lm_eval.suites import _critical_word

    assert _critical_word("the authors that the guard likes laugh", "the authors that the guard likes laughs") == \
        {"prefix": "the authors that the guard likes", "word_good": "laugh", "word_bad": "laughs"}
    assert _critical_word("no authors have ever been popular", "the authors that no guards like have") is None


def test_no_suite_template_is_a_jinja_string():
    """lm-eval compiles a Jinja template (even an empty one) again for every item: a column name,
    a number or a ``!function`` each suite's fields must be."""
    from tasks.lm_eval.templates import TEMPLATES

    fields = [(path.name, line) for path in sorted(TEMPLATES.glob("*.yaml"))
              for line in path.read_text().splitlines() if line.startswith("doc_to_")]
    assert len(fields) >= 15
    for name, line in fields:
        value = line.split(":", 1)[1].strip()
        assert value and "{" not in value and value not in ('""', "''"), f"{name}: {line}"
