"""Shared machinery for tasks that read a sequence and name one class at its end (agreement,
parity, bracket matching, associative recall): generated splits, a classifier head on any
backbone, and accuracy per length and per cell."""
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
from harness.core.train_config import TrainConfig
from harness.core.metrics import Metric, MetricSpec, specs
from tasks.base import Batch, TrainedTask, TaskOptions, shuffled_batches

PAD = "<pad>"


@dataclass(frozen=True)
class Example:
    tokens: tuple[int, ...]
    label: int
    #: the length the example is reported under (sequence length, or subject–verb distance)
    length: int
    #: a further grouping reported separately (e.g. "attractors_2"), or None
    cell: str | None = None


class ClassificationOptions(TaskOptions):
    n_train: int = pydantic.Field(default=20000, ge=1)
    n_valid: int = pydantic.Field(default=1000, ge=1)
    #: test examples per (length, cell)
    n_test_per_cell: int = pydantic.Field(default=100, ge=1)
    #: fixes the data; the run's seed fixes initialisation and order, not the data
    data_seed: int = 0


class SequenceClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, vocab_size: int, n_classes: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, backbone.d_model, padding_idx=0)
        self.backbone = backbone
        self.head = nn.Linear(backbone.d_model, n_classes)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Class logits read from the state at each sequence's last real token."""
        states = self.backbone(self.embed(tokens), mask)
        last = mask.sum(1) - 1
        return self.head(states[torch.arange(len(tokens), device=tokens.device), last])


def collate(examples: list[Example]) -> Batch:
    tokens, mask = pad([e.tokens for e in examples])  # id 0 is <pad>
    return {"tokens": tokens, "mask": mask, "labels": torch.tensor([e.label for e in examples])}


class ClassificationTask(TrainedTask):
    """Subclasses give ``vocab`` (index 0 = <pad>), ``n_classes`` and ``generate``."""

    Options = ClassificationOptions
    metric_specs = specs(
        MetricSpec("accuracy", "higher", "score", "fraction",
                   "share of examples classified right, overall or at the stored length"),
        MetricSpec("examples", None, "info", "examples", "held-out examples scored on the split"),
    )
    table_metrics = (("test", "accuracy"), ("valid", "accuracy"))
    dev_metric = "accuracy"
    length_metric = "accuracy"
    vocab: list[str]
    n_classes: int

    def generate(self, split: str, rng: random.Random, train: TrainConfig) -> list[Example]:
        raise NotImplementedError

    @functools.lru_cache(maxsize=8)
    def split(self, name: str, train: TrainConfig) -> list[Example]:
        offset = {"train": 0, "valid": 1, "test": 2}[name]
        examples = self.generate(name, random.Random(self.options.data_seed * 1000 + offset), train)
        if name != "train":  # held-out examples never occur in training
            seen = {e.tokens for e in self.split("train", train)}
            examples = [e for e in examples if e.tokens not in seen]
        return examples

    def build_model(self, backbone: nn.Module) -> SequenceClassifier:
        return SequenceClassifier(backbone, len(self.vocab), self.n_classes)

    def train_batches(self, train: TrainConfig, generator: torch.Generator) -> Iterator[Batch]:
        examples = self.split("train", train)
        what = getattr(type(self), "registered_name", type(self).__name__)
        for batch in shuffled_batches(examples, train.batch_size, generator, what):
            yield collate(batch)

    def loss(self, model: SequenceClassifier, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(model(batch["tokens"], batch["mask"]).float(), batch["labels"])

    def batch_tokens(self, batch: Batch) -> int:
        return int(batch["mask"].sum())

    def predict(self, model, examples: list[Example], batch_size: int = 256) -> list[int]:
        return predict(model, examples, batch_size)

    def evaluate(self, model, split, train, max_tokens, lengths=True):
        examples = self.split(split, train)
        predictions = self.predict(model, examples)
        return accuracy_metrics(split, examples, predictions, lengths)


@torch.no_grad()
def predict(model: SequenceClassifier, examples: list[Example], batch_size: int = 256) -> list[int]:
    """The class ``model`` names for each example, in batches of similar lengths."""
    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].tokens))
    predictions = [0] * len(examples)
    for i in range(0, len(order), batch_size):
        chunk = order[i:i + batch_size]
        batch = collate([examples[j] for j in chunk])
        logits = model(batch["tokens"].to(device), batch["mask"].to(device))
        for j, p in zip(chunk, logits.argmax(-1).tolist()):
            predictions[j] = p
    return predictions


def accuracy_metrics(split: str, examples: list[Example], predictions: list[int],
                     lengths: bool = True) -> list[Metric]:
    """Accuracy overall, per length, per cell, and per (cell, length)."""
    groups: dict[tuple[str, int | None], list[bool]] = defaultdict(list)
    for e, p in zip(examples, predictions):
        right = p == e.label
        groups[("accuracy", None)].append(right)
        if lengths:
            groups[("accuracy", e.length)].append(right)
            if e.cell is not None:
                groups[(f"accuracy_{e.cell}", None)].append(right)
                groups[(f"accuracy_{e.cell}", e.length)].append(right)
    metrics = [Metric(split, name, sum(v) / len(v), length) for (name, length), v in sorted(
        groups.items(), key=lambda kv: (kv[0][0], -1 if kv[0][1] is None else kv[0][1]))]
    metrics.append(Metric(split, "examples", len(examples)))
    return metrics
