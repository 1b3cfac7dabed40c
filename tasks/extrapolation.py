"""Length-generalisation probes with exactly known answers: train on lengths ≤ L, test at L, 2L,
4L, 8L (Delétang et al. 2023; Zoology). ``probe`` picks one; ``--tasks extrapolation`` runs all.

- ``parity``: a bit string; is the number of ones odd?
- ``dyck``: a string over ( ) [ ]; is it balanced (Dyck-2)? Negatives differ from a balanced
  string in one symbol, so counting alone does not solve it.
- ``recall``: key–value pairs, then one of the keys; which value was paired with it?
"""
from __future__ import annotations

import random
from typing import Literal

import pydantic

from harness.core.train_config import TrainConfig
from harness.core.registry import TASKS
from tasks.classification import PAD, ClassificationOptions, ClassificationTask, Example

OPEN, CLOSE = "([", ")]"


class ExtrapolationOptions(ClassificationOptions):
    probe: Literal["parity", "dyck", "recall"] = "parity"
    #: test lengths, as multiples of the training length L (train.seq_len)
    length_multiples: tuple[int, ...] = (1, 2, 4, 8)
    n_test_per_cell: int = pydantic.Field(default=200, ge=1)
    #: recall: distinct keys (must cover the pairs of the longest test sequence) and values
    n_keys: int = pydantic.Field(default=64, ge=1)
    n_values: int = pydantic.Field(default=16, ge=2)


def balanced(symbols) -> bool:
    stack = []
    for s in symbols:
        if s in OPEN:
            stack.append(s)
        elif not stack or OPEN.index(stack.pop()) != CLOSE.index(s):
            return False
    return not stack


def dyck_word(n: int, rng: random.Random) -> list[str]:
    """A uniformly-stepped random balanced Dyck-2 word of even length n."""
    out, stack = [], []
    for i in range(n):
        remaining = n - i
        if stack and (remaining == len(stack) or rng.random() < 0.5):
            out.append(CLOSE[OPEN.index(stack.pop())])
        else:
            stack.append(rng.choice(OPEN))
            out.append(stack[-1])
    return out


@TASKS.register("extrapolation")
class Extrapolation(ClassificationTask):
    """Synthetic length generalisation (parity, Dyck-2, associative recall): train ≤ L, test up to 8L."""

    Options = ExtrapolationOptions
    version = "1"
    #: run every probe unless one is chosen with --set probe=...
    sweep_axes = {"probe": ("parity", "dyck", "recall")}
    budgets = {
        # seq_len is the longest training sequence L
        "smoke": dict(steps=600, batch_size=64, seq_len=16, lr=3e-3, warmup_steps=50, eval_every=200),
        "full": dict(steps=20000, batch_size=128, seq_len=32, lr=1e-3, warmup_steps=1000, eval_every=1000),
    }

    def __init__(self, options: ExtrapolationOptions, data_dir):
        super().__init__(options, data_dir)
        probe = options.probe
        if probe == "parity":
            symbols, self.n_classes = ["0", "1"], 2
        elif probe == "dyck":
            symbols, self.n_classes = list(OPEN + CLOSE), 2
        else:
            symbols = [f"k{i}" for i in range(options.n_keys)] + [f"v{i}" for i in range(options.n_values)]
            self.n_classes = options.n_values
        self.vocab = [PAD] + symbols
        self.index = {s: i for i, s in enumerate(self.vocab)}

    def lengths(self, split: str, train: TrainConfig) -> list[int]:
        L = train.seq_len
        if split == "test":
            return [L * m for m in self.options.length_multiples]
        smallest = {"parity": 1, "dyck": 2, "recall": 3}[self.options.probe]
        step = 2 if self.options.probe == "dyck" else 1
        return list(range(smallest, L + 1, step))

    def example(self, length: int, rng: random.Random, bucket: int) -> Example:
        probe = self.options.probe
        if probe == "parity":
            bits = [rng.choice("01") for _ in range(length)]
            symbols, label = bits, bits.count("1") % 2
        elif probe == "dyck":
            symbols = dyck_word(length - length % 2, rng)
            label = 1
            if rng.random() < 0.5:
                i = rng.randrange(len(symbols))
                symbols[i] = rng.choice([s for s in OPEN + CLOSE if s != symbols[i]])
                label = 0
            assert balanced(symbols) == bool(label)
        else:
            pairs = (length - 1) // 2
            keys = rng.sample(range(self.options.n_keys), pairs)
            values = [rng.randrange(self.options.n_values) for _ in keys]
            asked = rng.randrange(pairs)
            symbols = [t for k, v in zip(keys, values) for t in (f"k{k}", f"v{v}")] + [f"k{keys[asked]}"]
            label = values[asked]
        return Example(tuple(self.index[s] for s in symbols), label, bucket)

    def generate(self, split, rng, train):
        lengths = self.lengths(split, train)
        needed = (max(lengths) - 1) // 2
        if self.options.probe == "recall" and needed > self.options.n_keys:
            raise ValueError(f"recall at length {max(lengths)} needs {needed} distinct keys; "
                             f"n_keys={self.options.n_keys}")
        if split == "test":
            return [self.example(n, rng, n) for n in lengths for _ in range(self.options.n_test_per_cell)]
        count = self.options.n_train if split == "train" else self.options.n_valid
        out = []
        for _ in range(count):
            n = rng.choice(lengths)
            out.append(self.example(n, rng, n))
        return out
