"""Run configurations: validated, frozen, and identified by the hash of their content."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pydantic

from harness.core.data import sha256_of
from harness.core.references import PREFIX, SIZE, is_reference, reference_model
from harness.core.registry import ARCHITECTURES, TASKS, suggest
from harness.core.train_config import TrainConfig

#: RunConfig fields that are left out of the run id while they are None
OPTIONAL_FIELDS = ("upstream", "inputs")


def input_digests(task: str, task_options: dict) -> dict[str, str] | None:
    """Option → SHA-256 of the file it names, for each of the task's ``input_files`` options that
    names a file (None when none does). A file that does not exist is left out: the task's reader
    reports it, naming it, before anything runs; one that cannot be read is a DataError."""
    out = {}
    for name in TASKS.get(task).input_files:
        value = task_options.get(name)
        if value and Path(str(value)).expanduser().exists():
            out[name] = sha256_of(Path(str(value)).expanduser())
    return out or None


def task_label(task: str, task_options: dict) -> str:
    """The task plus the values of its sweep axes, e.g. ``extrapolation/parity``, and whatever
    the task says sets its runs apart (``lm/bpe8000``: a subword lm)."""
    if task not in TASKS:
        return task
    cls = TASKS.get(task)
    return "/".join([task, *(str(task_options[a]) for a in cls.sweep_axes), *cls.label_parts(task_options)])


def task_arch_defaults(task: str, arch: str) -> dict:
    """The task's backbone defaults that ``arch`` can take (bidirectional only where supported)."""
    if is_reference(arch):
        return {}
    cls = ARCHITECTURES.get(arch)
    return {k: v for k, v in TASKS.get(task).arch_defaults.items() if k in cls.Options.model_fields
            and (k != "bidirectional" or cls.supports_bidirectional)}


class RunConfig(pydantic.BaseModel):
    """Everything that determines a run's result; its hash is the run id."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    arch: str
    task: str
    size: str = "tiny"
    seed: int = pydantic.Field(default=0, ge=0)
    #: resolved device ("cpu", "cuda"); "auto" is resolved before a config is made
    device: str = "cpu"
    arch_options: dict[str, Any] = {}
    task_options: dict[str, Any] = {}
    train: TrainConfig
    #: run id of the run whose trained model this run scores (tasks with an upstream)
    upstream: str | None = None
    #: task option → SHA-256 of the user's file it names (the task's ``input_files``), so the
    #: content, not the path, decides the run; None for runs on the built-in datasets
    inputs: dict[str, str] | None = None

    @pydantic.field_validator("arch")
    @classmethod
    def _known_arch(cls, v):
        if is_reference(v):
            if not reference_model(v).strip():
                raise ValueError(f"{PREFIX} needs a Hugging Face model name or a local path after it ({PREFIX}gpt2)")
            return v
        suggest("architecture", v, [*ARCHITECTURES.names(), f"{PREFIX}<model>"])
        return v

    @pydantic.field_validator("task")
    @classmethod
    def _known_task(cls, v):
        suggest("task", v, TASKS.names())
        return v

    @pydantic.field_validator("size")
    @classmethod
    def _known_size(cls, v):
        from architectures.sizing import preset

        if v != SIZE:
            preset(v)
        return v

    @pydantic.field_validator("device")
    @classmethod
    def _resolved_device(cls, v):
        if v != "cpu" and not v.startswith("cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {v!r}")
        return v

    @pydantic.model_validator(mode="after")
    def _normalise_options(self):
        """Validate options with the arch's and task's own models and store them in full,
        defaults included, so the run id changes whenever what runs changes."""
        task_cls = TASKS.get(self.task)
        unknown = set(self.inputs or {}) - {*task_cls.input_files, *(("model",) if is_reference(self.arch) else ())}
        if unknown:
            raise ValueError(f"inputs: {self.task} takes no input file option {', '.join(sorted(unknown))}")
        if is_reference(self.arch) or self.size == SIZE:
            check_reference(self)
            return self
        arch_cls = ARCHITECTURES.get(self.arch)
        arch_opts = arch_cls.Options(**self.arch_options).model_dump(mode="json")
        task_opts = task_cls.Options(**self.task_options).model_dump(mode="json")
        task_cls.check_arch_options(arch_opts)
        object.__setattr__(self, "arch_options", arch_opts)
        object.__setattr__(self, "task_options", task_opts)
        return self

    @property
    def run_id(self) -> str:
        # optional fields join the hash only when set, so adding one keeps existing ids valid
        unset = {name for name in OPTIONAL_FIELDS if getattr(self, name) is None}
        content = self.model_dump(mode="json", exclude=unset)
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def task_label(self) -> str:
        return task_label(self.task, self.task_options)

    @property
    def label(self) -> str:
        """Row label for tables: the architecture plus every option that differs from its default
        (the task's default, for options the task sets, such as bidirectional for tagging)."""
        if is_reference(self.arch):
            return self.arch
        defaults = ARCHITECTURES.get(self.arch).Options().model_dump(mode="json")
        defaults.update(task_arch_defaults(self.task, self.arch))
        changed = [f"{k}={v}" for k, v in sorted(self.arch_options.items()) if defaults.get(k) != v]
        return f"{self.arch}[{','.join(changed)}]" if changed else self.arch


def expected_work(cfg: RunConfig) -> float:
    """A run's training cost as parameters × tokens (training FLOPs are about 6·N·T): the budget's
    steps taken × batch × length, times the size's non-embedding parameters (12·d²·layers for a fixed
    width) and the backbones the task's model trains (an encoder-decoder's two). Zero for a run that
    trains nothing (a zero-shot score). Relative, not a time: it orders runs and shares the time
    left among them."""
    from architectures.sizing import preset

    task = TASKS.get(cfg.task)
    if is_reference(cfg.arch) or task.kind == "zero_shot":
        return 0.0
    size = preset(cfg.size)
    params = (size.target_params or 12 * size.d_model ** 2 * size.n_layers) * task.backbones
    return float(params) * cfg.train.total_steps * cfg.train.batch_size * cfg.train.seq_len


def scores_references(task: str) -> bool:
    """Whether ``task`` scores a reference model (``hf:<model>``)."""
    return getattr(TASKS.get(task), "scores_references", False)


def reference_tasks() -> list[str]:
    """The tasks that score a reference model."""
    return [name for name in TASKS.names() if scores_references(name)]


def check_reference(cfg: RunConfig) -> None:
    """A reference run: an ``hf:`` model, size ``pretrained``, no backbone options or upstream,
    on a task that scores references, with options that task accepts."""
    if not is_reference(cfg.arch):
        raise ValueError(f"size {SIZE!r} is for reference models ({PREFIX}<model>), not {cfg.arch!r}")
    task_cls = TASKS.get(cfg.task)
    if not scores_references(cfg.task):
        raise ValueError(f"{cfg.arch} is a reference model (a pretrained Hugging Face causal LM): it runs only "
                         f"the zero-shot tasks that score one ({', '.join(reference_tasks())}), not {cfg.task!r}")
    if cfg.size != SIZE or cfg.arch_options or cfg.upstream:
        raise ValueError(f"a reference run ({cfg.arch}) has size {SIZE!r}, no backbone options and no upstream run")
    object.__setattr__(cfg, "task_options", task_cls.Options(**cfg.task_options).model_dump(mode="json"))
