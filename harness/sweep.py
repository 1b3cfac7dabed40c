"""A sweep is a list of run configs: expand the command line into one, then run what is not done."""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import pydantic
import yaml

from harness.config import RunConfig, input_digests, reference_tasks, scores_references, task_arch_defaults
from harness.core.references import SIZE as REFERENCE_SIZE, is_reference, reference_digest
from harness.core.data import search_path
from harness.core.train_config import BUDGETS, TrainConfig
from harness.core.registry import ARCHITECTURES, TASKS, UnknownName, selected_tasks, suggest
from harness.runner import execute, make_task
from harness.screen import Progress, duration, run_name
from harness.store import RunStore


def parse_overrides(items: list[str]) -> dict[str, list[Any]]:
    """``["lr=1e-3,3e-3", "position=rope"]`` → ``{"lr": [0.001, 0.003], "position": ["rope"]}``.
    Values are read as YAML scalars (numbers, booleans, strings); commas give several values."""
    out: dict[str, list[Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value[,value...], got {item!r}")
        out[key.strip()] = [yaml.safe_load(v) for v in value.split(",")]
    return out


def _apply(key: str, value, arch: str, task: str, train: dict, arch_opts: dict, task_opts: dict) -> bool:
    """Put one override where it belongs (``train.``/``arch.``/``task.`` prefixes force a place)."""
    scope, _, name = key.rpartition(".")
    places = {"train": (TrainConfig.model_fields, train),
              "arch": ({} if is_reference(arch) else ARCHITECTURES.get(arch).Options.model_fields, arch_opts),
              "task": (TASKS.get(task).Options.model_fields, task_opts)}
    if scope:
        suggest("override scope", scope, places)
        places = {scope: places[scope]}
    for fields, target in places.values():
        if name in fields:
            target[name] = value
            return True
    return False


def _configs(arch: str, task: str, size: str, seed: int, device: str, budget: str,
             settings: dict[str, Any], used: set[str], weights: str | None = None) -> list[RunConfig]:
    """The validated config, preceded by the upstream run's when the task starts from one;
    records in ``used`` which settings found a place. ``weights`` pins a reference model's
    weights (``reference_digest``)."""
    task_cls = TASKS.get(task)
    before: list[RunConfig] = []
    upstream = None
    if is_reference(arch):  # a pretrained model, scored as it is, whatever the budget
        size, seed = REFERENCE_SIZE, 0
        train = TASKS.get(task_cls.upstream).budget("smoke", None)
        arch_opts: dict = {}
    else:
        if task_cls.upstream:  # starts from the model of the matching upstream run
            *before, up = _configs(arch, task_cls.upstream, size, seed, device, budget, settings, used)
            try:
                task_cls.check_upstream_options(up.task_options)
            except ValueError as err:
                raise ValueError(f"invalid configuration for {arch}/{task}: {err}") from None
            before.append(up)
            upstream = up.run_id
        train = task_cls.budget(budget, dict(before[-1].train) if before else None)
        arch_opts = dict(before[-1].arch_options) if before else task_arch_defaults(task, arch)
    task_opts: dict = {}
    for key, value in settings.items():
        # training settings leave a reference's config alone: nothing of it is trained
        if _apply(key, value, arch, task, dict(train) if is_reference(arch) else train,
                  {} if before else arch_opts, task_opts):
            used.add(key)
    where = f"{arch}/{task}"
    fields = dict(arch=arch, task=task, size=size, seed=seed, device=device, arch_options=arch_opts,
                  task_options=task_opts, train=_validated(TrainConfig, where, **train), upstream=upstream)
    cfg = _validated(RunConfig, where, **fields)
    inputs = input_digests(task, cfg.task_options)  # the user's files by content: an edit is a new run
    if weights:  # so are a reference's weights
        inputs = {**(inputs or {}), "model": weights}
    if inputs:
        cfg = _validated(RunConfig, where, **fields, inputs=inputs)
    return [*before, cfg]


def _validated(model: type[pydantic.BaseModel], where: str, **fields):
    """``model(**fields)``; a validation error says which configuration it concerns."""
    try:
        return model(**fields)
    except pydantic.ValidationError as err:
        raise ValueError(f"invalid configuration for {where}:\n{err}") from None


def expand(archs: list[str], tasks: list[str], size: str = "tiny", seeds: list[int] = (0,),
           budget: str = "smoke", device: str = "cpu",
           overrides: dict[str, list[Any]] | None = None) -> list[RunConfig]:
    """Every (arch, task, override combination, task sweep axis value, seed) as a validated
    config; runs that others depend on come first."""
    suggest("budget", budget, BUDGETS)
    for arch in archs:
        if not is_reference(arch):
            ARCHITECTURES.get(arch)
    for task in tasks:
        TASKS.get(task)
    overrides = overrides or {}
    configs, used = [], set()
    references = list(filter(is_reference, archs))
    if references and not any(map(scores_references, tasks)):
        raise ValueError(f"{references[0]} is a reference model (a pretrained Hugging Face causal LM): it runs only "
                         f"the zero-shot tasks that score one ({', '.join(reference_tasks())}); none was asked for")
    weights = {arch: reference_digest(arch) for arch in references}
    for arch, task in itertools.product(archs, tasks):
        if is_reference(arch) and not scores_references(task):
            continue  # a reference runs only the tasks that score one
        grid = dict(overrides)
        for axis, values in TASKS.get(task).sweep_axes.items():
            if not any(k.rpartition(".")[2] == axis for k in overrides):
                grid[axis] = list(values)
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            for seed in seeds:
                configs += _configs(arch, task, size, seed, device, budget, dict(zip(keys, values)), used,
                                    weights.get(arch))
    unused = [k for k in overrides if k not in used]
    if unused:
        fields = set(TrainConfig.model_fields)
        for name in set(archs) - set(filter(is_reference, archs)):
            fields |= set(ARCHITECTURES.get(name).Options.model_fields)
        for name in set(tasks):
            fields |= set(TASKS.get(name).Options.model_fields)
        raise UnknownName("setting", unused[0].rpartition(".")[2], fields)
    unique = {cfg.run_id: cfg for cfg in configs}  # an override may not apply to every arch
    return list(unique.values())


@dataclass
class SweepSummary:
    ran: dict[str, int] = field(default_factory=dict)
    skipped: int = 0

    def add(self, status: str) -> None:
        self.ran[status] = self.ran.get(status, 0) + 1


def task_key(cfg: RunConfig) -> tuple[str, str]:
    """Configs with the same key read the same data."""
    return cfg.task, json.dumps(cfg.task_options, sort_keys=True)


#: (task key, input files, the folders a dataset is looked for in) whose data this process has loaded without error
_CHECKED: set = set()


def check_datasets(configs: list[RunConfig], data_dir=None) -> None:
    """Load every dataset the configs need (once per task and options), so a missing or malformed
    one is reported before any run is claimed and the store stays untouched."""
    for cfg in configs:
        key = (*task_key(cfg), json.dumps(cfg.inputs, sort_keys=True), *map(str, search_path(data_dir)))
        if key not in _CHECKED:
            make_task(cfg, data_dir)
            _CHECKED.add(key)


def run_sweep(configs: list[RunConfig], store: RunStore, data_dir=None, tracker_factory=None,
              retry_failed: bool = False, progress: bool = True, log=print, poll_s: float = 1.0,
              check: bool = True) -> SweepSummary:
    """Run every config not already recorded, those others depend on first. A run whose upstream
    run another process (a worker beside this one) is still running waits for it. ``check``:
    load every dataset first (a worker leaves that to the process that started it)."""
    if check:
        check_datasets(configs, data_dir)
    summary = SweepSummary()
    progress_line = Progress(configs, store)
    pending = list(configs)
    while pending:
        waiting = []
        for cfg in pending:
            if cfg.upstream and store.running_elsewhere(cfg.upstream):
                waiting.append(cfg)
                continue
            if not store.claim(cfg, retry_failed=retry_failed):
                log(progress_line.skipped(cfg), flush=True)
                summary.skipped += 1
                continue
            started = time.perf_counter()
            try:
                status = execute(cfg, store, data_dir, tracker_factory, progress)
            except KeyboardInterrupt:  # wherever it lands after the claim, the run is given back
                store.release(cfg.run_id)
                raise
            log(progress_line.line(run_name(cfg), cfg.run_id,
                                   f"{status} in {duration(time.perf_counter() - started)}"), flush=True)
            summary.add(status)
        if waiting and len(waiting) == len(pending):
            time.sleep(poll_s)
        pending = waiting
    return summary


class SweepFile(pydantic.BaseModel):
    """A sweep as a YAML file: every combination of archs × tasks × sizes × seeds × changes,
    each on top of the baseline settings. Settings name any config field, as ``--set`` does."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    archs: list[str] = pydantic.Field(min_length=1)
    #: task names, or [all]
    tasks: list[str] = pydantic.Field(min_length=1)
    sizes: list[str] = pydantic.Field(default=["tiny"], min_length=1)
    seeds: list[int] = pydantic.Field(default=[0], min_length=1)
    budget: str = "smoke"
    device: str = "auto"
    #: setting → one value, for every run
    baseline: dict[str, Any] = {}
    #: setting → several values; one run per combination
    changes: dict[str, list[Any]] = {}

    @pydantic.model_validator(mode="after")
    def _disjoint(self):
        both = set(self.baseline) & set(self.changes)
        if both:
            raise ValueError(f"settings in both baseline and changes: {', '.join(sorted(both))}")
        empty = [k for k, v in self.changes.items() if not v]
        if empty:
            raise ValueError(f"changes without values: {', '.join(empty)}")
        return self


def load_sweep_file(path) -> SweepFile:
    """Read and validate a sweep file (plain, or gzipped when named ``.gz``); every problem is a
    DataError naming the file (and the line, for YAML syntax)."""
    from pathlib import Path

    from harness.core.data import DataError, read_text

    path = Path(path)
    text = read_text(path)  # missing, unreadable, bad gzip, not UTF-8: DataError
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise DataError(path, f"not valid YAML: {getattr(err, 'problem', None) or err}",
                        mark.line + 1 if mark else None) from None
    except RecursionError:
        raise DataError(path, "not valid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as err:  # a scalar YAML cannot build: 2020-99-99
        raise DataError(path, f"not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise DataError(path, "a sweep file is a mapping (archs, tasks, sizes, seeds, baseline, changes)")
    try:
        return SweepFile.model_validate(data)
    except pydantic.ValidationError as err:
        raise DataError(path, f"invalid sweep file:\n{err}") from None
    except RecursionError:  # an alias cycle or deep nesting the validator cannot walk
        raise DataError(path, "invalid sweep file: nested too deeply") from None


def expand_sweep(sweep: SweepFile, device: str) -> list[RunConfig]:
    """The sweep's runs, identical (ids included) to the equivalent ``harness run`` commands."""
    overrides = {k: [v] for k, v in sweep.baseline.items()} | dict(sweep.changes)
    tasks = selected_tasks(sweep.tasks)
    configs: dict[str, RunConfig] = {}
    for size in sweep.sizes:
        for cfg in expand(sweep.archs, tasks, size=size, seeds=sweep.seeds, budget=sweep.budget,
                          device=device, overrides=overrides):
            configs.setdefault(cfg.run_id, cfg)
    return list(configs.values())
