"""Shared machinery for synthetic tasks whose answers sit at chosen positions of the sequence
(MQAR, the MAD tasks, the Chomsky-hierarchy tasks): generated splits, a head on every position
of any backbone, a loss on the scored positions only, and token and sequence accuracy per length
and per cell.

A task gives ``vocab`` (index 0 = <pad>), ``n_outputs`` (the classes a position can be scored
against) and ``generate``; an example carries its input tokens and, position by position, the
target or ``IGNORE``. A task whose answer is one class at the end scores only the last position.
"""
from __future__ import annotations

import functools
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterator

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from harness.core.batching import pad
from harness.core.metrics import Metric, MetricSpec, specs
from harness.core.train_config import TrainConfig
from tasks.base import Batch, TaskOptions, TrainedTask, shuffled_batches

PAD = "<pad>"
#: the target of a position that is not scored
IGNORE = -100
#: padded tokens in one evaluation batch at most (attention over 500-symbol inputs otherwise
#: takes gigabytes)
EVAL_TOKENS = 2 ** 15


@dataclass(frozen=True)
class Tagged:
    tokens: tuple[int, ...]
    #: one per token: the class the model must name there, or IGNORE
    targets: tuple[int, ...]
    #: the length the example is reported under (its input length, or the task's own measure)
    length: int
    #: a further grouping reported separately (e.g. "pairs_8"), or None
    cell: str | None = None

    def __post_init__(self):
        if len(self.tokens) != len(self.targets):
            raise ValueError(f"{len(self.tokens)} tokens but {len(self.targets)} targets")
        if all(t == IGNORE for t in self.targets):
            raise ValueError("an example scores at least one position")


def lengths_from_text(value):
    """``"2..24"``, ``"2 4 8"``, ``"41..50 100"`` or one number → a tuple of lengths (a list or
    tuple passes through): test lengths as ``--set`` gives them, whose commas mean several runs."""
    if isinstance(value, int):
        return (value,)
    if not isinstance(value, str):
        return value
    lengths = []
    for part in value.split():
        low, dots, high = part.partition("..")
        lengths += range(int(low), int(high) + 1) if dots else [int(part)]
    return tuple(lengths)


def length_batches(examples: list, batch_size: int) -> Iterator[list[int]]:
    """Indices of ``examples`` (anything with ``tokens``) in batches of similar length, at most
    ``batch_size`` examples and ``EVAL_TOKENS`` padded tokens each."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].tokens))
    start = 0
    while start < len(order):
        longest = len(examples[order[min(start + batch_size, len(order)) - 1]].tokens)
        chunk = order[start:start + max(1, min(batch_size, EVAL_TOKENS // longest))]
        start += len(chunk)
        yield chunk


class TokenTargetOptions(TaskOptions):
    n_train: int = pydantic.Field(default=20000, ge=1)
    n_valid: int = pydantic.Field(default=500, ge=1)
    #: test examples per (length, cell)
    n_test_per_cell: int = pydantic.Field(default=100, ge=1)
    #: fixes the data; the run's seed fixes initialisation and order, not the data
    data_seed: int = 0


class PositionClassifier(nn.Module):
    """Embedding, backbone, and one linear read-out at every position."""

    def __init__(self, backbone: nn.Module, vocab_size: int, n_outputs: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, backbone.d_model, padding_idx=0)
        self.backbone = backbone
        self.head = nn.Linear(backbone.d_model, n_outputs)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        """Logits at every position, or (``where``: a boolean mask like ``tokens``) only at those
        positions, flattened in row-major order: the read-out costs nothing where nothing is
        scored, which matters with an 8,192-token vocabulary."""
        states = self.backbone(self.embed(tokens), mask)
        return self.head(states if where is None else states[where])


def collate(examples: list[Tagged]) -> Batch:
    tokens, mask = pad([e.tokens for e in examples])  # id 0 is <pad>
    targets = torch.full(tokens.shape, IGNORE, dtype=torch.long)
    for i, e in enumerate(examples):
        targets[i, :len(e.targets)] = torch.tensor(e.targets)
    return {"tokens": tokens, "mask": mask, "targets": targets}


class TokenTargetTask(TrainedTask):
    """Subclasses give ``vocab``, ``n_outputs`` and ``generate``."""

    Options = TokenTargetOptions
    metric_specs = specs(
        MetricSpec("accuracy", "higher", "score", "fraction",
                   "share of scored positions predicted right, overall or at the stored length"),
        MetricSpec("sequence_accuracy", "higher", "score", "fraction",
                   "share of examples with every scored position right, overall or at the stored length"),
        MetricSpec("accuracy_*", "higher", "score", "fraction",
                   "accuracy on the examples of this cell, overall or at the stored length"),
        MetricSpec("sequence_accuracy_*", "higher", "score", "fraction",
                   "sequence accuracy on the examples of this cell, overall or at the stored length"),
        MetricSpec("examples", None, "info", "examples", "held-out examples scored on the split"),
    )
    table_metrics = (("test", "accuracy"), ("test", "sequence_accuracy"), ("valid", "accuracy"))
    dev_metric = "accuracy"
    length_metric = "accuracy"
    vocab: list[str]
    n_outputs: int
    #: False where held-out inputs are meant to repeat training ones (memorisation)
    held_out_unseen: bool = True

    def generate(self, split: str, rng: random.Random, train: TrainConfig) -> list[Tagged]:
        raise NotImplementedError

    @functools.lru_cache(maxsize=8)
    def split(self, name: str, train: TrainConfig) -> list[Tagged]:
        offset = {"train": 0, "valid": 1, "test": 2}[name]
        examples = self.generate(name, random.Random(self.options.data_seed * 1000 + offset), train)
        if name != "train" and self.held_out_unseen:  # held-out examples never occur in training
            seen = {e.tokens for e in self.split("train", train)}
            examples = [e for e in examples if e.tokens not in seen]
        return examples

    def build_model(self, backbone: nn.Module) -> nn.Module:
        return PositionClassifier(backbone, len(self.vocab), self.n_outputs)

    def train_batches(self, train: TrainConfig, generator: torch.Generator) -> Iterator[Batch]:
        examples = self.split("train", train)
        what = getattr(type(self), "registered_name", type(self).__name__)
        for batch in shuffled_batches(examples, train.batch_size, generator, what):
            yield collate(batch)

    def scored_logits(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Logits at the scored positions only (targets ≠ IGNORE), in row-major order: one row per
        entry of ``batch["targets"][batch["targets"] != IGNORE]``."""
        return model(batch["tokens"], batch["mask"], batch["targets"] != IGNORE)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        targets = batch["targets"]
        return F.cross_entropy(self.scored_logits(model, batch).float(), targets[targets != IGNORE])

    def batch_tokens(self, batch: Batch) -> int:
        return int(batch["mask"].sum())

    @torch.no_grad()
    def predict(self, model: nn.Module, examples: list[Tagged], batch_size: int = 256) -> list[tuple[int, int]]:
        """Per example: (scored positions right, scored positions). Batches hold examples of
        similar length, at most ``batch_size`` of them and ``EVAL_TOKENS`` padded tokens."""
        device = next(model.parameters()).device
        out: list[tuple[int, int]] = [(0, 0)] * len(examples)
        for chunk in length_batches(examples, batch_size):
            batch = {k: v.to(device) for k, v in collate([examples[j] for j in chunk]).items()}
            scored = batch["targets"] != IGNORE
            hits = self.scored_logits(model, batch).argmax(-1) == batch["targets"][scored]
            rows = scored.nonzero()[:, 0]
            right = torch.zeros(len(chunk), dtype=torch.long, device=device).index_add_(0, rows, hits.long())
            for j, r, n in zip(chunk, right.tolist(), scored.sum(1).tolist()):
                out[j] = (r, n)
        return out

    def evaluate(self, model, split, train, max_tokens, lengths=True):
        examples = self.split(split, train)
        return accuracy_metrics(split, examples, self.predict(model, examples), lengths)


def accuracy_metrics(split: str, examples: list[Tagged], scores: list[tuple[int, int]],
                     lengths: bool = True) -> list[Metric]:
    """Token accuracy (over scored positions) and sequence accuracy (every scored position right),
    overall, per length, per cell, and per (cell, length)."""
    groups: dict[tuple[str | None, int | None], list[tuple[int, int]]] = defaultdict(list)
    for e, score in zip(examples, scores):
        groups[(None, None)].append(score)
        if lengths:
            groups[(None, e.length)].append(score)
            if e.cell is not None:
                groups[(e.cell, None)].append(score)
                groups[(e.cell, e.length)].append(score)
    metrics = []
    for (cell, length), group in sorted(groups.items(), key=lambda kv: (kv[0][0] or "", -1 if kv[0][1] is None else kv[0][1])):
        suffix = f"_{cell}" if cell else ""
        metrics.append(Metric(split, f"accuracy{suffix}", sum(r for r, _ in group) / sum(n for _, n in group), length))
        metrics.append(Metric(split, f"sequence_accuracy{suffix}", sum(r == n for r, n in group) / len(group), length))
    metrics.append(Metric(split, "examples", len(examples)))
    return metrics
