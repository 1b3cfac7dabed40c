"""In-context language learning (ICLL) on REGBENCH (Akyürek, Wang, Kim & Andreas 2024, "In-Context
Language Learning: Architectures and Algorithms", ICML; code: github.com/berlino/seq_icl, which the
paper names as its release).

Each example is one random automaton and 10–19 strings sampled from it, joined by a delimiter
``|`` into one sequence; the model reads the sequence left to right and predicts every next token.
It must infer the unknown regular language from the strings seen so far: the automaton is new in
every example, and the validation and test automata never occur in training.

The generator, as the paper's (seq_icl ``src/dataloaders/dfa.py``; their ``numpy`` ``integers(a, b)``
excludes b, so its ranges read as below):

- a vocabulary of 20 tokens: 18 symbols ``a`` … ``r``, the delimiter ``|`` and padding;
- an automaton: 4–12 states, an alphabet of 4–18 of the 18 symbols, and from every state 1–3
  outgoing edges, each to a different other state (no self-loops) with a different symbol of the
  alphabet; state 0 starts and every state accepts (a probabilistic automaton with uniform
  transition probabilities: every prefix of a generated string is itself a string of the language);
- minimised and trimmed (here: unreachable states removed, then Moore's partition refinement);
- 10–19 strings, each of length 1–49, each a walk from the start state taking an outgoing edge
  uniformly at random at every step (on the minimal automaton).

Training is next-token prediction over the whole sequence; as in the paper's code the delimiter is
not a target (its labels are the ignore index: a string's length is uniform and independent of its
state, so the delimiter cannot be predicted), unless ``train_on_delimiter``. The first symbol of a
sequence is never predicted (there is no start token), as in the paper's code.

The metric (the paper's ``dfa_accuracy``, seq_icl ``eval.py`` ``_get_dfa_accuracy``): at each
position whose next token is a symbol, the greedy (argmax) prediction counts as right when the
current string so far, extended by the predicted token, is still accepted by the automaton; as
every state accepts, that is when the state reached has an edge labelled with the prediction.
Predicting the delimiter or padding is wrong. ``accuracy`` is the mean over scored positions (the
paper's), ``sequence_accuracy`` the share of examples right at every scored position, the length
column the string's index k in the sequence (k − 1 strings of context before it), and ``tvd`` the
total variation distance between the model's next-token distribution and the automaton's (uniform
over the current state's edges), the paper's second measure (its code logs the L1 distance, 2 × tvd).

Splits: test, validation and training automata come from separate random streams fixed by
``data_seed``, drawn in that order; an automaton is kept only when its canonical minimal form (the
minimal automaton numbered in breadth-first order, symbols ascending: equal exactly when two
automata accept the same language) has not been kept already in its split or an earlier one. So the
splits share no language, held-out sets do not depend on ``n_train_automata``, and a larger training
set extends a smaller one. ``n_train_automata`` is the paper's x-axis (1,000 … 40,000); by default
every training automaton gives one example, as in the paper (``n_train`` examples cycle over them
otherwise). Validation and test: 500 automata each, one example each (the paper: 1,000 held out,
half each).

The answer is computed apart from the generator: ``run`` simulates the automaton from its transition
table, and the scored sets come from that simulation, not from the walk that drew the strings.
"""
from __future__ import annotations

import functools
import random
from collections import deque
from dataclasses import dataclass
from typing import Iterable

import pydantic
import torch

from harness.core.metrics import Metric, MetricSpec, specs
from harness.core.registry import TASKS
from harness.core.train_config import TrainConfig
from tasks.token_targets import (IGNORE, PAD, Tagged, TokenTargetOptions, TokenTargetTask, length_batches,
                                 collate)

#: the paper's generator (seq_icl): states, alphabet size, edges per state, strings, string length
STATES = (4, 12)
ALPHABET = (4, 18)
EDGES = (1, 3)
STRINGS = (10, 19)
STRING_LENGTH = (1, 49)
#: the 18 symbols, as the paper's (chr(97 + i))
SYMBOLS = tuple(chr(ord("a") + i) for i in range(18))
DELIMITER = "|"
#: token ids: 0 padding, 1 … 18 the symbols, 19 the delimiter
DELIM = len(SYMBOLS) + 1
VOCAB = (PAD, *SYMBOLS, DELIMITER)
#: the paper's numbers of training automata (its x-axis)
PAPER_TRAIN_AUTOMATA = (1000, 2500, 5000, 10000, 20000, 40000)
#: the longest sequence the generator makes: 19 strings of 49 symbols and 18 delimiters
LONGEST = STRINGS[1] * STRING_LENGTH[1] + STRINGS[1] - 1


# --- automata ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DFA:
    """A deterministic automaton with a partial transition function (a missing edge rejects)."""

    #: per state, its outgoing edges (symbol, target), sorted by symbol; symbols are 0 … 17
    edges: tuple[tuple[tuple[int, int], ...], ...]
    accepting: frozenset[int]
    start: int = 0
    #: the symbols it was drawn over (its edges use some of them)
    alphabet: tuple[int, ...] = ()

    def __post_init__(self):
        for out in self.edges:
            symbols = [a for a, _ in out]
            if symbols != sorted(set(symbols)):
                raise ValueError(f"edges {out}: one edge per symbol, sorted by symbol")
            if any(not 0 <= t < len(self.edges) for _, t in out):
                raise ValueError(f"edges {out}: a target outside states 0 … {len(self.edges) - 1}")

    @property
    def n_states(self) -> int:
        return len(self.edges)

    @functools.cached_property
    def table(self) -> tuple[dict[int, int], ...]:
        return tuple(dict(out) for out in self.edges)

    def used_symbols(self) -> tuple[int, ...]:
        return tuple(sorted({a for out in self.edges for a, _ in out}))


def sample_automaton(rng: random.Random) -> DFA:
    """A raw automaton as the paper draws one (before minimisation): 4–12 states, an alphabet of
    4–18 symbols, 1–3 edges a state to distinct other states with distinct symbols, all accepting."""
    n = rng.randint(*STATES)
    alphabet = tuple(sorted(rng.sample(range(len(SYMBOLS)), rng.randint(*ALPHABET))))
    edges = []
    for state in range(n):
        m = rng.randint(*EDGES)
        symbols = rng.sample(alphabet, m)
        targets = rng.sample([s for s in range(n) if s != state], m)
        edges.append(tuple(sorted(zip(symbols, targets))))
    return DFA(tuple(edges), frozenset(range(n)), 0, alphabet)


def _reach(starts: Iterable[int], successors: dict[int, set[int]]) -> set[int]:
    seen, todo = set(starts), list(starts)
    while todo:
        for t in successors.get(todo.pop(), ()):
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


def trim(dfa: DFA) -> DFA:
    """Only the states reachable from the start from which an accepting state can be reached
    (numbered in their old order); an empty language leaves one rejecting state."""
    forward = {s: {t for _, t in out} for s, out in enumerate(dfa.edges)}
    backward: dict[int, set[int]] = {}
    for s, targets in forward.items():
        for t in targets:
            backward.setdefault(t, set()).add(s)
    keep = _reach([dfa.start], forward) & _reach(dfa.accepting, backward)
    if dfa.start not in keep:
        return DFA(((),), frozenset(), 0, dfa.alphabet)
    new = {s: i for i, s in enumerate(sorted(keep))}
    edges = tuple(tuple((a, new[t]) for a, t in dfa.edges[s] if t in new) for s in sorted(keep))
    return DFA(edges, frozenset(new[s] for s in dfa.accepting if s in new), new[dfa.start], dfa.alphabet)


def minimise(dfa: DFA) -> DFA:
    """The minimal automaton of ``dfa``'s language: trimmed, then Moore's partition refinement
    (a missing edge goes to an implicit dead state), its states numbered in breadth-first order
    from the start, symbols ascending, so equal languages give equal automata (up to ``alphabet``)."""
    dfa = trim(dfa)
    symbols = dfa.used_symbols()
    table = dfa.table
    block = [int(s in dfa.accepting) for s in range(dfa.n_states)]
    count = len(set(block))
    while True:
        signature = [(block[s], *(block[table[s][a]] if a in table[s] else -1 for a in symbols))
                     for s in range(dfa.n_states)]
        ids: dict[tuple, int] = {}
        block = [ids.setdefault(sig, len(ids)) for sig in signature]
        if len(ids) == count:
            break
        count = len(ids)
    members: dict[int, int] = {}
    for s in range(dfa.n_states):
        members.setdefault(block[s], s)  # a representative of each block
    order, queue = {block[dfa.start]: 0}, deque([block[dfa.start]])
    while queue:
        b = queue.popleft()
        for _, t in dfa.edges[members[b]]:
            if block[t] not in order:
                order[block[t]] = len(order)
                queue.append(block[t])
    by_number = sorted(order, key=order.get)
    edges = tuple(tuple((a, order[block[t]]) for a, t in dfa.edges[members[b]]) for b in by_number)
    accepting = frozenset(order[block[s]] for s in dfa.accepting)
    return DFA(edges, accepting, 0, dfa.alphabet)


def canonical_form(dfa: DFA) -> tuple:
    """A key equal for two automata exactly when they accept the same language."""
    m = minimise(dfa)
    return m.edges, tuple(sorted(m.accepting))


def walk(dfa: DFA, length: int, rng: random.Random) -> list[int]:
    """The sampler: ``length`` symbols, from the start taking one of the current state's edges
    uniformly at random at every step (every state of a generated automaton has one)."""
    state, out = dfa.start, []
    for _ in range(length):
        symbol, state = rng.choice(dfa.edges[state])
        out.append(symbol)
    return out


# The answer side, written apart from the sampler: a simulation from the transition table.

def run(dfa: DFA, word: Iterable[int], state: int | None = None) -> int | None:
    """The state reached by reading ``word`` (from ``state``, by default the start); None where
    a symbol has no edge."""
    current = dfa.start if state is None else state
    for symbol in word:
        current = dfa.table[current].get(symbol)
        if current is None:
            return None
    return current


def accepts(dfa: DFA, word: Iterable[int]) -> bool:
    return run(dfa, word) in dfa.accepting


@functools.lru_cache(maxsize=65536)
def live_states(dfa: DFA) -> frozenset[int]:
    """States from which some accepting state can be reached."""
    backward: dict[int, set[int]] = {}
    for s, out in enumerate(dfa.edges):
        for _, t in out:
            backward.setdefault(t, set()).add(s)
    return frozenset(_reach(dfa.accepting, backward))


def continuations(dfa: DFA, state: int | None) -> frozenset[int]:
    """The symbols that keep a prefix ending in ``state`` a prefix of some accepted string."""
    if state is None:
        return frozenset()
    live = live_states(dfa)
    return frozenset(a for a, t in dfa.edges[state] if t in live)


# --- the task ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Instance(Tagged):
    """An example and the (minimal) automaton its strings were drawn from."""
    dfa: DFA | None = None


def sequence_of(e: Tagged) -> list[int]:
    """The example's whole token sequence (its inputs, then the last next token)."""
    last = e.targets[-1]
    return list(e.tokens) + [DELIM if last == IGNORE else last]


def strings_of(e: Tagged) -> list[list[int]]:
    """The example's strings as symbols 0 … 17 (the last one cut short where the sequence was)."""
    strings: list[list[int]] = [[]]
    for t in sequence_of(e):
        if t == DELIM:
            strings.append([])
        else:
            strings[-1].append(t - 1)
    return strings


def scored_answers(e: Instance) -> tuple[list[frozenset[int]], list[int]]:
    """For each scored position (the next token is a symbol), the tokens that count as right
    there and the index k (1, 2, …) of the string it predicts into, by simulating the automaton
    along the sequence: the state after the current string so far, and its continuations."""
    right = [frozenset(a + 1 for a in continuations(e.dfa, s)) for s in range(e.dfa.n_states)]
    sets, strings = [], []
    state, k = e.dfa.start, 1
    for token, target in zip(e.tokens, e.targets):
        if token == DELIM:
            state, k = e.dfa.start, k + 1
        elif state is not None:
            state = e.dfa.table[state].get(token - 1)
        if target != IGNORE and target != DELIM:
            sets.append(frozenset() if state is None else right[state])
            strings.append(k)
    return sets, strings


class RegBenchOptions(TokenTargetOptions):
    #: distinct training automata (the paper's x-axis: 1,000 … 40,000)
    n_train_automata: int = pydantic.Field(default=2500, ge=1)
    #: training examples, cycling over the training automata; None: one each (the paper's)
    n_train: int | None = pydantic.Field(default=None, ge=1)
    #: validation automata, one example each (the paper: 500)
    n_valid: int = pydantic.Field(default=500, ge=1)
    #: test automata, one example each (the paper: 500)
    n_test_per_cell: int = pydantic.Field(default=500, ge=1)
    #: also train on predicting the delimiter (the paper's code leaves it out of the loss); it is
    #: never scored
    train_on_delimiter: bool = False


@TASKS.register("regbench")
class RegBench(TokenTargetTask):
    """In-context language learning (REGBENCH): strings of a random automaton, predict the next symbol."""

    Options = RegBenchOptions
    version = "1"
    #: minutes a backbone on a CPU: run by name, not with --tasks all
    in_all = False
    metric_specs = specs(
        MetricSpec("accuracy", "higher", "score", "fraction",
                   "share of scored positions (next token a symbol) whose greedy prediction keeps the "
                   "current string a prefix the automaton accepts; at a length k, of the positions in "
                   "the k-th string of each example"),
        MetricSpec("sequence_accuracy", "higher", "score", "fraction",
                   "share of examples whose every scored position is predicted right"),
        MetricSpec("tvd", "lower", "score", "fraction",
                   "total variation distance between the model's next-token distribution and the "
                   "automaton's (uniform over the current state's edges), mean over scored positions"),
        MetricSpec("examples", None, "info", "examples", "held-out examples scored on the split"),
    )
    table_metrics = (("test", "accuracy"), ("test", "tvd"), ("valid", "accuracy"))
    dev_metric = "accuracy"
    #: accuracy per string index k in the sequence (k − 1 strings of context before it)
    length_metric = "accuracy"
    budgets = {
        # seq_len: the most tokens a model reads (longer sequences are cut, as the paper's
        # input_seq_len does); 1,024 holds the longest the generator makes (948 read). On a CPU the
        # smoke budget reads the first 256 (about 10 of the 10–19 strings, 375 tokens on average)
        "smoke": dict(steps=300, batch_size=16, seq_len=256, lr=1e-3, warmup_steps=30, eval_every=150,
                      weight_decay=0.1),
        # the paper's optimiser (Table 3; seq_icl configs): AdamW, batch 32, lr 2.5e-4 (or 1e-4),
        # weight decay 0.1, β (0.9, 0.99), cosine to 2.5e-5 after 25,000 warm-up steps. The paper
        # trains 200 or 400 epochs, so its steps grow with the training set (6,250 … 500,000); here
        # every set gets 100,000 steps (80 epochs at 40,000 automata), the checkpoint by dev accuracy
        "full": dict(steps=100_000, batch_size=32, seq_len=1024, lr=2.5e-4, weight_decay=0.1, beta2=0.99,
                     warmup_steps=25_000, min_lr_ratio=0.1, eval_every=5_000),
    }

    def __init__(self, options: RegBenchOptions, data_dir):
        super().__init__(options, data_dir)
        self.vocab = list(VOCAB)
        self.n_outputs = len(VOCAB)

    def info(self) -> dict:
        sizes = {split: [a.n_states for a in self.automata(split)] for split in ("train", "valid", "test")}
        return {"automata": {split: len(s) for split, s in sizes.items()},
                "mean_states": {split: round(sum(s) / len(s), 3) for split, s in sizes.items()}}

    @classmethod
    def dev_score(cls, metrics: list[Metric], train: TrainConfig) -> float:
        # the length column is a string index, not a token length: the dev score is the overall one
        for m in metrics:
            if m.split == cls.dev_split and m.name == cls.dev_metric and m.length is None:
                return m.value
        raise KeyError(f"{cls.__name__}.evaluate returned no {cls.dev_metric!r} on {cls.dev_split!r}")

    def _stream(self, split: str, what: str) -> random.Random:
        return random.Random(f"regbench/{self.options.data_seed}/{split}/{what}")

    @functools.lru_cache(maxsize=3)
    def _automata_with_forms(self, split: str) -> tuple[tuple[DFA, ...], frozenset]:
        """The split's minimal automata and the canonical forms of those of this split and the
        earlier ones (test, then valid, then train), none of which it repeats."""
        order = ("test", "valid", "train")
        count = {"test": self.options.n_test_per_cell, "valid": self.options.n_valid,
                 "train": self.options.n_train_automata}[split]
        taken = frozenset() if split == "test" else self._automata_with_forms(order[order.index(split) - 1])[1]
        rng, kept, forms = self._stream(split, "automata"), [], set(taken)
        for _ in range(100 * count + 1000):
            if len(kept) == count:
                break
            dfa = minimise(sample_automaton(rng))
            form = (dfa.edges, tuple(sorted(dfa.accepting)))
            if form not in forms:
                forms.add(form)
                kept.append(dfa)
        else:
            raise RuntimeError(f"regbench: could not draw {count} distinct {split} automata")
        return tuple(kept), frozenset(forms)

    def automata(self, split: str) -> tuple[DFA, ...]:
        """The split's minimal automata: distinct languages, none in an earlier split."""
        return self._automata_with_forms(split)[0]

    def example(self, dfa: DFA, rng: random.Random, seq_len: int) -> Instance:
        sequence: list[int] = []
        for i in range(rng.randint(*STRINGS)):
            if i:
                sequence.append(DELIM)
            sequence += [a + 1 for a in walk(dfa, rng.randint(*STRING_LENGTH), rng)]
        sequence = sequence[:seq_len + 1]  # the model reads at most seq_len tokens
        targets = [t if t != DELIM or self.options.train_on_delimiter else IGNORE for t in sequence[1:]]
        return Instance(tuple(sequence[:-1]), tuple(targets), sequence.count(DELIM) + 1, None, dfa)

    @functools.lru_cache(maxsize=8)
    def split(self, name: str, train: TrainConfig) -> list[Instance]:
        if train.seq_len < 2:
            raise ValueError(f"regbench: seq_len={train.seq_len}; a model must read at least 2 tokens")
        automata = self.automata(name)
        count = len(automata)
        if name == "train" and self.options.n_train is not None:
            count = self.options.n_train
        rng = self._stream(name, "strings")
        return [self.example(automata[i % len(automata)], rng, train.seq_len) for i in range(count)]

    def answers_of(self, e: Instance) -> tuple[torch.Tensor, list[int]]:
        """A boolean (scored positions × outputs) table of the tokens that count as right at each
        scored position of ``e``, and each position's string index."""
        sets, strings = scored_answers(e)
        rows = [row for row, allowed in enumerate(sets) for _ in allowed]
        columns = [token for allowed in sets for token in allowed]
        valid = torch.zeros(len(sets), self.n_outputs, dtype=torch.bool)
        valid[rows, columns] = True
        return valid, strings

    @functools.lru_cache(maxsize=4)
    def answers(self, name: str, train: TrainConfig) -> list[tuple[torch.Tensor, list[int]]]:
        """``answers_of`` every example of the split."""
        return [self.answers_of(e) for e in self.split(name, train)]

    @torch.no_grad()
    def predict(self, model, examples: list[Instance], answers: list[tuple[torch.Tensor, list[int]]],
                batch_size: int = 256) -> list[tuple[list[bool], float]]:
        """Per example: whether each scored position's greedy prediction is right, and the sum of
        the positions' total variation distances. Batches as the base task's."""
        device = next(model.parameters()).device
        out: list[tuple[list[bool], float]] = [([], 0.0)] * len(examples)
        for chunk in length_batches(examples, batch_size):
            batch = {k: v.to(device) for k, v in collate([examples[j] for j in chunk]).items()}
            scored = (batch["targets"] != IGNORE) & (batch["targets"] != DELIM)
            logits = model(batch["tokens"], batch["mask"], scored).float()
            valid = torch.cat([answers[j][0] for j in chunk]).to(device)
            hits = valid.gather(1, logits.argmax(-1, keepdim=True)).squeeze(1)
            truth = valid.float() / valid.sum(1, keepdim=True).clamp(min=1)
            tvd = 0.5 * (logits.softmax(-1) - truth).abs().sum(1)
            counts = [len(answers[j][1]) for j in chunk]
            for j, h, d in zip(chunk, hits.split(counts), tvd.split(counts)):
                out[j] = (h.tolist(), float(d.sum()))
        return out

    def evaluate(self, model, split, train, max_tokens, lengths=True):
        examples = self.split(split, train)
        answers = self.answers(split, train)
        scores = self.predict(model, examples, answers)
        right = sum(sum(h) for h, _ in scores)
        total = sum(len(h) for h, _ in scores)
        metrics = [Metric(split, "accuracy", right / total),
                   Metric(split, "sequence_accuracy", sum(all(h) for h, _ in scores) / len(scores)),
                   Metric(split, "examples", len(examples))]
        if lengths:
            metrics.append(Metric(split, "tvd", sum(d for _, d in scores) / total))
            per_string: dict[int, list[int]] = {}
            for (hits, _), (_, strings) in zip(scores, answers):
                for hit, k in zip(hits, strings):
                    per_string.setdefault(k, [0, 0])
                    per_string[k][0] += hit
                    per_string[k][1] += 1
            metrics += [Metric(split, "accuracy", r / n, k) for k, (r, n) in sorted(per_string.items())]
        return metrics
