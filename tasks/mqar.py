"""Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology").

A sequence opens with ``pairs`` key–value pairs; the rest holds every key once more, each at a
gap drawn from a power law (most queries come soon after the pairs, a few much later), among
random filler tokens. At each queried key the model must name the value paired with it: scored
there only, as next-token prediction. Keys are tokens 1 … V/2−1, values V/2 … V−1, filler any
token, as Zoology draws them.

Zoology's figure 2 trains 2-layer models without MLPs, vocabulary 8,192, widths 64–512, at
(L, pairs) ∈ {(64, 4), (128, 8), (256, 16), (512, 64)}, best of 4 learning rates. Here a run trains
on a mixture of ``train_settings`` and is tested on each of ``test_settings``: the length column is
L, and ``accuracy_pairs_<k>`` the accuracy per number of pairs, so settings longer than any trained
on measure length extrapolation. The backbones keep their own blocks (MLPs included).
"""
from __future__ import annotations

import random

import numpy as np
import pydantic

from harness.core.registry import TASKS
from harness.core.train_config import TrainConfig
from tasks.token_targets import IGNORE, PAD, Tagged, TokenTargetOptions, TokenTargetTask

ZOOLOGY_SETTINGS = ((64, 4), (128, 8), (256, 16), (512, 64))


class MQAROptions(TokenTargetOptions):
    vocab_size: int = pydantic.Field(default=8192, ge=8)
    #: (sequence length L, key–value pairs) trained on, in equal shares
    train_settings: tuple[tuple[int, int], ...] = ((64, 4), (128, 8))
    #: (L, pairs) tested, each a cell of its own
    test_settings: tuple[tuple[int, int], ...] = ZOOLOGY_SETTINGS
    #: exponent of the power law of query gaps (Zoology: 0.01; smaller puts queries nearer)
    power_a: float = pydantic.Field(default=0.01, gt=0, le=1)
    #: filler between queries drawn at random (Zoology's default); False: one blank token (token
    #: 1, which is never a key)
    random_filler: bool = True

    @pydantic.model_validator(mode="after")
    def _settings_fit(self):
        for L, pairs in {*self.train_settings, *self.test_settings}:
            if L % 2 or pairs < 1 or 4 * pairs > L:
                raise ValueError(f"MQAR setting (L={L}, pairs={pairs}): L must be even and at least "
                                 "4 × pairs (pairs, then a query slot per pair in the rest)")
            if pairs > self.vocab_size // 2 - 2:
                raise ValueError(f"MQAR setting (L={L}, pairs={pairs}): vocab_size {self.vocab_size} "
                                 f"has only {self.vocab_size // 2 - 2} distinct keys")
        return self


def gap_probabilities(space: int, power_a: float) -> np.ndarray:
    """P(gap = g) ∝ a·(g+1)^(a−1) for g in 0 … space−1 (Zoology's power law)."""
    p = power_a * np.arange(1, space + 1) ** (power_a - 1)
    return p / p.sum()


def recall_answers(tokens: tuple[int, ...], pairs: int) -> dict[int, int]:
    """Position → value for every later occurrence of a key from the opening pairs: the
    reference the generator's targets are checked against."""
    paired = {tokens[2 * i]: tokens[2 * i + 1] for i in range(pairs)}
    return {pos: paired[t] for pos, t in enumerate(tokens) if pos >= 2 * pairs and t in paired}


@TASKS.register("mqar")
class MQAR(TokenTargetTask):
    """Multi-query associative recall (Zoology): recall many key–value pairs seen earlier."""

    Options = MQAROptions
    version = "1"
    #: minutes a backbone on a CPU: run by name, not with --tasks all
    in_all = False
    budgets = {
        # seq_len: the longest training sequence (the train settings must fit in it)
        "smoke": dict(steps=1000, batch_size=64, seq_len=128, lr=1e-3, warmup_steps=50, eval_every=250,
                      weight_decay=0.1),
        # Zoology: 64 epochs of 100,000 examples, batch 64 … 256, lr swept in 1e-4 … 1e-2
        "full": dict(steps=30000, batch_size=128, seq_len=512, lr=1e-3, warmup_steps=1000, eval_every=2000,
                     weight_decay=0.1),
    }

    def __init__(self, options: MQAROptions, data_dir):
        super().__init__(options, data_dir)
        self.vocab = [PAD] + [f"t{i}" for i in range(1, options.vocab_size)]
        self.n_outputs = options.vocab_size

    def example(self, L: int, pairs: int, rng: np.random.Generator) -> Tagged:
        V = self.options.vocab_size
        # key 1 is left out of the key space, so the blank filler can never be read as a key
        keys = rng.choice(np.arange(2, V // 2), pairs, replace=False)
        values = rng.choice(np.arange(V // 2, V), pairs, replace=False)
        space = (L - 2 * pairs) // 2
        gaps = rng.choice(space, pairs, replace=False, p=gap_probabilities(space, self.options.power_a))
        tokens = np.empty(L, dtype=np.int64)
        tokens[0:2 * pairs:2], tokens[1:2 * pairs:2] = keys, values
        rest = rng.integers(1, V, L - 2 * pairs) if self.options.random_filler else np.ones(L - 2 * pairs, np.int64)
        is_query = np.zeros(L - 2 * pairs, dtype=bool)
        is_query[2 * gaps] = True
        # filler that happens to be a key would be a query with no target: redraw it as a value
        clash = ~is_query & np.isin(rest, keys)
        rest[clash] = rng.integers(V // 2, V, int(clash.sum()))
        rest[2 * gaps] = keys
        tokens[2 * pairs:] = rest
        targets = np.full(L, IGNORE, dtype=np.int64)
        targets[2 * pairs + 2 * gaps] = values
        return Tagged(tuple(tokens.tolist()), tuple(targets.tolist()), L, f"pairs_{pairs}")

    def generate(self, split: str, rng: random.Random, train: TrainConfig) -> list[Tagged]:
        longest = max(L for L, _ in self.options.train_settings)
        if longest > train.seq_len:
            raise ValueError(f"mqar: a train setting has L={longest}, longer than the budget's seq_len "
                             f"{train.seq_len} (--set seq_len={longest})")
        draw = np.random.default_rng(rng.randrange(2 ** 63))
        if split == "test":
            return [self.example(L, pairs, draw) for L, pairs in self.options.test_settings
                    for _ in range(self.options.n_test_per_cell)]
        settings = self.options.train_settings
        count = self.options.n_train if split == "train" else self.options.n_valid
        return [self.example(*settings[i % len(settings)], draw) for i in range(count)]
