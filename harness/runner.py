"""Execute one run: build, train, evaluate, measure, record — whatever happens, it is recorded."""
from __future__ import annotations

import json
import time
import traceback
from pathlib import Path

import torch

from architectures.sizing import build_backbone
from harness.config import RunConfig
from harness.measure import environment, inference_tokens_per_s, peak_memory, reset_peak_memory
from harness.registry import TASKS
from harness.store import FINISHED, Metric, RunStore
from harness.tracking import Tracker
from harness.train import Diverged, autocast, train_model

CHECKPOINT = "best.pt"


def make_task(cfg: RunConfig, data_dir):
    cls = TASKS.get(cfg.task)
    return cls(cls.Options(**cfg.task_options), data_dir)


def build_model(cfg: RunConfig, task) -> torch.nn.Module:
    """The model for ``cfg``, initialised from its seed."""
    torch.manual_seed(cfg.seed)
    return task.build_model(build_backbone(cfg.arch, cfg.size, cfg.arch_options))


def load_trained(store: RunStore, run_id: str, data_dir=None, task=None) -> tuple[RunConfig, torch.nn.Module]:
    """A finished run's config and model with its best checkpoint loaded (weights only)."""
    status = store.status(run_id)
    if status != FINISHED:
        raise LookupError(f"run {run_id} is {status or 'not in the store'}; only finished runs have a model")
    cfg = _stored_config(store, run_id)
    task = task or make_task(cfg, data_dir)
    if cfg.upstream and task.fine_tunes:  # shaped like the model it was tuned from
        model = _tuned(store, cfg, task, make_task(_stored_config(store, cfg.upstream), data_dir))
    else:
        model = build_model(cfg, task)
    state = torch.load(store.run_dir(run_id) / CHECKPOINT, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return cfg, model.eval()


def _stored_config(store: RunStore, run_id: str) -> RunConfig:
    return RunConfig.model_validate_json((store.run_dir(run_id) / "config.json").read_text())


def _tuned(store: RunStore, cfg: RunConfig, task, upstream) -> torch.nn.Module:
    """The model ``task`` fine-tunes: the upstream run's trained model, made ready by the task."""
    _, pretrained = load_trained(store, cfg.upstream, task=upstream)
    torch.manual_seed(cfg.seed)
    return task.fine_tune_model(pretrained, upstream)


def _model_to_train(cfg: RunConfig, task, store: RunStore, upstream, info: dict) -> torch.nn.Module:
    """A fresh model, or, for a task that fine-tunes, the upstream run's trained model."""
    if not cfg.upstream:
        return build_model(cfg, task)
    if upstream is None:
        raise LookupError(f"run {cfg.run_id} fine-tunes run {cfg.upstream}, whose task was not loaded")
    info["upstream"] = cfg.upstream
    return _tuned(store, cfg, task, upstream)


def _train_and_evaluate(cfg: RunConfig, task, run_dir: Path, device, tracker, progress,
                        info: dict, store: RunStore, upstream) -> list[Metric]:
    model = _model_to_train(cfg, task, store, upstream, info)
    metrics = _describe(model, info)
    result = train_model(model, task, cfg.train, device, cfg.seed, tracker, progress)
    torch.save(result.best_state, run_dir / CHECKPOINT)
    model.load_state_dict(result.best_state)
    model.eval()
    with autocast(device, cfg.train):
        for split in task.final_splits:
            metrics += task.evaluate(model, split, cfg.train, cfg.train.final_eval_tokens)
        # the training batch shape, so training and inference figures compare
        batch = next(task.train_batches(cfg.train, torch.Generator().manual_seed(cfg.seed)))
        infer = inference_tokens_per_s(model, task, batch, device)
    info["dev_history"] = result.dev_history
    info.update(task.info())
    return metrics + [
        Metric("train", "tokens_per_s", result.tokens_per_s),
        Metric("train", "best_step", result.best_step),
        Metric("train", "final_loss", result.final_loss),
        Metric("inference", "tokens_per_s", infer),
    ]


def _score_pretrained(cfg: RunConfig, task, upstream, store: RunStore, device,
                      info: dict) -> list[Metric]:
    if upstream is None:
        raise LookupError(f"run {cfg.run_id} scores run {cfg.upstream}, whose task was not loaded")
    _, model = load_trained(store, cfg.upstream, task=upstream)
    model.to(device)
    metrics = _describe(model, info)
    info["upstream"] = cfg.upstream
    info.update(task.info())
    with autocast(device, cfg.train):
        for split in task.final_splits:
            metrics += task.evaluate_pretrained(model, upstream, split, cfg.train)
    return metrics


def _describe(model, info: dict) -> list[Metric]:
    """Backbone facts for the run's info (a model with several backbones describes itself)."""
    info["backbone"] = model.describe() if hasattr(model, "describe") else model.backbone.describe()
    return [Metric("run", "params_non_embedding", info["backbone"]["params_non_embedding"]),
            Metric("run", "params_total", sum(p.numel() for p in model.parameters()))]


def execute(cfg: RunConfig, task, store: RunStore, tracker_factory=None, progress: bool = True,
            upstream=None) -> str:
    """Run a claimed config (train and evaluate it, fine-tune its upstream run's model, or, for a
    zero-shot task, score that model) and record its outcome, whatever happens; returns the status. An
    interrupt propagates: whoever claimed the run gives it back."""
    run_dir = store.run_dir(cfg.run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
    device = torch.device(cfg.device)
    started = time.perf_counter()
    info: dict = {"env": environment(device), "task_version": task.version,
                  "dtype": "bf16-autocast" if device.type == "cuda" and cfg.train.precision == "bf16" else "fp32",
                  "batch_shape": [cfg.train.batch_size, cfg.train.seq_len], "train_length": cfg.train.seq_len}
    metrics: list[Metric] = []
    tracker = Tracker()
    try:
        tracker = tracker_factory(cfg, run_dir) if tracker_factory else Tracker()
        reset_peak_memory(device)
        if task.scores_only():
            metrics = _score_pretrained(cfg, task, upstream, store, device, info)
        else:
            metrics = _train_and_evaluate(cfg, task, run_dir, device, tracker, progress, info, store,
                                          upstream)
        memory, info["memory_kind"] = peak_memory(device)
        metrics.append(Metric("run", "peak_memory_mb", memory))
        status, error = FINISHED, None
    except Diverged as err:
        status, error = "diverged", str(err)
    except (torch.OutOfMemoryError, MemoryError) as err:
        status, error = "oom", f"{type(err).__name__}: {err}"
        if device.type == "cuda":
            torch.cuda.empty_cache()
    except Exception:  # recorded, and the sweep goes on
        status, error = "failed", traceback.format_exc()
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
