"""Minimal-pair suites scored by lm-eval on the ``lm`` task's trained models (any backbone).

- ``figqa``: Fig-QA dev (Liu et al. 2022): the ending a figurative phrase means, of two.
- ``wsc273``: the Winograd Schema Challenge's 273 schemas, partial and full scoring.
- ``marvin_linzen``: Marvin & Linzen (2018) per construction, whole sentence and critical word.
- ``blimp_agreement``: BLiMP's 16 agreement paradigms (subject–verb, determiner–noun, anaphor);
  ``blimp``: all 67 paradigms.
- ``minimal_pairs``: your own JSONL file of ``sentence_good``/``sentence_bad`` pairs
  (``--set path=FILE``), scored like BLiMP; its SHA-256 is stored with the result.

The suites are lm-eval YAML tasks (``tasks/lm_eval/``), rendered with the resolved data folder (as
data: each template is parsed, its ``@FIELD@`` placeholders filled in the parsed values, and the result
dumped by a YAML library, so a path can never add YAML of its own) and loaded with ``TaskManager(include_path=..., include_defaults=False)``, fully offline; the model is
``tasks.lm_eval.adapter.HarnessLM``, or for a pretrained Hugging Face model named as
``hf:<model>``, lm-eval's own ``hf`` model (``tasks/lm_eval/reference.py``). Reported per lm-eval task: lm-eval's ``acc`` (as the
community reports it), the fraction of ``ties`` (both choices scored the same, which happens when
the words that differ are all outside the vocabulary and become ``<unk>``; lm-eval counts a tie as
right when the first choice is the right one, as in BLiMP), and ``items``. The suite also reports
``unk_rate``, the fraction of scored tokens that became ``<unk>``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pydantic

from harness.core.catalogue import dataset
from harness.core.data import DataError, decode_text, find_dataset, read_bytes, text_lines
from harness.core.registry import TASKS
from harness.core.metrics import Metric, MetricSpec, specs
from tasks.base import TaskOptions, Upstream, ZeroShotTask
from tasks.lm_eval.templates import TEMPLATES, dump_config, render, render_config


#: BLiMP's agreement paradigms, by phenomenon (the "linguistics_term" of their rows)
BLIMP_AGREEMENT = {
    "subject_verb_agreement": (
        "distractor_agreement_relational_noun", "distractor_agreement_relative_clause",
        "irregular_plural_subject_verb_agreement_1", "irregular_plural_subject_verb_agreement_2",
        "regular_plural_subject_verb_agreement_1", "regular_plural_subject_verb_agreement_2"),
    "determiner_noun_agreement": (
        "determiner_noun_agreement_1", "determiner_noun_agreement_2", "determiner_noun_agreement_irregular_1",
        "determiner_noun_agreement_irregular_2", "determiner_noun_agreement_with_adj_2",
        "determiner_noun_agreement_with_adj_irregular_1", "determiner_noun_agreement_with_adj_irregular_2",
        "determiner_noun_agreement_with_adjective_1"),
    "anaphor_agreement": ("anaphor_gender_agreement", "anaphor_number_agreement"),
}


def place_helpers(folder) -> None:
    """Copy the Python modules whose functions the suites' YAML names with ``!function`` into
    ``folder``, beside the YAML, where lm-eval imports them from."""
    for helper in TEMPLATES.glob("*.py"):
        shutil.copy(helper, folder)


class SuiteOptions(TaskOptions):
    #: requests per forward pass
    batch_size: int = pydantic.Field(default=64, ge=1)
    #: score only the first N items of each lm-eval task (None: all)
    limit: int | None = pydantic.Field(default=None, ge=1)


class LMEvalSuite(ZeroShotTask):
    """A set of lm-eval tasks, scored on the model of the matching ``lm`` run."""

    Options = SuiteOptions
    upstream = "lm"
    scores_references = True
    final_splits = ("suite",)  # one pass scores every lm-eval task; metrics name their own split
    scoring = "lm-eval"
    #: the split of each metric is the lm-eval task (or the group averaged), its name what is measured
    metric_specs = specs(
        MetricSpec("accuracy", "higher", "score", "fraction",
                   "lm-eval's acc on the lm-eval task named by the split, or the mean over a group of them"),
        MetricSpec("ties", None, "info", "fraction",
                   "share of items whose choices score the same (they differ only in words that read as "
                   "<unk>): a property of the data and the lm vocabulary, the same for every backbone, so "
                   "no ranking; lm-eval counts a tie as right when the right choice comes first"),
        MetricSpec("items", None, "info", "items", "items scored"),
        MetricSpec("lm_eval_version", None, "info", "", "the lm-eval task's version"),
        MetricSpec("unk_rate", None, "info", "fraction",
                   "share of the scored tokens that read as <unk> (data and vocabulary, not the backbone)"),
    )

    def rendered(self) -> dict[str, str]:
        """lm-eval task name → its YAML, data paths filled in."""
        raise NotImplementedError

    @classmethod
    def scored_part(cls, options: dict) -> str:
        limit = options.get("limit")
        return f"the first {limit:,} items of each lm-eval task" if limit else ""

    def evaluate_upstream(self, upstream: Upstream, split: str) -> list[Metric]:
        from tasks.lm_eval.adapter import HarnessLM
        from tasks.lm_eval.reference import is_reference, lm_eval_model

        if is_reference(upstream):  # a pretrained Hugging Face model, through lm-eval's own hf model
            return self.score(lm_eval_model(upstream, self.options.batch_size))

        device = next(upstream.model.parameters()).device
        adapter = HarnessLM(upstream.model, list(upstream.vocab), device=device,
                            batch_size=self.options.batch_size, extra=upstream.extra)
        return self.score(adapter) + [Metric("suite", "unk_rate", adapter.tokenizer.unknown_rate)]

    def task_manager(self, folder: str):
        """lm-eval's TaskManager over this suite's YAML, rendered into ``folder``."""
        from lm_eval.tasks import TaskManager

        for name, text in self.rendered().items():
            (Path(folder) / f"{name}.yaml").write_text(text, encoding="utf-8")
        place_helpers(folder)
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        return TaskManager(include_path=folder, include_defaults=False)

    def score(self, lm) -> list[Metric]:
        """Run the suite's lm-eval tasks on ``lm`` (any ``lm_eval.api.model.LM``)."""
        import lm_eval

        with tempfile.TemporaryDirectory(prefix="harness-lm-eval-") as folder:
            manager = self.task_manager(folder)
            out = lm_eval.simple_evaluate(model=lm, tasks=sorted(self.rendered()), task_manager=manager,
                                          limit=self.options.limit, log_samples=True, bootstrap_iters=0)
        metrics = []
        for name, result in sorted(out["results"].items()):
            scores = [[float(r[0]) for r in s["filtered_resps"]] for s in out["samples"][name]]
            ties = sum(len(set(s)) < len(s) for s in scores)
            metrics += [Metric(name, "accuracy", result["acc,none"]),
                        Metric(name, "ties", ties / max(1, len(scores))),
                        Metric(name, "items", len(scores)),
                        Metric(name, "lm_eval_version", float(out["versions"][name]))]
        return metrics + self.summary(metrics)

    def summary(self, metrics: list[Metric]) -> list[Metric]:
        """Averages over groups of lm-eval tasks (none by default)."""
        return []


class _DataFolderSuite(LMEvalSuite):
    """A suite of YAML files in ``tasks/lm_eval/`` that read one dataset folder (``@DATA_DIR@``)."""

    dataset: str
    #: a file the dataset folder must hold
    required: str
    yaml_tasks: tuple[str, ...]

    def __init__(self, options: SuiteOptions, data_dir):
        super().__init__(options, data_dir)
        self.folder = find_dataset(self.dataset, [self.required], data_dir).resolve().parent

    def rendered(self) -> dict[str, str]:
        return {name: render(f"{name}.yaml", DATA_DIR=self.folder) for name in self.yaml_tasks}


@TASKS.register("figqa")
class FigQA(_DataFolderSuite):
    """Fig-QA dev, zero-shot: which of two endings a figurative phrase means (lm-eval)."""

    version = "1"
    scoring = ("lm-eval multiple_choice: log P(ending | start phrase), summed over the ending's "
               "words; accuracy on the dev split (test labels are hidden)")
    table_metrics = (("figqa", "accuracy"), ("figqa", "ties"))
    dataset, required, yaml_tasks = "figqa", "dev.csv", ("figqa",)


@TASKS.register("wsc273")
class WSC273(_DataFolderSuite):
    """Winograd Schema Challenge (273 schemas), zero-shot, partial and full scoring (lm-eval)."""

    version = "2"  # 2: candidates lower-cased after "!" and "?" too, as lm-eval's wsc273 (schemas 172–173)
    scoring = ("lm-eval: wsc273_partial = log P(words after the pronoun | prefix with the candidate), "
               "as Trinh & Le 2018; wsc273_full = log P(whole sentence with the candidate)")
    table_metrics = (("wsc273_partial", "accuracy"), ("wsc273_full", "accuracy"))
    dataset, required, yaml_tasks = "wsc", "WSCollection.xml", ("wsc273_partial", "wsc273_full")


class MarvinLinzenOptions(SuiteOptions):
    #: the first N pairs of each (test, condition) (None: all 163,124); items repeat lexical frames
    per_condition: int | None = pydantic.Field(default=100, ge=1)


#: Marvin & Linzen's tests by phenomenon
MARVIN_LINZEN = {
    "agreement": ("simple_agrmt", "sent_comp", "vp_coord", "long_vp_coord", "prep_anim", "prep_inanim",
                  "subj_rel", "obj_rel_across_anim", "obj_rel_across_inanim", "obj_rel_no_comp_across_anim",
                  "obj_rel_no_comp_across_inanim", "obj_rel_within_anim", "obj_rel_within_inanim",
                  "obj_rel_no_comp_within_anim", "obj_rel_no_comp_within_inanim"),
    "reflexives": ("simple_reflexives", "reflexive_sent_comp", "reflexives_across"),
    "npi": ("simple_npi_anim", "simple_npi_inanim", "npi_across_anim", "npi_across_inanim"),
}


@TASKS.register("marvin_linzen")
class MarvinLinzen(LMEvalSuite):
    """Marvin & Linzen (2018) targeted syntactic evaluation, per construction: whole sentence and
    critical word (lm-eval)."""

    Options = MarvinLinzenOptions
    version = "2"  # 2: no word-level score for the NPI tests
    scoring = ("lm-eval: ml_<test>_sentence = log P(whole sentence); ml_<test>_word = log P(critical word "
               "| the shared prefix), for pairs that differ in one word, never the NPI tests (their pairs differ in the "
               "licensor, before the word it licenses)")
    table_metrics = tuple((f"{phenomenon}_{mode}", "accuracy") for phenomenon in MARVIN_LINZEN
                          for mode in ("sentence", "word") if (phenomenon, mode) != ("npi", "word"))


    @classmethod
    def scored_part(cls, options: dict) -> str:
        parts = [f"the first {options['per_condition']:,} pairs of each condition"] if options.get("per_condition") else []
        return ", ".join(parts + [p for p in [super().scored_part(options)] if p])

    def __init__(self, options: MarvinLinzenOptions, data_dir):
        super().__init__(options, data_dir)
        folder = find_dataset("marvin_linzen_2018", ["marvin_linzen_2018.jsonl.gz"], data_dir).resolve()
        self.pairs = load_marvin_linzen(folder / "marvin_linzen_2018.jsonl.gz", options.per_condition)
        # per test, the critical words, when every pair of the test differs in exactly one word; never
        # for NPIs: their pairs differ in the licensor ("no" / "the" authors have ever ...), which
        # comes before the word it licenses, so P(licensor | prefix) measures no licensing
        words = {test: [_critical_word(good, bad) for good, bad in rows] for test, rows in self.pairs.items()
                 if test not in MARVIN_LINZEN["npi"]}
        self.words = {test: w for test, w in words.items() if all(w)}
        self.folder: Path | None = None

    def task_manager(self, folder: str):
        self.folder = Path(folder)
        for test, rows in self.pairs.items():
            _write_jsonl(self.folder / f"{test}.jsonl",
                         ({"sentence_good": good, "sentence_bad": bad} for good, bad in rows))
            if test in self.words:
                _write_jsonl(self.folder / f"{test}_word.jsonl", self.words[test])
        return super().task_manager(folder)

    def rendered(self) -> dict[str, str]:
        folder = self.folder or Path("@FOLDER@")
        out = {}
        for test in self.pairs:
            out[f"ml_{test}_sentence"] = _cached_in(folder, "minimal_pair.yaml", TASK=f"ml_{test}_sentence",
                                                    FILE=folder / f"{test}.jsonl")
            if test in self.words:
                out[f"ml_{test}_word"] = _cached_in(folder, "minimal_pair_word.yaml", TASK=f"ml_{test}_word",
                                                    FILE=folder / f"{test}_word.jsonl")
        return out

    def summary(self, metrics: list[Metric]) -> list[Metric]:
        accuracy = {m.split: m.value for m in metrics if m.name == "accuracy"}
        out = []
        for phenomenon, tests in MARVIN_LINZEN.items():
            for mode in ("sentence", "word"):
                values = [accuracy[f"ml_{t}_{mode}"] for t in tests if f"ml_{t}_{mode}" in accuracy]
                if values:
                    out.append(Metric(f"{phenomenon}_{mode}", "accuracy", sum(values) / len(values)))
        return out


def _cached_in(folder: Path, template: str, **fields) -> str:
    """A template whose data file is written into the run's temporary ``folder``, with the arrow
    copy the datasets library makes of it kept there too: in the user's Hugging Face cache every
    run would leave one more copy of each file (a new path each time)."""
    config = render_config(template, **fields)
    config.setdefault("dataset_kwargs", {})["cache_dir"] = str(folder / "hf_datasets")
    return dump_config(config)


def _write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def load_marvin_linzen(path: Path, per_condition: int | None) -> dict[str, list[tuple[str, str]]]:
    """test → [(grammatical, ungrammatical)], the first ``per_condition`` of each condition."""
    pairs: dict[str, list[tuple[str, str]]] = {}
    kept: dict[tuple[str, str], int] = {}
    for n, line in enumerate(text_lines(decode_text(path, read_bytes(path))), 1):
        try:
            row = json.loads(line)
            key = (row["test"], row["condition"])
            good, bad = row["grammatical"], row["ungrammatical"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(path, f"not a Marvin & Linzen item ({err})", n) from None
        if per_condition is None or kept.get(key, 0) < per_condition:
            kept[key] = kept.get(key, 0) + 1
            pairs.setdefault(row["test"], []).append((good, bad))
    return dict(sorted(pairs.items()))


def _critical_word(good: str, bad: str) -> dict | None:
    """The shared prefix and the one word where two sentences differ (None: not exactly one)."""
    a, b = good.split(), bad.split()
    if len(a) != len(b):
        return None
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    if len(diff) != 1:
        return None
    i = diff[0]
    return {"prefix": " ".join(a[:i]), "word_good": a[i], "word_bad": b[i]}


class _BLiMP(LMEvalSuite):
    paradigms: tuple[str, ...] = ()
    scoring = "lm-eval: log P(sentence) after <eos>, whole sentence; right when the good one is more probable"

    def __init__(self, options: SuiteOptions, data_dir):
        super().__init__(options, data_dir)
        files = [f"data/{p}.jsonl.gz" for p in self.paradigms]
        self.folder = find_dataset("blimp", files, data_dir).resolve()

    def rendered(self) -> dict[str, str]:
        return {f"blimp_{p}": render("minimal_pair.yaml", TASK=f"blimp_{p}",
                                      FILE=self.folder / "data" / f"{p}.jsonl.gz") for p in self.paradigms}

    def summary(self, metrics: list[Metric]) -> list[Metric]:
        accuracy = {m.split.removeprefix("blimp_"): m.value for m in metrics if m.name == "accuracy"}
        out = [Metric("mean", "accuracy", sum(accuracy.values()) / len(accuracy))]
        for phenomenon, paradigms in BLIMP_AGREEMENT.items():
            if all(p in accuracy for p in paradigms):
                out.append(Metric(phenomenon, "accuracy", sum(accuracy[p] for p in paradigms) / len(paradigms)))
        return out


@TASKS.register("blimp_agreement")
class BLiMPAgreement(_BLiMP):
    """BLiMP's 16 agreement paradigms, zero-shot (lm-eval); per paradigm and averaged."""

    version = "1"
    paradigms = tuple(p for group in BLIMP_AGREEMENT.values() for p in group)
    table_metrics = (("mean", "accuracy"), *((g, "accuracy") for g in BLIMP_AGREEMENT))


@TASKS.register("blimp")
class BLiMP(_BLiMP):
    """All 67 BLiMP paradigms, zero-shot (lm-eval); per paradigm and averaged."""

    version = "1"
    in_all = False  # blimp_agreement is its agreement part; all 67 paradigms take long on a CPU
    table_metrics = (("mean", "accuracy"), *((g, "accuracy") for g in BLIMP_AGREEMENT))

    paradigms = tuple(sorted(f.path.removeprefix("data/").removesuffix(".jsonl.gz") for f in dataset("blimp").files))


class PairsOptions(SuiteOptions):
    #: a JSONL file with one {"sentence_good": ..., "sentence_bad": ...} object per line
    path: str = ""


@TASKS.register("minimal_pairs")
class MinimalPairs(LMEvalSuite):
    """Your own minimal pairs (JSONL: sentence_good, sentence_bad), scored like BLiMP (lm-eval)."""

    Options = PairsOptions
    version = "1"
    input_files = ("path",)
    in_all = False  # needs a file
    scoring = _BLiMP.scoring
    table_metrics = (("pairs", "accuracy"), ("pairs", "ties"), ("pairs", "items"))

    def __init__(self, options: PairsOptions, data_dir):
        super().__init__(options, data_dir)
        if not options.path:
            raise ValueError("minimal_pairs needs a file: --set path=PAIRS.jsonl")
        self.path = Path(options.path).expanduser().resolve()
        self.sha256 = check_pairs_file(self.path)

    def rendered(self) -> dict[str, str]:
        return {"pairs": render("minimal_pair.yaml", TASK="pairs", FILE=self.path)}

    def info(self) -> dict:
        return {"data_file": str(self.path), "data_sha256": self.sha256}


def check_pairs_file(path: Path) -> str:
    """Validate a minimal-pairs JSONL file, plain or gzipped; its SHA-256. Anything wrong with it
    is a ``DataError`` naming the file (and the line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "minimal-pairs file not found (--set path=PAIRS.jsonl)")
    data = read_bytes(path)
    text = decode_text(path, data)
    pairs = 0
    for n, line in enumerate(text_lines(text), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(path, f"not JSON ({err.msg})", n) from None
        except RecursionError:
            raise DataError(path, "not JSON (nested too deeply)", n) from None
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) and row[k].strip()
                                                for k in ("sentence_good", "sentence_bad")):
            raise DataError(path, "expected an object with non-empty strings 'sentence_good' and "
                            "'sentence_bad'", n)
        pairs += 1
    if not pairs:
        raise DataError(path, "no minimal pairs in the file")
    return hashlib.sha256(data).hexdigest()
