"""The task contract: data from real files, a head around any backbone, loss and metrics."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pydantic
import torch
from torch import nn

from harness.config import TrainConfig
from harness.store import Metric

Batch = dict[str, torch.Tensor]


class TaskOptions(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class Task:
    """Subclasses register with ``@TASKS.register(name)`` and fill in the methods below."""

    Options: type[TaskOptions] = TaskOptions
    #: stored with every result; bump when data, metric or protocol change
    version: str = "1"
    #: budgets by name: TrainConfig fields
    budgets: dict[str, dict] = {}
    #: (split, metric) pairs shown by ``harness table``
    table_metrics: tuple[tuple[str, str], ...] = ()
    #: True: the table reads them at the training length; False: their overall value (no length)
    table_at_train_length: bool = False
    #: the test metric stored per length bucket (``harness table --by length``, plots); None: none
    length_metric: str | None = None
    #: the dev metric used to pick the best checkpoint, and whether lower is better
    dev_metric: tuple[str, bool] = ("loss", True)
    #: name of the task whose trained model this task starts from (None: trains from scratch)
    upstream: str | None = None
    #: with an upstream: True trains that model further (``fine_tune_model``), False only scores it
    fine_tunes: bool = False
    #: how a zero-shot task scores a model, stated in table captions ("" for trained tasks)
    scoring: str = ""
    #: part of ``--tasks all`` (False: the task needs input of its own, or is a superset)
    in_all: bool = True
    #: backbone options this task defaults to, where the backbone has them (e.g. bidirectional)
    arch_defaults: dict = {}
    #: option → values that a sweep runs over unless the option is set explicitly
    sweep_axes: dict[str, tuple] = {}
    #: split scored during training to pick the best checkpoint; splits scored at the end
    dev_split: str = "valid"
    final_splits: tuple[str, ...] = ("valid", "test")

    def __init__(self, options: TaskOptions, data_dir: str | Path | None):
        self.options = options
        self.data_dir = data_dir

    def info(self) -> dict:
        """Facts about the task's data stored with every result (e.g. a file's checksum)."""
        return {}

    @classmethod
    def scores_only(cls) -> bool:
        """True for zero-shot tasks: they score an upstream model and train nothing."""
        return cls.upstream is not None and not cls.fine_tunes

    @classmethod
    def check_arch_options(cls, arch_options: dict) -> None:
        """Reject backbone options the task cannot use (e.g. a bidirectional language model)."""

    @classmethod
    def dev_score(cls, metrics: list[Metric], train: TrainConfig) -> float:
        """The dev metric at the training length (or with no length)."""
        name = cls.dev_metric[0]
        for m in metrics:
            if m.split == cls.dev_split and m.name == name and m.length in (None, train.seq_len):
                return m.value
        raise KeyError(f"{cls.__name__}.evaluate returned no {name!r} on {cls.dev_split!r}")

    def build_model(self, backbone: nn.Module) -> nn.Module:
        raise NotImplementedError

    def fine_tune_model(self, model: nn.Module, upstream: "Task") -> nn.Module:
        """For tasks that fine-tune: the model to train, made from ``upstream``'s trained ``model``."""
        raise NotImplementedError

    def train_batches(self, train: TrainConfig, generator: torch.Generator) -> Iterator[Batch]:
        """Endless training batches in an order fixed by ``generator``."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def batch_tokens(self, batch: Batch) -> int:
        """Tokens a batch counts for throughput."""
        raise NotImplementedError

    def evaluate_pretrained(self, model: nn.Module, upstream: "Task", split: str,
                            train: TrainConfig) -> list[Metric]:
        """For tasks with an ``upstream``: metrics of ``upstream``'s trained ``model``."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, split: str, train: TrainConfig, max_tokens: int | None,
                 lengths: bool = True) -> list[Metric]:
        """Metrics on ``split`` (at most ``max_tokens`` of it); with ``lengths`` also per length
        bucket, as ``Metric.length``."""
        raise NotImplementedError


def shuffled_batches(items: list, batch_size: int, generator: torch.Generator, what: str) -> Iterator[list]:
    """Endless lists of ``batch_size`` items: every epoch a new order drawn from ``generator``,
    the last partial batch left out."""
    if len(items) < batch_size:
        raise ValueError(f"{what}: {len(items)} training examples, fewer than a batch of {batch_size}")
    while True:
        order = torch.randperm(len(items), generator=generator).tolist()
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield [items[j] for j in order[i:i + batch_size]]
