"""How much one gradient of each backbone changes with the number of CPU threads.

A run is bitwise reproducible on one machine at one thread count. With another thread count the
matrix products sum in another order: the gradient moves in its last bits, and training amplifies
that over its steps. This prints, per registered backbone at `tiny`, the largest difference
between two gradients of the same weights and batch: at 1 thread twice, and at 1 against N threads.

    python benchmarks/thread_reproducibility.py --threads 2
"""
from __future__ import annotations

import argparse

import torch

from architectures.sizing import build_backbone
from harness.core.registry import ARCHITECTURES


def gradient(arch: str, threads: int, size: str, batch: int, length: int) -> torch.Tensor:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    backbone = build_backbone(arch, size)
    torch.manual_seed(1)
    x = torch.randn(batch, length, backbone.d_model)
    mask = torch.ones(batch, length, dtype=torch.bool)
    backbone(x, mask).pow(2).mean().backward()
    return torch.cat([p.grad.flatten() for p in backbone.parameters() if p.grad is not None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="the thread count compared with 1")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=8, help="tokens a sequence (agreement trains on 8)")
    args = parser.parse_args()
    print(f"{'backbone':18s} {'1 vs 1 thread':>14s} {f'1 vs {args.threads} threads':>15s} {'largest |grad|':>15s}")
    for arch in sorted(ARCHITECTURES.names()):
        one = gradient(arch, 1, args.size, args.batch, args.length)
        again = gradient(arch, 1, args.size, args.batch, args.length)
        more = gradient(arch, args.threads, args.size, args.batch, args.length)
        print(f"{arch:18s} {float((one - again).abs().max()):14.1e} {float((one - more).abs().max()):15.1e} "
              f"{float(one.abs().max()):15.1e}")


if __name__ == "__main__":
    main()
