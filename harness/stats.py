"""The numbers of a table: per row and column the mean, spread and seeds of the stored values,
and the ranking of a column (its best row, and the rows Welch's t-test cannot tell from it), in
the direction its metric's spec gives."""
from __future__ import annotations

import json
import math
import warnings

import pandas as pd

from harness.rows import EFFICIENCY, columns, row_labels, task_class, task_labels, upstream_configs
from harness.store import FINISHED, RunStore

STATS = ("std", "ci95")
#: significance level of the test against the best row
ALPHA = 0.05


def summarise(store: RunStore, run_ids: list[str] | None = None,
              ignore: frozenset[str] = frozenset()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(values, runs): one row per (label, size, task, column) with mean, std, n, and the runs."""
    runs = store.runs()
    metrics = store.metrics()
    if run_ids is not None:
        runs = runs[runs.run_id.isin(run_ids)]
    # a run another process finished between the two reads has metrics but no row yet: wait for it
    metrics = metrics[metrics.run_id.isin(runs.run_id)]
    labels = row_labels(runs, ignore, upstreams=upstream_configs(store))
    tasks = task_labels(runs)
    runs = runs.assign(label=runs.run_id.map(labels), task=runs.run_id.map(tasks))
    metrics = metrics.assign(label=metrics.run_id.map(labels), task=metrics.run_id.map(tasks))
    train_length = {r.run_id: json.loads(r.info or "{}").get("train_length") for r in runs.itertuples()}
    metrics = metrics.assign(train_length=metrics.run_id.map(train_length))
    keep = []
    for row in metrics.itertuples():
        cls = task_class(row.task)
        heading = columns(row.task).get((row.split, row.metric)) if cls is not None else None
        if heading and (row.split, row.metric) not in EFFICIENCY and cls.table_at_train_length:
            wanted = row.length == row.train_length
        else:
            wanted = pd.isna(row.length)
        keep.append(heading if heading and wanted and row.status == FINISHED else None)
    metrics = metrics.assign(column=keep).dropna(subset=["column"])
    values = (metrics.groupby(["label", "size", "task", "column"], sort=False)["value"]
              .agg(["mean", "std", "count", list]).rename(columns={"list": "samples"}).reset_index())
    return values, runs


def spread(std: float, count: int, stat: str) -> float:
    """± part of a cell: the standard deviation, or the half-width of the 95% t-interval."""
    if count < 2:
        return float("nan")
    if stat == "std":
        return std
    from scipy import stats

    return float(stats.t.ppf(0.975, count - 1) * std / math.sqrt(count))


def rank_column(samples: dict, better: str | None) -> dict:
    """{row: "best" | "tie"}: the row(s) with the best mean (``better``: "higher" or "lower",
    a metric spec's direction; None ranks nothing), and the rows whose seeds are not
    significantly different from the best row's (Welch's t-test, p ≥ ALPHA; needs ≥ 2 seeds
    on both sides)."""
    if better is None or not samples:
        return {}
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher', 'lower' or None, got {better!r}")
    means = {row: sum(v) / len(v) for row, v in samples.items() if v and all(map(math.isfinite, v))}
    if not means:
        return {}
    best_mean = (max if better == "higher" else min)(means.values())
    best_rows = [row for row, m in means.items() if m == best_mean]
    marks = {row: "best" for row in best_rows}
    reference = samples[best_rows[0]]
    for row, m in means.items():
        if row in marks or len(reference) < 2 or len(samples[row]) < 2:
            continue
        from scipy import stats  # only where there is something to test (it takes a second to load)

        with warnings.catch_warnings():  # nearly constant samples: scipy warns, the p-value stands
            warnings.simplefilter("ignore", RuntimeWarning)
            p = stats.ttest_ind(reference, samples[row], equal_var=False).pvalue
        if not p < ALPHA:  # nan: both constant and equal
            marks[row] = "tie"
    return marks
