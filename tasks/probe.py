"""Diagnostic probes: what a trained run's frozen states encode, layer by layer and position by
position (Giulianelli et al. 2018, "Under the hood"; Hewitt & Liang 2019; Voita & Titov 2020).

A probe run reads the model of its upstream run, runs it frozen over a probing set, keeps every
layer's state (layer 0: the word embeddings, before any context; the top layer: the backbone's
output) at the positions a target is defined, and fits a scikit-learn classifier
(``tasks/probing.py``) on the probing set's training sentences, scored on its held-out ones.

* ``probe_number``: the ``agreement`` task's models, on sentences of the grammar they were
  trained on (distances up to ``max_distance``, up to ``max_attractors`` attractors). Targets:
  ``number``, the subject's number at every position from the subject to the last word before
  the verb (stored by distance from the subject: 0 is the subject itself, and per number of
  attractors in the sentence); ``position``, the absolute position, and ``distance``, the
  distance from the subject, both in log2 buckets of the 0-based count (0, 1–2, 3–6, 7–14, …).
* ``probe_number_lm``: the ``lm`` task's models, on the same grammar's sentences in WikiText-2's
  words (split ``generated``), on the Linzen et al. (2016) test items (split ``linzen``: the
  number of the verb to come, read at the word before it, per number of attractors), and on
  Gulordava et al.'s (2018) sentences (split ``gulordava``: the 25 constructions whose controller
  is the subject noun, from it to the verb, by distance, original and nonce; half the
  constructions, each with its nonce variants, fit the probe, the other half score it).
* ``probe_pos``: the ``lm`` task's models, on CoNLL-2003 tokens (training sentences to fit,
  development sentences to score): ``pos``, the part of speech (the data's second column), and
  ``entity``, the entity type (PER, LOC, ORG, MISC or none).

Every target stores, for the top layer, accuracy, the control task's accuracy, selectivity
(their difference), the majority-label baseline and the online codelength (MDL) with its
compression over the uniform code; for every layer ``k``, ``<target>_accuracy_layer<k>`` and
``<target>_selectivity_layer<k>``. ``model_accuracy`` is the model's own agreement verdict on the
held-out sentences, and ``number_accuracy_model_right``/``_wrong`` split the number probe by it.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pydantic
import torch

from harness.core.batching import pad
from harness.core.data import find_dataset
from harness.core.metrics import Metric, MetricSpec, specs
from harness.core.registry import TASKS
from tasks.agreement import PLURAL, SINGULAR, Grammar
from tasks.agreement_lm import GULORDAVA_FILES, LINZEN_FILES, load_gulordava, load_linzen, prefers_correct
from tasks.base import TaskOptions, Upstream, ZeroShotTask
from tasks.classification import Example, predict
from tasks.lm import EOS, UNK
from tasks.ner import CONLL_FILES, read_conll
from tasks.probing import online_codelength, probe, ProbeSet

#: present-tense verb pairs whose singular is not the plural plus -s
IRREGULAR_VERBS = {("is", "are"), ("was", "were"), ("has", "have"), ("does", "do")}


class ProbeOptions(TaskOptions):
    #: probe family: logistic regression or a one-hidden-layer MLP (64 units)
    classifier: Literal["logreg", "mlp"] = "logreg"
    #: fixes the probing sentences, the control task and the probes' own randomness
    data_seed: int = 0
    #: most items a probe is fitted on (whole sentences, drawn at random, beyond it)
    max_train_items: int = pydantic.Field(default=4000, ge=10)


class NumberProbeOptions(ProbeOptions):
    #: probing sentences have subject–verb distances 1 … max_distance
    max_distance: int = pydantic.Field(default=16, ge=1)
    max_attractors: int = pydantic.Field(default=3, ge=0)
    #: probing sentences per (distance, attractors) cell; half fit the probe, half score it
    sentences_per_cell: int = pydantic.Field(default=24, ge=2)


class POSProbeOptions(ProbeOptions):
    #: CoNLL-2003 sentences read: this many training sentences fit, as many development ones score
    n_sentences: int = pydantic.Field(default=600, ge=2)


def log2_bucket(n: int, top: int) -> int:
    """0 for 0, 1 for 1–2, 2 for 3–6, 3 for 7–14, …, at most ``top``."""
    return min(int(math.log2(n + 1)), top)


@dataclass
class Target:
    """One target on one probing set: an item per (sentence, position) it is defined at."""

    name: str
    n_classes: int
    sentence: list[int] = field(default_factory=list)
    position: list[int] = field(default_factory=list)  # index into the model's input sequence
    label: list[int] = field(default_factory=list)
    word: list[str] = field(default_factory=list)
    length: list[int | None] = field(default_factory=list)
    cell: list[str | None] = field(default_factory=list)

    def add(self, sentence: int, position: int, label: int, word: str, length=None, cell=None):
        self.sentence.append(sentence)
        self.position.append(position)
        self.label.append(label)
        self.word.append(word)
        self.length.append(length)
        self.cell.append(cell)


@dataclass
class ProbingSet:
    """What a probe task reads on one split: the model's input sequences, which are held out (the
    rest fit the probes), the targets on them, the share of words in the upstream vocabulary, per
    sequence whether the model itself gets its agreement decision right (None: not judged), and
    the groups that must not be split."""

    sequences: list[list[int]]
    held_out: list[bool]
    targets: list[Target]
    coverage: float | None = None
    model_right: list[bool | None] | None = None
    #: per sequence, the unit that cross-validation folds and the fitting cap keep whole (its
    #: construction, where sentences share one); None: each sequence its own
    groups: list[int] | None = None


@torch.no_grad()
def layer_features(model, sequences: list[list[int]], batch_size: int = 128) -> list[list[np.ndarray]]:
    """For each sequence, its states per layer: a list (layer 0 = embeddings, then every backbone
    layer) of ``(T, d)`` arrays."""
    device = next(model.parameters()).device
    out: list[list[np.ndarray] | None] = [None] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        ids, mask = pad([sequences[i] for i in chunk])
        ids, mask = ids.to(device), mask.to(device)
        x = model.embed(ids)
        layers = [x, *model.backbone.layer_states(x, mask)]
        layers = [h.float().cpu().numpy() for h in layers]
        for row, i in enumerate(chunk):
            n = len(sequences[i])
            out[i] = [h[row, :n] for h in layers]
    return out  # type: ignore[return-value]


def verb_number(correct: str, wrong: str) -> int | None:
    """The number of the ``correct`` form of a present-tense verb pair; None if unclear."""
    for a, b, number in ((correct, wrong, SINGULAR), (wrong, correct, PLURAL)):
        if (a, b) in IRREGULAR_VERBS or a == b + "s" or (a.endswith("es") and a[:-2] == b) \
                or (a.endswith("ies") and a[:-3] + "y" == b):
            return number
    return None


class ProbeTask(ZeroShotTask):
    """Shared by the probe tasks: subclasses build ``probing_set(upstream, split)``."""

    @classmethod
    def check_upstream_options(cls, options: dict) -> None:
        if options.get("bpe_vocab"):
            raise ValueError(f"the probes read a model's states at words, so they need a word-level "
                             f"{cls.upstream}: leave bpe_vocab unset (it is {options['bpe_vocab']})")

    Options = ProbeOptions
    version = "1"
    in_all = False
    scoring = ("scikit-learn probes on the frozen states of the upstream run's model, fitted on "
               "half the probing sentences, scored on the other half")
    metric_specs = specs(
        MetricSpec("*_accuracy", "higher", "score", "fraction",
                   "held-out accuracy of the probe on the top layer, overall or at the stored distance"),
        MetricSpec("*_accuracy_*", "higher", "score", "fraction",
                   "held-out probe accuracy on one layer (layer0: embeddings) or, on the top layer, "
                   "one group of items (attractors_k)"),
        MetricSpec("*_control", None, "info", "fraction",
                   "held-out accuracy of the same probe on the control task (labels drawn per word type)"),
        MetricSpec("*_selectivity", "higher", "score", "fraction",
                   "accuracy minus control accuracy, top layer (Hewitt & Liang 2019)"),
        MetricSpec("*_selectivity_*", "higher", "score", "fraction",
                   "accuracy minus control accuracy on one layer"),
        MetricSpec("*_majority", None, "info", "fraction",
                   "held-out accuracy of always naming the most frequent training label"),
        MetricSpec("*_codelength", "lower", "score", "kbits",
                   "online codelength of the training items' labels (Voita & Titov 2020), top layer"),
        MetricSpec("*_compression", "higher", "score", "ratio",
                   "uniform codelength over online codelength (1 = nothing learnt)"),
        MetricSpec("*_items", None, "info", "items", "held-out items the target was scored on"),
        MetricSpec("model_accuracy", "higher", "info", "fraction",
                   "share of the held-out sentences whose verb number the probed model itself gets right "
                   "(its classifier; a language model: P(correct form) > P(wrong form), is/are on generated "
                   "sentences); number_accuracy_model_right/_wrong split the probe's accuracy by it"),
        MetricSpec("coverage", None, "info", "fraction",
                   "share of the probing words in the upstream vocabulary (others read as <unk>)"),
    )

    def evaluate_upstream(self, upstream: Upstream, split: str) -> list[Metric]:
        probing = self.probing_set(upstream, split)
        states = layer_features(upstream.model, probing.sequences)
        metrics = [Metric(split, "coverage", probing.coverage)] if probing.coverage is not None else []
        if probing.model_right is not None:
            judged = [r for r, held in zip(probing.model_right, probing.held_out) if held and r is not None]
            metrics.append(Metric(split, "model_accuracy", sum(judged) / max(1, len(judged))))
        for target in probing.targets:
            metrics += self.score(split, target, states, probing)
        return metrics

    def probing_set(self, upstream: Upstream, split: str) -> ProbingSet:
        raise NotImplementedError

    def score(self, split: str, target: Target, states, probing: ProbingSet) -> list[Metric]:
        held_out = probing.held_out
        opts, name = self.options, target.name
        labels = np.array(target.label)
        groups = np.array([probing.groups[s] for s in target.sentence] if probing.groups else target.sentence)
        test = np.array([held_out[s] for s in target.sentence])
        train_rows = np.flatnonzero(~test)
        train_sentences = np.unique(groups[train_rows])
        if len(train_rows) > opts.max_train_items:  # whole sentences (groups), at random, up to the cap
            keep, count = [], 0
            per_sentence = {s: np.flatnonzero((groups == s) & ~test) for s in train_sentences}
            for s in np.random.default_rng(opts.data_seed).permutation(train_sentences):
                if count + len(per_sentence[s]) > opts.max_train_items:
                    break
                keep.append(per_sentence[s])
                count += len(per_sentence[s])
            train_rows = np.sort(np.concatenate(keep))
        test_rows = np.flatnonzero(test)
        words = tuple(target.word)
        top = len(states[0]) - 1
        metrics = []
        for layer in range(top + 1):
            features = np.stack([states[s][layer][p] for s, p in zip(target.sentence, target.position)])
            data = ProbeSet(features, labels, groups, words)
            train, held = data.take(train_rows), data.take(test_rows)
            result = probe(opts.classifier, train, held, opts.data_seed)
            metrics += [Metric(split, f"{name}_accuracy_layer{layer}", result.accuracy),
                        Metric(split, f"{name}_selectivity_layer{layer}", result.selectivity)]
            if layer < top:
                continue
            bits, uniform = online_codelength(opts.classifier, train, target.n_classes, opts.data_seed,
                                              result.params or None)
            metrics += [Metric(split, f"{name}_accuracy", result.accuracy),
                        Metric(split, f"{name}_control", result.control_accuracy),
                        Metric(split, f"{name}_selectivity", result.selectivity),
                        Metric(split, f"{name}_majority", result.majority),
                        Metric(split, f"{name}_codelength", bits / 1000),
                        Metric(split, f"{name}_compression", uniform / bits),
                        Metric(split, f"{name}_items", len(test_rows))]
            right = result.predictions == held.labels
            control_right = result.control_predictions == result.control_targets
            lengths = [target.length[i] for i in test_rows]
            for length in sorted({n for n in lengths if n is not None}):
                rows = [i for i, n in enumerate(lengths) if n == length]
                accuracy = float(np.mean(right[rows]))
                metrics += [Metric(split, f"{name}_accuracy", accuracy, length),
                            Metric(split, f"{name}_selectivity", accuracy - float(np.mean(control_right[rows])), length)]
            metrics += _by_group(split, name, lengths, [target.cell[i] for i in test_rows], right)
            if probing.model_right is not None and name == "number":
                verdicts = [probing.model_right[target.sentence[i]] for i in test_rows]
                outcome = [None if v is None else "model_right" if v else "model_wrong" for v in verdicts]
                metrics += _by_group(split, name, lengths, outcome, right)
        return metrics


def _by_group(split, name, lengths, groups, right) -> list[Metric]:
    """Top-layer accuracy per group (``<name>_accuracy_<group>``), overall and per distance;
    items whose group is None count in none."""
    rows: dict[tuple[str, int | None], list[int]] = {}
    for i, (length, group) in enumerate(zip(lengths, groups)):
        if group is not None:
            rows.setdefault((group, None), []).append(i)
            if length is not None:
                rows.setdefault((group, length), []).append(i)
    return [Metric(split, f"{name}_accuracy_{group}", float(np.mean(right[r])), length)
            for (group, length), r in rows.items()]


def generated_targets(grammar: Grammar, index: dict[str, int], opts: NumberProbeOptions,
                      before: list[int]):
    """Sentences of ``grammar`` in every feasible (distance, attractors) cell, read through the
    vocabulary ``index`` after the ids ``before``; the number, position and distance targets, and
    each sentence's subject number."""
    rng = random.Random(opts.data_seed)
    unk = index.get(UNK)
    number, position, distance = Target("number", 2), Target("position", 6), Target("distance", 5)
    sequences, held_out, labels, known, total = [], [], [], 0, 0
    cells = [(d, k) for d in range(1, opts.max_distance + 1) for k in range(opts.max_attractors + 1)
             if grammar.feasible(d, k)]
    for d, k in cells:
        for j in range(opts.sentences_per_cell):
            words, label = grammar.sentence(d, k, rng)
            ids = []
            for w in words:
                if w in index:
                    known += 1
                elif unk is None:
                    raise KeyError(f"the upstream vocabulary has neither {w!r} nor {UNK}")
                ids.append(index.get(w, unk))
            total += len(words)
            s, subject, offset = len(sequences), len(words) - d, len(before)
            sequences.append(before + ids)
            held_out.append(j % 2 == 1)
            labels.append(label)
            for t, w in enumerate(words):
                position.add(s, offset + t, log2_bucket(t, 5), w)
                if t >= subject:
                    number.add(s, offset + t, label, w, t - subject, f"attractors_{k}")
                    distance.add(s, offset + t, log2_bucket(t - subject, 4), w)
    return ProbingSet(sequences, held_out, [number, position, distance], known / total), labels


@TASKS.register("probe_number")
class ProbeNumber(ProbeTask):
    """Subject number, position and distance from the subject in the agreement models' states."""

    Options = NumberProbeOptions
    upstream = "agreement"
    final_splits = ("generated",)
    length_metric = "number_accuracy"
    length_split = "generated"
    table_metrics = (("generated", "number_accuracy"), ("generated", "number_selectivity"),
                     *(("generated", f"number_accuracy_attractors_{k}") for k in range(4)),
                     ("generated", "number_compression"),
                     ("generated", "position_accuracy"), ("generated", "position_selectivity"),
                     ("generated", "distance_accuracy"), ("generated", "distance_selectivity"))

    def probing_set(self, upstream: Upstream, split: str) -> ProbingSet:
        index = {w: i for i, w in enumerate(upstream.vocab)}
        probing, labels = generated_targets(upstream.extra["grammar"], index, self.options, [])
        probing.coverage = None  # the model's own grammar: every word is in its vocabulary
        predicted = predict(upstream.model, [Example(tuple(ids), y, len(ids)) for ids, y in zip(probing.sequences, labels)])
        probing.model_right = [p == y for p, y in zip(predicted, labels)]
        return probing


@TASKS.register("probe_number_lm")
class ProbeNumberLM(ProbeTask):
    """Subject number, position and distance in the language models' states: the agreement
    grammar's sentences in WikiText-2 words; the verb's number before it on the Linzen items; the
    subject's number from subject to verb on Gulordava's sentences."""

    Options = NumberProbeOptions
    upstream = "lm"
    final_splits = ("generated", "linzen", "gulordava")
    length_metric = "number_accuracy"
    length_split = "generated"
    table_metrics = (("generated", "number_accuracy"), ("generated", "number_selectivity"),
                     ("generated", "position_accuracy"), ("generated", "distance_accuracy"),
                     ("linzen", "number_accuracy"), ("linzen", "number_selectivity"),
                     *(("linzen", f"number_accuracy_attractors_{k}") for k in range(5)),
                     ("gulordava", "number_accuracy"), ("gulordava", "number_selectivity"),
                     ("gulordava", "number_accuracy_original"), ("gulordava", "number_accuracy_nonce"))

    def probing_set(self, upstream: Upstream, split: str) -> ProbingSet:
        index = {w: i for i, w in enumerate(upstream.vocab)}
        if split == "generated":  # the model's verdict: P(is) against P(are) after the prefix
            probing, labels = generated_targets(Grammar(32), index, self.options, [index[EOS]])
            forms = [index.get("is"), index.get("are")]
            probing.model_right = prefers_correct(upstream.model, probing.sequences, [forms[n] for n in labels],
                                                  [forms[1 - n] for n in labels])
            return probing
        folder = find_dataset("colorlessgreen", LINZEN_FILES + GULORDAVA_FILES, self.data_dir).resolve()
        number = Target("number", 2)
        sequences, held_out, groups, correct, wrong, known, total = [], [], [], [], [], 0, 0
        if split == "linzen":  # the subject is not marked: the verb's number, read before it
            items = [(i, item) for i, item in enumerate(load_linzen(folder))]
        else:  # from the subject noun (the gold's controller) to the verb; constructions kept whole
            items = [item for item in load_gulordava(folder) if item.subject is not None]
            constructions = sorted({item.construction for item in items})
            items = [(constructions.index(item.construction), item) for item in items]
        for i, item in items:
            label = verb_number(item.correct, item.wrong) if split == "linzen" else item.number
            if label is None or not item.prefix:
                continue
            groups.append(i)
            ids = [index[EOS]] + [index.get(w, index[UNK]) for w in item.prefix]
            known += sum(w in index for w in item.prefix)
            total += len(item.prefix)
            s = len(sequences)
            sequences.append(ids)
            held_out.append(i % 2 == 1)
            if split == "linzen":
                number.add(s, len(ids) - 1, label, item.prefix[-1], None, item.group)
            else:
                for t in range(item.subject, len(item.prefix)):
                    number.add(s, t + 1, label, item.prefix[t], t - item.subject, item.group)
            correct.append(index.get(item.correct))
            wrong.append(index.get(item.wrong))
        return ProbingSet(sequences, held_out, [number], known / total,
                          prefers_correct(upstream.model, sequences, correct, wrong), groups)


@TASKS.register("probe_pos")
class ProbePOS(ProbeTask):
    """Part of speech and entity type of CoNLL-2003 tokens in the language models' states."""

    Options = POSProbeOptions
    upstream = "lm"
    final_splits = ("conll",)
    table_metrics = (("conll", "pos_accuracy"), ("conll", "pos_selectivity"), ("conll", "pos_majority"),
                     ("conll", "entity_accuracy"), ("conll", "entity_selectivity"),
                     ("conll", "entity_majority"), ("conll", "coverage"))

    def probing_set(self, upstream: Upstream, split: str) -> ProbingSet:
        folder = find_dataset("conll2003", list(CONLL_FILES.values()), self.data_dir).resolve()
        n = self.options.n_sentences
        fit = read_conll(folder / CONLL_FILES["train"])[0][:n]
        score = read_conll(folder / CONLL_FILES["dev"])[0][:n]
        tags = sorted({p for s in fit for p in s.pos})
        if not tags:
            raise ValueError(f"{folder / CONLL_FILES['train']} has no part-of-speech column")
        tag_index = {t: i for i, t in enumerate(tags)}
        entities = ["O", *sorted({t[2:] for s in fit for t in s.tags if t != "O"})]
        entity_index = {t: i for i, t in enumerate(entities)}
        index = {w: i for i, w in enumerate(upstream.vocab)}
        pos, entity = Target("pos", len(tags)), Target("entity", len(entities))
        sequences, held_out, known, total = [], [], 0, 0
        for held, sentences in ((False, fit), (True, score)):
            for sentence in sentences:
                s = len(sequences)
                sequences.append([index[EOS]] + [index.get(w, index[UNK]) for w in sentence.words])
                held_out.append(held)
                for t, (w, p, tag) in enumerate(zip(sentence.words, sentence.pos, sentence.tags)):
                    known += w in index
                    total += 1
                    if p in tag_index:  # a tag the fitting sentences never show cannot be learnt
                        pos.add(s, t + 1, tag_index[p], w)
                    kind = "O" if tag == "O" else tag[2:]
                    if kind in entity_index:
                        entity.add(s, t + 1, entity_index[kind], w)
        return ProbingSet(sequences, held_out, [pos, entity], known / total)
