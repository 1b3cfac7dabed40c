"""Scores per length bucket (BLEU by source length, F1 by sentence length, ...): one bucketing for
every task that reports a metric against length."""
from __future__ import annotations

from typing import Callable, Sequence

from harness.core.metrics import Metric


def by_length(split: str, name: str, lengths: Sequence[int], edges: Sequence[int],
              score: Callable[[list[int]], float], count: str | None = "sentences_by_length") -> list[Metric]:
    """``name`` and ``count`` (how many items; None: no count metric) for each non-empty bucket:
    the bucket of ``edge`` holds the items whose length is at most ``edge`` and more than the
    previous edge (0 for the first), and ``score(indices)`` scores its items (indices in
    increasing order); both metrics are stored at length ``edge``."""
    metrics = []
    low = 0
    for edge in edges:
        chosen = [i for i, n in enumerate(lengths) if low < n <= edge]
        if chosen:
            metrics.append(Metric(split, name, score(chosen), edge))
            if count is not None:
                metrics.append(Metric(split, count, len(chosen), edge))
        low = edge
    return metrics
