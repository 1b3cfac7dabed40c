"""Zero-shot agreement for the language models of the ``lm`` task, on real sentences.

- ``linzen``: the Linzen et al. (2016) test subset used by Gulordava et al. (7,489 Wikipedia
  sentences), reported by number of attractors.
- ``gulordava``: Gulordava et al. (2018) English, 41 original sentences and 369 "colorless green"
  nonce variants, reported as original vs nonce.

An item is right when the model gives the correct verb form a higher probability than the wrong
one after the sentence prefix (with ``<eos>`` as the left context, as in the training stream).
Words outside the WikiText-2 vocabulary become ``<unk>``; an item whose correct or wrong form is
outside the vocabulary cannot be scored and is left out; ``coverage`` says how many were kept. A
subword lm scores every item: a verb form cut into several pieces scores the sum of their
log-probabilities. A pretrained Hugging Face model (``hf:<model>``) is scored on the prefix as
text, through lm-eval's ``hf`` model.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.core.batching import pad
from harness.core.data import find_dataset
from harness.core.registry import TASKS
from harness.core.metrics import Metric, MetricSpec, specs
from tasks.base import TaskOptions, Upstream, ZeroShotTask
from tasks.lm import EOS, UNK, continuation_scores
from tasks.lm_eval.tokenizer import tokenizer_for

LINZEN_FILES = ["linzen_testset/subj_agr_filtered.text", "linzen_testset/subj_agr_filtered.gold"]
GULORDAVA_FILES = ["agreement_English/generated.text", "agreement_English/generated.gold"]


@dataclass(frozen=True)
class Item:
    prefix: tuple[str, ...]
    correct: str
    wrong: str
    group: str
    #: Gulordava: the subject's index in the prefix (the controller, where that is a noun; else
    #: None), the verb's number (0 singular, 1 plural) and the construction (pattern, constr_id)
    #: its nonce variants share
    subject: int | None = None
    number: int | None = None
    construction: str | None = None


def _rows(text: Path, gold: Path, n_fields: int, what: str):
    """(line number, words of the sentence, gold fields) for line-aligned text and gold files."""
    sentences = text.read_text(encoding="utf-8").splitlines()
    rows = gold.read_text(encoding="utf-8").splitlines()
    if len(sentences) != len(rows):
        raise ValueError(f"{text} has {len(sentences)} lines but {gold} has {len(rows)}")
    for n, (sentence, row) in enumerate(zip(sentences, rows), 1):
        fields = row.split("\t")
        if len(fields) != n_fields:
            raise ValueError(f"{gold}:{n}: expected {what}; got {row!r}")
        yield n, sentence.split(), fields


@functools.lru_cache(maxsize=2)
def load_linzen(folder: Path) -> list[Item]:
    text, gold = (folder / f for f in LINZEN_FILES)
    items = []
    for n, words, fields in _rows(text, gold, 4, "target_idx, correct, wrong, n_attractors"):
        if not fields[0].isdigit() or not fields[3].isdigit():
            raise ValueError(f"{gold}:{n}: target_idx and n_attractors must be numbers")
        idx = int(fields[0])
        # the text is lower-cased; four gold rows of the published file capitalise both forms
        if idx >= len(words) or words[idx] != fields[1].lower():
            raise ValueError(f"{text}:{n}: word {idx} is not the correct form {fields[1]!r}")
        items.append(Item(tuple(words[:idx]), fields[1].lower(), fields[2].lower(),
                          f"attractors_{fields[3]}"))
    return items


@functools.lru_cache(maxsize=2)
def load_gulordava(folder: Path) -> list[Item]:
    text, gold = (folder / f for f in GULORDAVA_FILES)
    items = []
    for n, words, fields in _rows(text, gold, 12, "12 tab-separated fields"):
        if not fields[2].isdigit() or not fields[3].isdigit():
            raise ValueError(f"{gold}:{n}: sent_id and target_idx must be numbers")
        idx = int(fields[3])
        if idx >= len(words):
            raise ValueError(f"{text}:{n}: target index {idx} is past the sentence end")
        group = "original" if fields[2] == "0" else "nonce"
        # the controller is the subject noun, except in the coordination patterns (VERB_NOUN_CCONJ_VERB),
        # where it is the first of two coordinated verbs
        subject = int(fields[9]) if fields[10] == "NOUN" and fields[9].isdigit() and int(fields[9]) < idx else None
        number = 0 if "Number=Sing" in fields[5] else 1 if "Number=Plur" in fields[5] else None
        items.append(Item(tuple(words[:idx]), fields[6], fields[7], group, subject, number,
                          f"{fields[0]}/{fields[1]}"))
    return items


@torch.no_grad()
def prefers_correct(model, sequences: list[list[int]], correct: list[int | None], wrong: list[int | None],
                    batch_size: int = 256) -> list[bool | None]:
    """Whether a language model gives the ``correct`` next token a higher probability than the
    ``wrong`` one after each sequence (None where either is None: outside its vocabulary)."""
    device = next(model.parameters()).device
    right: list[bool | None] = []
    for start in range(0, len(sequences), batch_size):
        ids, mask = pad(sequences[start:start + batch_size])
        lp = model.next_token_logprobs(ids.to(device), mask.to(device)).float().cpu()
        for row, (c, w) in enumerate(zip(correct[start:start + batch_size], wrong[start:start + batch_size])):
            right.append(None if c is None or w is None else bool(lp[row, c] > lp[row, w]))
    return right


@TASKS.register("agreement_lm")
class AgreementLM(ZeroShotTask):
    """Zero-shot subject–verb agreement of the lm task's models (Linzen 2016; Gulordava 2018)."""

    Options = TaskOptions
    version = "1"
    #: no training of its own: it scores the model of the matching ``lm`` run
    upstream = "lm"
    scores_references = True
    scoring = "P(correct verb form) > P(wrong form) after the sentence prefix"
    metric_specs = specs(
        MetricSpec("accuracy", "higher", "score", "fraction",
                   "share of the scored items whose correct verb form is the more probable"),
        MetricSpec("accuracy_*", "higher", "score", "fraction",
                   "accuracy on one group of items: attractors_k (Linzen), original or nonce (Gulordava)"),
        MetricSpec("coverage", None, "info", "fraction",
                   "share of the split's items scored (both verb forms in the lm vocabulary): a property "
                   "of the vocabulary, the same for every backbone, so no ranking"),
        MetricSpec("items", None, "info", "items", "items scored"),
    )
    table_metrics = (("linzen", "accuracy"), *(("linzen", f"accuracy_attractors_{k}") for k in range(5)),
                     ("linzen", "coverage"), ("gulordava", "accuracy"), ("gulordava", "accuracy_original"),
                     ("gulordava", "accuracy_nonce"), ("gulordava", "coverage"))
    final_splits = ("linzen", "gulordava")

    def __init__(self, options: TaskOptions, data_dir):
        super().__init__(options, data_dir)
        folder = find_dataset("colorlessgreen", LINZEN_FILES + GULORDAVA_FILES, data_dir).resolve()
        self.items = {"linzen": load_linzen(folder), "gulordava": load_gulordava(folder)}

    @torch.no_grad()
    def evaluate_upstream(self, upstream: Upstream, split: str):
        if upstream.extra.get("reference") is not None:
            order, right = self.reference_choices(upstream, split)
        elif upstream.extra.get("bpe") is not None:
            order, right = self.subword_choices(upstream, split)
        else:
            order, right = self.word_choices(upstream, split)
        metrics = [Metric(split, "accuracy", sum(right) / max(1, len(right))),
                   Metric(split, "coverage", len(order) / len(self.items[split])),
                   Metric(split, "items", len(order))]
        for group in sorted({i.group for i in order}):
            hits = [r for i, r in zip(order, right) if i.group == group]
            metrics.append(Metric(split, f"accuracy_{group}", sum(hits) / len(hits)))
        return metrics

    def word_choices(self, upstream: Upstream, split: str) -> tuple[list[Item], list[bool]]:
        """The items of ``split`` whose two verb forms are both in a word lm's vocabulary (shortest
        prefix first), and whether the lm gives the correct form the higher probability."""
        index = {w: i for i, w in enumerate(upstream.vocab)}
        unk = index[UNK]
        order = sorted((i for i in self.items[split] if i.correct in index and i.wrong in index),
                       key=lambda i: len(i.prefix))
        right = prefers_correct(upstream.model, [[index[EOS]] + [index.get(w, unk) for w in i.prefix] for i in order],
                                [index[i.correct] for i in order], [index[i.wrong] for i in order])
        return order, right

    def subword_choices(self, upstream: Upstream, split: str) -> tuple[list[Item], list[bool]]:
        """Every item of ``split``, and whether a subword lm gives its correct verb form (all its
        pieces) a higher log-probability than the wrong one after the prefix."""
        tokenizer = tokenizer_for(upstream.vocab, upstream.extra)
        items = self.items[split]
        pairs = []
        for item in items:
            prefix = tokenizer.lookup(list(item.prefix))
            pairs += [(prefix, tokenizer.lookup([item.correct])), (prefix, tokenizer.lookup([item.wrong]))]
        scores = [lp for lp, _ in continuation_scores(upstream.model, pairs, tokenizer.eos, batch_size=256)]
        return list(items), [scores[2 * k] > scores[2 * k + 1] for k in range(len(items))]

    def reference_choices(self, upstream: Upstream, split: str) -> tuple[list[Item], list[bool]]:
        """Every item of ``split``, and whether a pretrained Hugging Face model (scored by lm-eval's
        ``hf`` model) gives its correct verb form the higher log-probability after the prefix."""
        from tasks.lm_eval.reference import continuation_logprobs

        items = self.items[split]
        pairs = [(" ".join(item.prefix), f" {form}") for item in items for form in (item.correct, item.wrong)]
        scores = continuation_logprobs(upstream, pairs, batch_size=64)
        return list(items), [scores[2 * k] > scores[2 * k + 1] for k in range(len(items))]
