"""Training tokens/s of the harness's loop against a plain PyTorch loop, same model and batches.

    python benchmarks/loop_throughput.py --data-dir ../shared/data [--arch lstm] [--repeats 5]

Both loops run AdamW, the same warm-up/cosine schedule and gradient clipping on the same
WikiText-2 batches from the same fresh initialisation; they alternate, and each figure is the
median over repeats of tokens/s after warm-up steps, timed between device synchronisations.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from harness.config import RunConfig
from harness.core.train_config import TrainConfig
from harness.core.measure import environment, resolve_device, synchronize
from harness.core.registry import TASKS
from harness.runner import build_model
from harness.train import lr_factor, make_optimizer, train_model


def plain_loop(model, batches, train: TrainConfig, device, warmup: int) -> float:
    model.to(device).train()
    optimizer = make_optimizer(model, train)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, train))
    tokens = 0
    for step, batch in enumerate(batches):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
        x = batch.to(device)
        mask = torch.ones_like(x[:, 1:], dtype=torch.bool)
        loss = -model.token_logprobs(x[:, :-1], x[:, 1:], mask).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.clip_norm)
        optimizer.step()
        schedule.step()
        if step >= warmup:
            tokens += x[:, 1:].numel()
    synchronize(device)
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="lstm")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    device = torch.device(resolve_device(args.device))
    warmup = 10  # the harness loop leaves min(10, steps // 10) steps out of its figure
    train = TrainConfig(steps=args.steps + warmup, batch_size=args.batch_size, seq_len=args.seq_len,
                        lr=3e-3, warmup_steps=10, eval_every=10**9, dev_eval_tokens=args.seq_len,
                        log_every=10)
    cfg = RunConfig(arch=args.arch, task="lm", size=args.size, device=device.type, train=train)
    task_cls = TASKS.get("lm")
    task = task_cls(task_cls.Options(), args.data_dir)
    stream = task.train_batches(train, torch.Generator().manual_seed(0))
    batches = [next(stream)["tokens"] for _ in range(train.steps)]

    env = environment(device)
    print(f"# git {env['git_sha']} | {env['device_name']} | torch {env['torch_version']} | fp32 | "
          f"{args.arch}/{args.size} batch {args.batch_size}x{args.seq_len} | {args.steps} timed steps "
          f"after {warmup}, {args.repeats} repeats")
    plain, harness = [], []
    for r in range(args.repeats):
        plain.append(plain_loop(build_model(cfg, task), batches, train, device, warmup))
        result = train_model(build_model(cfg, task), task, train, device, seed=0, progress=False)
        harness.append(result.tokens_per_s)
        print(f"repeat {r}: plain {plain[-1]:,.0f} tok/s, harness {harness[-1]:,.0f} tok/s")
    p, h = statistics.median(plain), statistics.median(harness)
    print(f"median: plain {p:,.0f} tok/s, harness {h:,.0f} tok/s, harness/plain = {h / p:.1%}")


if __name__ == "__main__":
    main()
