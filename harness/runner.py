"""Execute one run: build, train, evaluate, measure, record — whatever happens, it is recorded."""
from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from architectures.sizing import build_backbone
from harness.config import RunConfig
from harness.core.references import is_reference, reference_model
from harness.core.measure import environment, inference_tokens_per_s, peak_memory, reset_peak_memory
from harness.core.registry import TASKS
from harness.core.metrics import Metric
from harness.store import FINISHED, RunStore
from harness.tracking import Tracker
from harness.train import autocast, describe_failure, train_model
from tasks.base import Upstream

CHECKPOINT = "best.pt"


def make_task(cfg: RunConfig, data_dir):
    """A task object for ``cfg`` that has loaded its data (to check it, or to export an upstream)."""
    cls = TASKS.get(cfg.task)
    return cls(cls.Options(**cfg.task_options), data_dir)


def task_for_run(cfg: RunConfig, store: RunStore, data_dir):
    """A new task object for one run of ``cfg``, built with its upstream run's model where its
    kind needs it: one per run, so nothing one run computes reaches another (each task module
    caches the loading of its files, so this is cheap)."""
    cls = TASKS.get(cfg.task)
    return cls.for_run(cls.Options(**cfg.task_options), data_dir, lambda: load_upstream(store, cfg, data_dir))


def build_model(cfg: RunConfig, task) -> torch.nn.Module:
    """The model for ``cfg``, initialised from its seed."""
    torch.manual_seed(cfg.seed)
    return task.build_model(build_backbone(cfg.arch, cfg.size, cfg.arch_options))


def load_trained(store: RunStore, run_id: str, data_dir=None) -> tuple[RunConfig, torch.nn.Module]:
    """A finished run's config and model with its best checkpoint loaded (weights only)."""
    status = store.status(run_id)
    if status != FINISHED:
        raise LookupError(f"run {run_id} is {status or 'not in the store'}; only finished runs have a model")
    cfg = _stored_config(store, run_id)
    model = _initial_model(cfg, task_for_run(cfg, store, data_dir))
    state = torch.load(store.run_dir(run_id) / CHECKPOINT, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return cfg, model.eval()


def load_upstream(store: RunStore, cfg: RunConfig, data_dir=None) -> Upstream:
    """What ``cfg``'s task receives from its upstream run: the trained model, and what the
    upstream task exports to read it (its vocabulary)."""
    if not cfg.upstream:
        raise LookupError(f"run {cfg.run_id} ({cfg.task}) has no upstream run")
    upstream_cfg, model = load_trained(store, cfg.upstream, data_dir)
    return make_task(upstream_cfg, data_dir).as_upstream(model)


def _stored_config(store: RunStore, run_id: str) -> RunConfig:
    return RunConfig.model_validate_json((store.run_dir(run_id) / "config.json").read_text())


def _initial_model(cfg: RunConfig, task) -> torch.nn.Module:
    """The model a trained run starts from, as its task's kind decides: a fresh one from the
    run's seed, or the upstream run's trained model made ready by a fine-tuned task."""
    torch.manual_seed(cfg.seed)
    return task.initial_model(lambda: build_model(cfg, task))


def _train_and_evaluate(cfg: RunConfig, task, run: "_Run") -> list[Metric]:
    model = _initial_model(cfg, task)
    if cfg.upstream:
        run.info["upstream"] = cfg.upstream
    metrics = _describe(model, run.info)
    result = train_model(model, task, cfg.train, run.device, cfg.seed, run.tracker, run.progress)
    torch.save(result.best_state, run.dir / CHECKPOINT)
    model.load_state_dict(result.best_state)
    model.eval()
    with autocast(run.device, cfg.train):
        for split in task.final_splits:
            metrics += task.evaluate(model, split, cfg.train, cfg.train.final_eval_tokens)
        # the training batch shape, so training and inference figures compare
        batch = next(task.train_batches(cfg.train, torch.Generator().manual_seed(cfg.seed)))
        infer = inference_tokens_per_s(model, task, batch, run.device)
    run.info["dev_history"] = result.dev_history
    run.info.update(task.info())
    return metrics + [
        Metric("train", "tokens_per_s", result.tokens_per_s),
        Metric("train", "best_step", result.best_step),
        Metric("train", "final_loss", result.final_loss),
        Metric("inference", "tokens_per_s", infer),
    ]


def _score_upstream(cfg: RunConfig, task, run: "_Run") -> list[Metric]:
    if is_reference(cfg.arch):
        from tasks.lm_eval.reference import load_reference

        upstream = load_reference(reference_model(cfg.arch), run.device)
        run.info["reference"] = reference_model(cfg.arch)
    else:
        upstream = load_upstream(run.store, cfg, run.data_dir)
        run.info["upstream"] = cfg.upstream
    upstream.model.to(run.device)
    metrics = _describe(upstream.model, run.info)
    run.info.update(task.info())
    with autocast(run.device, cfg.train):
        for split in task.final_splits:
            metrics += task.evaluate_upstream(upstream, split)
    return metrics


@dataclass(frozen=True)
class _Run:
    """What one execution of a run needs besides its config and task."""

    store: RunStore
    data_dir: object
    dir: Path
    device: torch.device
    tracker: Tracker
    progress: bool
    info: dict


#: what each kind of task does in a run
BY_KIND = {"trained": _train_and_evaluate, "fine_tuned": _train_and_evaluate,
           "zero_shot": _score_upstream}


def _describe(model, info: dict) -> list[Metric]:
    """Backbone facts for the run's info (a model with several backbones describes itself)."""
    info["backbone"] = model.describe() if hasattr(model, "describe") else model.backbone.describe()
    return [Metric("run", "params_non_embedding", info["backbone"]["params_non_embedding"]),
            Metric("run", "params_total", sum(p.numel() for p in model.parameters()))]


def _declared(name: str, task_cls, metrics: list[Metric]) -> list[Metric]:
    """The metrics, once every one has a spec (direction, role, unit); a run storing a metric its
    task does not declare fails, naming both."""
    for m in metrics:
        try:
            task_cls.spec(m.name)
        except KeyError:
            raise LookupError(f"task {name!r} stores metric {m.name!r} (split {m.split!r}) but declares "
                              f"no spec for it: add a MetricSpec to its metric_specs") from None
    return metrics


def _interrupted(err: BaseException) -> bool:
    """Whether an interrupt (Ctrl-C, or SIGTERM raised as one) set off this error."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def execute(cfg: RunConfig, store: RunStore, data_dir=None, tracker_factory=None,
            progress: bool = True) -> str:
    """Run a claimed config (train and evaluate it, fine-tune its upstream run's model, or, for a
    zero-shot task, score that model) and record its outcome, whatever happens; returns the status. An
    interrupt propagates: whoever claimed the run gives it back."""
    run_dir = store.run_dir(cfg.run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
    device = torch.device(cfg.device)
    started = time.perf_counter()
    info: dict = {"env": environment(device),
                  "dtype": "bf16-autocast" if device.type == "cuda" and cfg.train.precision == "bf16" else "fp32",
                  "batch_shape": [cfg.train.batch_size, cfg.train.seq_len], "train_length": cfg.train.seq_len}
    metrics: list[Metric] = []
    tracker = Tracker()
    try:
        task = task_for_run(cfg, store, data_dir)
        info["task_version"] = task.version
        tracker = tracker_factory(cfg, run_dir) if tracker_factory else Tracker()
        reset_peak_memory(device)
        run = _Run(store, data_dir, run_dir, device, tracker, progress, info)
        metrics = _declared(cfg.task, type(task), BY_KIND[task.kind](cfg, task, run))
        memory, info["memory_kind"] = peak_memory(device)
        metrics.append(Metric("run", "peak_memory_mb", memory))
        status, error = FINISHED, None
    except Exception as err:  # recorded (diverged, oom or failed), and the sweep goes on
        if _interrupted(err):  # a library turned Ctrl-C/SIGTERM into its own error: still a stop
            raise KeyboardInterrupt(str(err)) from err
        status, error = describe_failure(err)
        if status == "oom" and device.type == "cuda":
            torch.cuda.empty_cache()
    metrics.append(Metric("run", "wall_time_s", time.perf_counter() - started))
    (run_dir / "result.json").write_text(json.dumps(
        {"status": status, "error": error, "info": info,
         "metrics": [m.__dict__ for m in metrics]}, indent=2, default=str))
    store.finish(cfg.run_id, status, metrics, info, error)
    try:
        tracker.finish(status, metrics, info)
    except Exception:  # tracking must never lose a result that is already stored
        traceback.print_exc()
    return status
