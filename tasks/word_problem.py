"""The word problem of a finite group (Merrill, Petty & Sabharwal 2024, "The Illusion of State in
State-Space Models", ICML; Liu et al. 2023, "Transformers Learn Shortcuts to Automata", ICLR):
the input is k elements g₁ … g_k of a group G, one token each, and at every position t the model
names the running product g₁·g₂·…·g_t (a tagging task: every position is scored).

Groups (``group``): cyclic ``Zn``, alternating ``An``, symmetric ``Sn`` and their direct products
joined by ``x`` (``A4xZ5``), at most ``MAX_ORDER`` elements. ``--tasks word_problem`` runs the
paper's three groups of order 60: ``Z60`` (abelian), ``A4xZ5`` (solvable, not abelian) and ``A5``
(the smallest non-solvable group: its word problem is NC¹-complete, so no TC⁰ model, constant-depth
transformers and diagonal SSMs among them, solves it at every length unless TC⁰ = NC¹).

Elements are canonical values: an integer 0 … n−1 for Zn; for Sn and An a permutation of
0 … n−1 as a tuple in one-line notation (``p[i]`` is the image of i); for a product, the tuple of
its factors' elements. They are enumerated in a fixed order, identity first: Zn by value, Sn
lexicographically (``itertools.permutations``), An the even permutations of that list, a product
lexicographically over its factors' lists (first factor slowest). The element with index i is
token i + 1 (0 is padding) and class i.

Composition, left to right: ``a·b`` is "a, then b", ``(a·b)[i] = b[a[i]]`` (sympy's ``p*q``), so
the target at t is the state reached by applying g₁ first and g_t last; Zn adds mod n; products
compose factor by factor.

Data: training and validation sequences have lengths uniform in 2 … L (L = ``train.seq_len``),
elements uniform and independent at every position; the test split has ``n_test_per_cell``
sequences at each of ``test_lengths`` (default every length 2 … 2L). Held-out sequences are drawn
independently of the training ones and may repeat one where the sequence space is small (lengths
2–3 of an order-60 group): with a target at every position, each prefix of a training sequence is
trained on anyway, so removing whole-sequence repeats would not make short lengths unseen;
``seen_in_training`` reports the share. The dev metric is validation sequence accuracy (the
paper's code stops training once it reaches 0.99); the test split adds
``solved_length``, the longest test length up to which every test length has sequence accuracy
≥ 0.99, and accuracies within (≤ L) and beyond the training lengths.
"""
from __future__ import annotations

import functools
import itertools
import math
import random
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pydantic

from harness.core.metrics import Metric, MetricSpec, specs
from harness.core.registry import TASKS
from harness.core.train_config import TrainConfig
from tasks.token_targets import (PAD, Tagged, TokenTargetOptions, TokenTargetTask, accuracy_metrics,
                                 lengths_from_text)

#: the paper's groups, all of order 60: abelian, solvable, non-solvable
PAPER_GROUPS = ("Z60", "A4xZ5", "A5")
#: the largest group accepted (S6 has 720 elements; S7, 5,040, would make a 25M-entry table)
MAX_ORDER = 1000
#: the shortest sequence (the paper's k starts at 2: one element alone is its own product)
SHORTEST = 2
#: sequence accuracy that counts as solved (where the paper's code stops training)
SOLVED = 0.99
VALID_FORMS = ("Zn (cyclic, n ≥ 1), An (alternating), Sn (symmetric), or a direct product of them "
               "joined by 'x', e.g. Z60, A5, S3, S5, A4xZ5")
FACTOR = re.compile(r"([ZAS])([1-9][0-9]*)")

Element = int | tuple


@dataclass(frozen=True)
class Factor:
    """One cyclic, alternating or symmetric group."""
    kind: Literal["Z", "A", "S"]
    n: int

    @property
    def name(self) -> str:
        return f"{self.kind}{self.n}"

    @property
    def order(self) -> int:
        if self.kind == "Z":
            return self.n
        return math.factorial(self.n) if self.kind == "S" or self.n < 2 else math.factorial(self.n) // 2

    def elements(self) -> list[Element]:
        if self.kind == "Z":
            return list(range(self.n))
        perms = list(itertools.permutations(range(self.n)))  # the identity first
        return perms if self.kind == "S" else [p for p in perms if is_even(p)]

    def multiply(self, a: Element, b: Element) -> Element:
        if self.kind == "Z":
            return (a + b) % self.n
        return tuple(b[i] for i in a)  # a, then b


def is_even(p: tuple[int, ...]) -> bool:
    """Whether a permutation is a product of an even number of transpositions: n − cycles even."""
    seen, cycles = [False] * len(p), 0
    for start in range(len(p)):
        if not seen[start]:
            cycles += 1
            i = start
            while not seen[i]:
                seen[i], i = True, p[i]
    return (len(p) - cycles) % 2 == 0


def parse_group(text: str) -> tuple[Factor, ...]:
    """``"A4xZ5"`` → (A4, Z5). Letters may be lower case, ``×`` may stand for ``x``, spaces are
    ignored; anything else raises ValueError naming the valid forms."""
    cleaned = str(text).replace(" ", "").replace("×", "x")
    parts = cleaned.split("x") if cleaned else [""]
    factors = []
    for part in parts:
        match = FACTOR.fullmatch(part.upper())
        if not match:
            raise ValueError(f"group {text!r}: {part!r} is no group; expected {VALID_FORMS}")
        factors.append(Factor(match[1], int(match[2])))
    order = math.prod(f.order for f in factors)
    if order > MAX_ORDER:
        raise ValueError(f"group {text!r} has {order:,} elements; at most {MAX_ORDER:,} are supported")
    if order < 2:
        raise ValueError(f"group {text!r} is trivial (one element): there is no state to track")
    return tuple(factors)


@dataclass(frozen=True)
class Group:
    factors: tuple[Factor, ...]
    #: every element, canonical values in the fixed order (identity first)
    elements: tuple[Element, ...]
    #: table[i, j]: index of elements[i]·elements[j]
    table: np.ndarray

    @property
    def name(self) -> str:
        return "x".join(f.name for f in self.factors)

    @property
    def order(self) -> int:
        return len(self.elements)

    def multiply(self, a: Element, b: Element) -> Element:
        if len(self.factors) == 1:
            return self.factors[0].multiply(a, b)
        return tuple(f.multiply(x, y) for f, x, y in zip(self.factors, a, b))

    def element_name(self, element: Element) -> str:
        """``3`` (Zn), ``[1 0 2]`` (a permutation, one-line notation), ``([1 0 2], 3)`` (a product)."""
        def one(factor: Factor, x) -> str:
            return str(x) if factor.kind == "Z" else "[" + " ".join(map(str, x)) + "]"
        if len(self.factors) == 1:
            return one(self.factors[0], element)
        return "(" + ", ".join(one(f, x) for f, x in zip(self.factors, element)) + ")"

    def index(self, element: Element) -> int:
        return self._positions[element]

    @functools.cached_property
    def _positions(self) -> dict:
        return {e: i for i, e in enumerate(self.elements)}

    def running_products(self, indices: np.ndarray) -> np.ndarray:
        """Rows of element indices → rows of their left-to-right running products."""
        out = np.empty_like(indices)
        if indices.shape[1]:
            out[:, 0] = indices[:, 0]
        for t in range(1, indices.shape[1]):
            out[:, t] = self.table[out[:, t - 1], indices[:, t]]
        return out

    def derived_series(self) -> list[int]:
        """Orders of G ⊇ G' ⊇ G'' ⊇ … until it stops shrinking (G is solvable iff it ends at 1)."""
        inverse = np.argmax(self.table == 0, axis=1)  # the identity has index 0
        current = np.arange(self.order)
        orders = [self.order]
        while True:
            a, b = np.meshgrid(current, current, indexing="ij")
            commutators = self.table[self.table[self.table[inverse[a], inverse[b]], a], b]
            subgroup = closure(self.table, np.unique(commutators))
            if len(subgroup) == len(current):
                return orders
            current = subgroup
            orders.append(len(current))


def closure(table: np.ndarray, generators: np.ndarray) -> np.ndarray:
    """The subgroup the generators (indices, identity included) generate."""
    members = np.unique(np.append(generators, 0))
    while True:
        grown = np.unique(np.concatenate([members, table[np.ix_(members, members)].ravel()]))
        if len(grown) == len(members):
            return members
        members = grown


@functools.lru_cache(maxsize=16)
def make_group(name: str) -> Group:
    """The group named ``name`` (any accepted spelling), its elements and multiplication table."""
    factors = parse_group(name)
    tables = []
    for f in factors:
        items = f.elements()
        where = {e: i for i, e in enumerate(items)}
        tables.append(np.array([[where[f.multiply(a, b)] for b in items] for a in items], dtype=np.int64))
    lists = [f.elements() for f in factors]
    elements = tuple(lists[0]) if len(factors) == 1 else tuple(itertools.product(*lists))
    # a product's index is mixed radix over its factors' indices, first factor most significant
    table = tables[0]
    for t in tables[1:]:
        n = len(t)
        table = (table[:, None, :, None] * n + t[None, :, None, :]).reshape(len(table) * n, len(table) * n)
    return Group(factors, elements, table)


def solved_length(per_length: dict[int, float]) -> int:
    """The longest length n such that every length up to n scored ≥ SOLVED (0: not the shortest)."""
    best = 0
    for n in sorted(per_length):
        if per_length[n] < SOLVED:
            break
        best = n
    return best


class WordProblemOptions(TokenTargetOptions):
    #: Zn, An, Sn or a direct product joined by "x" (stored in its canonical spelling)
    group: str = "A5"
    #: test lengths; None: every length 2 … 2L (L = train.seq_len). Also read from text, as
    #: ``--set`` cannot pass a list: "2..20", "2 4 8", "2..8 16"
    test_lengths: tuple[int, ...] | None = None

    @pydantic.field_validator("group", mode="before")
    @classmethod
    def _canonical_group(cls, value):
        return "x".join(f.name for f in parse_group(value))

    @pydantic.field_validator("test_lengths", mode="before")
    @classmethod
    def _lengths(cls, value):
        return None if value is None else lengths_from_text(value)

    @pydantic.field_validator("test_lengths")
    @classmethod
    def _lengths_fit(cls, value):
        if value is not None and (not value or min(value) < SHORTEST):
            raise ValueError(f"test lengths must be given and each at least {SHORTEST}, got {value}")
        return value


@TASKS.register("word_problem")
class WordProblem(TokenTargetTask):
    """The word problem of a finite group: the running product at every position (state tracking)."""

    Options = WordProblemOptions
    version = "1"
    #: three groups a backbone (``--tasks word_problem``); run by name, not with --tasks all
    in_all = False
    sweep_axes = {"group": PAPER_GROUPS}
    held_out_unseen = False  # see the module docstring: seen_in_training reports the overlap
    metric_specs = specs(
        *TokenTargetTask.metric_specs.values(),
        MetricSpec("solved_length", "higher", "score", "elements",
                   f"the longest test length up to which every test length has sequence accuracy ≥ {SOLVED}"),
        MetricSpec("accuracy_within", "higher", "score", "fraction",
                   "accuracy on the test sequences no longer than the training length L"),
        MetricSpec("sequence_accuracy_within", "higher", "score", "fraction",
                   "sequence accuracy on the test sequences no longer than the training length L"),
        MetricSpec("accuracy_beyond", "higher", "score", "fraction",
                   "accuracy on the test sequences longer than the training length L"),
        MetricSpec("sequence_accuracy_beyond", "higher", "score", "fraction",
                   "sequence accuracy on the test sequences longer than the training length L"),
        MetricSpec("seen_in_training", None, "info", "fraction",
                   "share of the split's sequences that also occur in the training split"),
    )
    table_metrics = (("test", "solved_length"), ("test", "sequence_accuracy_within"),
                     ("test", "sequence_accuracy_beyond"), ("valid", "sequence_accuracy"))
    dev_metric = "sequence_accuracy"
    length_metric = "sequence_accuracy"
    budgets = {
        # seq_len: the longest training sequence L (lengths 2..L); tested at every length 2..2L.
        # At width 64 on 2 shared CPU cores: 10–30 s a run for an LSTM or Transformer, 1–2 min for
        # Mamba, 2–5 min for DeltaNet (depths 1–3; results/study_state_tracking/word_problem.yaml)
        "smoke": dict(steps=1500, batch_size=32, seq_len=12, lr=3e-3, warmup_steps=50, eval_every=250),
        # the paper's code (jopetty/word-problem): AdamW β = (0.9, 0.999), weight decay 0.01, lr 1e-4,
        # batch 32, up to 500 epochs stopping at validation sequence accuracy 0.99; here a fixed
        # 30,000 steps of 128 (lr swept by the protocol), lengths up to the paper's k = 20
        "full": dict(steps=30_000, batch_size=128, seq_len=20, lr=1e-4, warmup_steps=1000, eval_every=1000,
                     beta2=0.999, weight_decay=0.01),
    }

    def __init__(self, options: WordProblemOptions, data_dir):
        super().__init__(options, data_dir)
        self.group = make_group(options.group)
        self.vocab = [PAD] + [self.group.element_name(e) for e in self.group.elements]
        self.n_outputs = self.group.order

    def info(self) -> dict:
        series = self.group.derived_series()
        return {"group": self.group.name, "order": self.group.order, "derived_series": series,
                "solvable": series[-1] == 1}

    def test_lengths(self, train: TrainConfig) -> tuple[int, ...]:
        given = self.options.test_lengths
        return tuple(range(SHORTEST, 2 * train.seq_len + 1)) if given is None else given

    def examples(self, lengths: np.ndarray, draw: np.random.Generator) -> list[Tagged]:
        """One example per length: elements uniform at every position, targets their running products."""
        if not len(lengths):
            return []
        indices = draw.integers(0, self.group.order, size=(len(lengths), int(lengths.max())))
        products = self.group.running_products(indices)
        return [Tagged(tuple((row[:n] + 1).tolist()), tuple(prod[:n].tolist()), int(n))
                for row, prod, n in zip(indices, products, lengths.tolist())]

    def generate(self, split: str, rng: random.Random, train: TrainConfig) -> list[Tagged]:
        if train.seq_len < SHORTEST:
            raise ValueError(f"word_problem: training length seq_len={train.seq_len}; sequences are at "
                             f"least {SHORTEST} elements (--set seq_len=...)")
        draw = np.random.default_rng(rng.randrange(2 ** 63))
        if split == "test":
            return [e for n in self.test_lengths(train)
                    for e in self.examples(np.full(self.options.n_test_per_cell, n), draw)]
        count = self.options.n_train if split == "train" else self.options.n_valid
        return self.examples(draw.integers(SHORTEST, train.seq_len + 1, size=count), draw)

    @functools.lru_cache(maxsize=4)
    def _training_inputs(self, train: TrainConfig) -> frozenset:
        return frozenset(e.tokens for e in self.split("train", train))

    def evaluate(self, model, split, train, max_tokens, lengths=True):
        examples = self.split(split, train)
        scores = self.predict(model, examples)
        metrics = accuracy_metrics(split, examples, scores, lengths)
        if not lengths:
            return metrics
        if split != "train":
            seen = self._training_inputs(train)
            metrics.append(Metric(split, "seen_in_training", sum(e.tokens in seen for e in examples) / len(examples)))
        if split == "test":
            L = train.seq_len
            for part, keep in (("within", lambda n: n <= L), ("beyond", lambda n: n > L)):
                group = [s for e, s in zip(examples, scores) if keep(e.length)]
                if group:
                    metrics.append(Metric(split, f"accuracy_{part}", sum(r for r, _ in group) / sum(n for _, n in group)))
                    metrics.append(Metric(split, f"sequence_accuracy_{part}", sum(r == n for r, n in group) / len(group)))
            per_length = {m.length: m.value for m in metrics if m.name == "sequence_accuracy" and m.length is not None}
            metrics.append(Metric(split, "solved_length", solved_length(per_length)))
        return metrics
