"""The one training loop every task uses, its single optimisation step (which ``harness bench``
times too), and the classification of what stops a run or a benchmark cell."""
from __future__ import annotations

import contextlib
import math
import traceback
from dataclasses import dataclass, field
from typing import Callable, ContextManager

import torch
from tqdm.auto import tqdm

from harness.core.train_config import NO_WEIGHT_DECAY, TrainConfig
from harness.core.measure import Stopwatch
from harness.tracking import Tracker


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


#: messages of allocation failures that are not raised as OutOfMemoryError (CPU allocator, cuBLAS)
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")


def failure_status(err: BaseException) -> str:
    """What an exception means for a run (or a benchmark phase): "diverged" (a NaN/inf loss),
    "oom" (out of memory, on a GPU or the CPU) or "failed" (anything else)."""
    if isinstance(err, Diverged):
        return "diverged"
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)) or any(
            m in str(err).lower() for m in _OOM_MESSAGES):
        return "oom"
    return "failed"


def describe_failure(err: BaseException) -> tuple[str, str]:
    """(status, error text to record): the message of a divergence, the type and message of an
    out-of-memory error, the traceback of anything else."""
    status = failure_status(err)
    if status == "diverged":
        return status, str(err)
    if status == "oom":
        return status, f"{type(err).__name__}: {err}"
    return status, "".join(traceback.format_exception(err))


@dataclass
class TrainResult:
    steps: int
    best_step: int
    best_dev: float
    best_state: dict[str, torch.Tensor]
    #: tokens per second over the timed steps (after warm-up, evaluations excluded)
    tokens_per_s: float
    final_loss: float
    dev_history: list[tuple[int, float]] = field(default_factory=list)


def lr_factor(step: int, train: TrainConfig) -> float:
    """Linear warm-up to the peak, then cosine decay to ``min_lr_ratio`` at the last step."""
    if step < train.warmup_steps:
        return (step + 1) / train.warmup_steps
    span = max(1, train.total_steps - train.warmup_steps)
    progress = min(1.0, (step - train.warmup_steps) / span)
    return train.min_lr_ratio + (1 - train.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; matrices decay, vectors (biases, norms) and parameters a backbone exempts do not.

    ``foreach``: the multi-tensor update, which torch picks by itself only on a GPU. On the CPU it
    gives the same values bit for bit as the per-tensor loop and halves the optimiser's time."""
    params = [p for p in model.parameters() if p.requires_grad]
    decays = [p.dim() >= 2 and not getattr(p, NO_WEIGHT_DECAY, False) for p in params]
    groups = [{"params": [p for p, d in zip(params, decays) if d], "weight_decay": train.weight_decay},
              {"params": [p for p, d in zip(params, decays) if not d], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=train.lr, betas=(train.beta1, train.beta2), foreach=True)


def autocast(device: torch.device, train: TrainConfig):
    if device.type == "cuda" and train.precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_schedule(optimizer: torch.optim.Optimizer, train: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up then cosine decay (``lr_factor``), stepped once per training step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, train))


def train_step(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer,
               schedule, clip_norm: float, amp: Callable[[], ContextManager]) -> torch.Tensor:
    """One optimisation step, the same for every run and for ``harness bench``: the forward pass
    and loss (``loss_fn()``) under ``amp()``, backward, gradient clipping to ``clip_norm``, the
    optimiser's step, the schedule's step. Returns the loss, detached (still on the device)."""
    with amp():
        loss = loss_fn()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    schedule.step()
    return loss.detach()


def train_model(model: torch.nn.Module, task, train: TrainConfig, device: torch.device,
                seed: int, tracker: Tracker | None = None, progress: bool = True) -> TrainResult:
    """Train ``model`` on ``task`` for ``train.total_steps`` steps; keep the best dev checkpoint."""
    tracker = tracker or Tracker()
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    optimizer = make_optimizer(model, train)
    schedule = make_schedule(optimizer, train)
    batches = task.train_batches(train, generator)
    lower_is_better = task.dev_lower_is_better()

    total = train.total_steps
    warmup = min(10, total // 10)  # steps left out of the throughput figure
    watch = Stopwatch(device)
    timed_tokens = 0
    pending: list[torch.Tensor] = []  # losses not yet copied to the host
    best = (math.inf, 0, {})
    history: list[tuple[int, float]] = []
    last_loss = math.nan
    bar = tqdm(total=total, disable=not progress, desc=f"{task.registered_name}", leave=False)
    for step in range(1, total + 1):
        if step == warmup + 1:
            watch.start()
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        pending.append(train_step(model, lambda: task.loss(model, batch), optimizer, schedule,
                                  train.clip_norm, lambda: autocast(device, train)))
        if watch.running:
            timed_tokens += task.batch_tokens(batch)

        evaluate_now = step % train.eval_every == 0 or step == total
        if step % train.log_every == 0 or evaluate_now:
            # one host copy per interval keeps the device busy between log points
            values = torch.stack(pending).float().tolist()
            first = step - len(values) + 1
            pending.clear()
            for i, v in enumerate(values):
                if not math.isfinite(v):
                    watch.stop()
                    raise Diverged(f"training loss became {v} at step {first + i}")
            last_loss = values[-1]
            tracker.log_losses(first, values, schedule.get_last_lr()[0])
            bar.update(len(values))
            bar.set_postfix(loss=f"{last_loss:.3f}")
        if evaluate_now:
            was_timing = watch.running
            watch.stop()
            model.eval()
            with autocast(device, train):
                metrics = task.evaluate(model, task.dev_split, train, train.dev_eval_tokens,
                                        lengths=False)
            model.train()
            score = task.dev_score(metrics, train)
            history.append((step, score))
            tracker.log_metrics(step, metrics)
            key = score if lower_is_better else -score
            if math.isfinite(score) and key < best[0]:
                state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                best = (key, step, state)
            if was_timing:
                watch.start()
    watch.stop()
    bar.close()
    if not best[2]:
        raise Diverged("the dev metric was never finite")
    key, best_step, state = best
    return TrainResult(
        steps=total, best_step=best_step, best_dev=key if lower_is_better else -key,
        best_state=state, tokens_per_s=timed_tokens / watch.elapsed if watch.elapsed else math.nan,
        final_loss=last_loss, dev_history=history)
