"""The task contract, in three kinds:

* ``TrainedTask``: data from real files, a head around any backbone, loss and metrics; trained
  from scratch.
* ``FineTunedTask``: a trained task that starts from the model of an upstream run (e.g. ``lm``)
  and trains it further with its own budget.
* ``ZeroShotTask``: scores the model of an upstream run and trains nothing.

Tasks with an upstream receive it as an ``Upstream`` value (the trained model and what its task
exports to read it, such as the vocabulary), never as the upstream task object.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Iterator, Literal

import pydantic
import torch
from torch import nn

from harness.core.data import DataError
from harness.core.metrics import RUN_METRICS, Metric, MetricSpec, find_spec
from harness.core.registry import TASKS
from harness.core.train_config import TrainConfig

Batch = dict[str, torch.Tensor]
Kind = Literal["trained", "fine_tuned", "zero_shot"]


class TaskOptions(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    #: options added after run ids were first made: each joins the dump, and so the run id, only
    #: when it is set (not None), so runs from before the option keep their ids
    added_later: ClassVar[tuple[str, ...]] = ()

    @pydantic.model_serializer(mode="wrap")
    def _added_later_only_when_set(self, handler):
        data = handler(self)
        for name in self.added_later:
            if data.get(name) is None:
                data.pop(name, None)
        return data


@dataclass(frozen=True)
class Upstream:
    """What a fine-tuned or zero-shot task gets from the run it starts from."""

    #: the upstream run's trained model (best checkpoint), in eval mode
    model: nn.Module
    #: the upstream task's vocabulary, in id order (``lm``: WikiText-2's words by frequency)
    vocab: tuple[str, ...] = ()
    #: anything else the upstream task exports about its data
    extra: dict = field(default_factory=dict)


class Task:
    """What every kind shares. Subclass one of the kinds, register with ``@TASKS.register(name)``
    and fill in its methods. A task object serves one run: the engine builds a new one for each."""

    kind: ClassVar[Kind]
    Options: type[TaskOptions] = TaskOptions
    #: stored with every result; bump when data, metric or protocol change
    version: str = "1"
    #: every metric the task reports, by name (direction, role, unit); see harness.core.metrics
    metric_specs: ClassVar[dict[str, MetricSpec]] = {}
    #: (split, metric) pairs shown by ``harness table``
    table_metrics: tuple[tuple[str, str], ...] = ()
    #: True: the table reads them at the training length; False: their overall value (no length)
    table_at_train_length: bool = False
    #: the test metric stored per length bucket (``harness table --by length``, plots); None: none
    length_metric: str | None = None
    #: the split whose ``length_metric`` the by-length table shows
    length_split: str = "test"
    #: part of ``--tasks all`` (False: the task needs input of its own, or is a superset)
    in_all: bool = True
    #: backbone options this task defaults to, where the backbone has them (e.g. bidirectional)
    arch_defaults: dict = {}
    #: option → values that a sweep runs over unless the option is set explicitly
    sweep_axes: dict[str, tuple] = {}

    #: options that, when set, always label the rows of the runs that score this task's models
    #: (an ``lm``'s ``bpe_vocab``), varying in a table or not
    label_options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def label_parts(cls, options: dict) -> tuple[str, ...]:
        """What, beyond its sweep axes, sets a run's numbers apart from the task's others so that
        they never share a table column (their unit differs), as ``options`` (stored) say."""
        return ()
    #: splits scored at the end
    final_splits: tuple[str, ...] = ("valid", "test")
    #: the task whose trained model this one starts from (fine-tuned and zero-shot kinds)
    upstream: ClassVar[str | None] = None
    #: a zero-shot task that also scores a pretrained Hugging Face model (``hf:<model>``), given
    #: as an upstream whose ``extra["reference"]`` holds it (``tasks/lm_eval/reference.py``)
    scores_references: ClassVar[bool] = False
    #: options that name files of the user's own (``--set path=FILE``): the SHA-256 of each file
    #: given joins the run id (RunConfig.inputs), so an edited file is a new run
    input_files: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: TaskOptions, data_dir: str | Path | None):
        self.options = options
        self.data_dir = data_dir

    @classmethod
    def for_run(cls, options: TaskOptions, data_dir, upstream: Callable[[], Upstream]) -> "Task":
        """The task object for one run; ``upstream()`` loads the upstream run's model, for the
        kinds that are built with it."""
        return cls(options, data_dir)

    def info(self) -> dict:
        """Facts about the task's data stored with every result (e.g. a file's checksum)."""
        return {}

    @classmethod
    def spec(cls, name: str) -> MetricSpec:
        """The spec of a metric this task's runs store (the engine's own metrics included): the
        task's exact name, the engine's, then the task's patterns (``f1_*``), the engine's."""
        spec = find_spec(name, cls.metric_specs, RUN_METRICS)
        if spec is not None:
            return spec
        raise KeyError(f"task {getattr(cls, 'registered_name', cls.__name__)!r} declares no spec "
                       f"for metric {name!r}")

    @classmethod
    def check_arch_options(cls, arch_options: dict) -> None:
        """Reject backbone options the task cannot use (e.g. a bidirectional language model)."""

    @classmethod
    def check_upstream_options(cls, options: dict) -> None:
        """Reject an upstream run whose task options (stored) this task cannot read."""

    @classmethod
    def budget(cls, name: str, upstream: dict | None) -> dict:
        """The TrainConfig fields of budget ``name``; ``upstream``: the upstream run's."""
        raise NotImplementedError

    @classmethod
    def scored_part(cls, options: dict) -> str:
        """How much of its data a run with these task options scores, when not all of it (stated
        in table captions); "" when it scores everything."""
        return ""


class TrainedTask(Task):
    """Trained from scratch: the engine builds a backbone, ``build_model`` puts a head on it, and
    the one training loop runs ``train_batches`` through ``loss``."""

    kind = "trained"
    #: budgets by name: TrainConfig fields
    budgets: dict[str, dict] = {}
    #: the dev metric that picks the best checkpoint; which way is better comes from its spec
    dev_metric: str = "loss"
    #: split scored during training to pick the best checkpoint
    dev_split: str = "valid"
    #: True where ``evaluate`` scores only the first ``max_tokens`` of a split (``dev_eval_tokens``,
    #: ``final_eval_tokens``); tasks that always score whole splits leave it False
    cuts_splits: ClassVar[bool] = False
    #: backbones of the run's size that the model trains (an encoder-decoder: 2); weighs the run's
    #: expected work (``harness.config.expected_work``), which orders the runs workers claim
    backbones: ClassVar[int] = 1

    @classmethod
    def budget(cls, name: str, upstream: dict | None) -> dict:
        if name not in cls.budgets:
            task = getattr(cls, "registered_name", cls.__name__)
            raise ValueError(f"task {task!r} has no {name!r} budget (it has: {', '.join(cls.budgets)})")
        return dict(cls.budgets[name])

    @classmethod
    def dev_lower_is_better(cls) -> bool:
        """Whether a lower dev metric is a better checkpoint, as the metric's spec says."""
        return not cls.spec(cls.dev_metric).higher_is_better

    @classmethod
    def dev_score(cls, metrics: list[Metric], train: TrainConfig) -> float:
        """The dev metric at the training length (or with no length)."""
        name = cls.dev_metric
        for m in metrics:
            if m.split == cls.dev_split and m.name == name and m.length in (None, train.seq_len):
                return m.value
        raise KeyError(f"{cls.__name__}.evaluate returned no {name!r} on {cls.dev_split!r}")

    def build_model(self, backbone: nn.Module) -> nn.Module:
        raise NotImplementedError

    def initial_model(self, fresh: Callable[[], nn.Module]) -> nn.Module:
        """The model training starts from: ``fresh()``, a new model from the run's seed."""
        return fresh()

    def as_upstream(self, model: nn.Module) -> Upstream:
        """What a task that starts from this task's trained ``model`` receives (tasks that serve
        as an upstream override this)."""
        raise NotImplementedError(f"{type(self).__name__} is no upstream task: it exports nothing")

    def train_batches(self, train: TrainConfig, generator: torch.Generator) -> Iterator[Batch]:
        """Endless training batches in an order fixed by ``generator``."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def batch_tokens(self, batch: Batch) -> int:
        """Tokens a batch counts for throughput."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, split: str, train: TrainConfig, max_tokens: int | None,
                 lengths: bool = True) -> list[Metric]:
        """Metrics on ``split`` (at most ``max_tokens`` of it); with ``lengths`` also per length
        bucket, as ``Metric.length``."""
        raise NotImplementedError


class FineTunedTask(TrainedTask):
    """Starts from the model of the matching ``upstream`` run and trains it with its own budget."""

    kind = "fine_tuned"
    upstream: ClassVar[str]

    def __init__(self, options: TaskOptions, data_dir, pretrained: Upstream | None = None):
        super().__init__(options, data_dir)
        #: the upstream run's model and vocabulary; None only for a task built to check its data
        self.pretrained = pretrained

    @classmethod
    def for_run(cls, options: TaskOptions, data_dir, upstream: Callable[[], Upstream]) -> "Task":
        return cls(options, data_dir, upstream())

    @classmethod
    def check_arch_options(cls, arch_options: dict) -> None:
        TASKS.get(cls.upstream).check_arch_options(arch_options)

    def build_model(self, backbone: nn.Module) -> nn.Module:
        raise TypeError(f"{type(self).__name__} fine-tunes an upstream model; it builds none of its own")

    def initial_model(self, fresh: Callable[[], nn.Module]) -> nn.Module:
        return self.fine_tune_model(self._pretrained())

    def _pretrained(self) -> Upstream:
        if self.pretrained is None:
            raise LookupError(f"{type(self).__name__} was built without its upstream run's model "
                              "(build it with pretrained=..., as the engine does for a run)")
        return self.pretrained

    def fine_tune_model(self, upstream: Upstream) -> nn.Module:
        """The model to train, made from the upstream run's trained model."""
        raise NotImplementedError


class ZeroShotTask(Task):
    """Scores the model of the matching ``upstream`` run; trains nothing, so its runs record the
    upstream run's budget."""

    kind = "zero_shot"
    upstream: ClassVar[str]
    #: how it scores a model, stated in table captions
    scoring: str = ""

    @classmethod
    def check_arch_options(cls, arch_options: dict) -> None:
        TASKS.get(cls.upstream).check_arch_options(arch_options)

    @classmethod
    def budget(cls, name: str, upstream: dict | None) -> dict:
        return dict(upstream)

    def evaluate_upstream(self, upstream: Upstream, split: str) -> list[Metric]:
        """Metrics of the upstream run's trained model on ``split``."""
        raise NotImplementedError


def user_file(task: str, option: str, value: str) -> Path:
    """The file of the user's own that ``--set option=FILE`` names; a DataError naming it when
    there is none."""
    path = Path(value).expanduser()
    if not path.is_file():
        raise DataError(path, f"the {task} {option} file (--set {option}=...) does not exist")
    return path


def shuffled_batches(items: list, batch_size: int, generator: torch.Generator, what: str) -> Iterator[list]:
    """Endless lists of ``batch_size`` items: every epoch a new order drawn from ``generator``,
    the last partial batch left out."""
    if len(items) < batch_size:
        raise ValueError(f"{what}: {len(items)} training examples, fewer than a batch of {batch_size}")
    while True:
        order = torch.randperm(len(items), generator=generator).tolist()
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield [items[j] for j in order[i:i + batch_size]]
