"""Paper tables from the run store: rows are architectures, columns task metrics, mean ± std over
seeds. The public entry: ``make_table``, ``length_table`` and ``export``; the parts live by job in
``harness.rows`` (row and column identity, labels), ``harness.protocol`` (dev scores, best-lr),
``harness.stats`` (summaries, spread, Welch ranking), ``harness.render`` (md/LaTeX/CSV, bench
table) and ``harness.captions``."""
from __future__ import annotations

import pandas as pd

from harness.captions import caption, environments
from harness.core.registry import TASKS, suggest
from harness.protocol import PROTOCOLS, best_lr, dev_scores
from harness.render import (FORMATS, bench_label, bench_table, cell, check_format, latex_escape, latex_table,
                            number, render)
from harness.rows import EFFICIENCY, column_spec, columns, length_metric, row_labels, row_params, task_labels
from harness.stats import ALPHA, STATS, rank_column, spread, summarise
from harness.store import FINISHED, RunStore

__all__ = ["make_table", "length_table", "export", "bench_table", "bench_label", "best_lr", "dev_scores",
           "rank_column", "summarise", "row_labels", "task_labels", "length_metric", "environments",
           "latex_escape", "latex_table", "number", "FORMATS", "PROTOCOLS", "STATS", "ALPHA", "EFFICIENCY"]


def make_table(store: RunStore, fmt: str = "md", run_ids: list[str] | None = None,
               task: str | None = None, protocol: str = "all", stat: str = "std",
               efficiency: bool = False) -> str:
    """Rows: architecture, size and parameter count; columns: each task's metrics, plus
    efficiency columns when the table holds one task (``task`` keeps the tasks whose label
    starts with it). Cells: mean ± std (or ± the 95% confidence interval) over seeds; the best
    in each column in bold, and marked † those not significantly different from it (Welch's
    t-test across seeds, p ≥ 0.05). Protocol ``all`` reports every setting; ``best-lr`` each row
    at its best learning rate (by dev score). ``efficiency``: only the efficiency columns, for
    every task that trains."""
    check_format(fmt)
    suggest("protocol", protocol, PROTOCOLS)
    suggest("statistic", stat, STATS)
    if protocol == "best-lr":
        run_ids, chosen = best_lr(store, run_ids)
        values, runs = summarise(store, run_ids, ignore=frozenset({"lr"}))
        picks = "; ".join(f"{label} {t}: {lr:g}" for (label, t, _), lr in sorted(chosen.items()))
        stated = f"protocol: best learning rate per row and task by mean dev score over seeds ({picks})"
    else:
        values, runs = summarise(store, run_ids)
        stated = "protocol: every setting reported"
    if task is not None:
        chosen = [t for t in set(runs.task) if t == task or t.startswith(f"{task}/")]
        if not chosen:
            suggest("task", task, sorted(set(runs.task)))
        runs = runs[runs.task.isin(chosen)]
        values = values[values.task.isin(chosen)]
    if runs.empty:
        return "no runs recorded yet"
    if efficiency:
        trains = [t for t in set(runs.task) if TASKS.get(t.split("/")[0]).kind != "zero_shot"]
        runs, values = runs[runs.task.isin(trains)], values[values.task.isin(trains)]
        values = values[values.column.isin(EFFICIENCY.values()) & (values.column != "params")]
    elif len(set(runs.task)) > 1:
        values = values[~values.column.isin(EFFICIENCY.values())]
    failed = (runs[runs.status != FINISHED].groupby(["label", "size", "task"]).status
              .agg(lambda s: ", ".join(f"{n} {st}" for st, n in s.value_counts().items())))
    rows = sorted({(r.label, r.size) for r in runs.itertuples()})
    tasks = sorted(set(runs.task))
    if efficiency:
        order = [(t, h) for t in tasks for h in EFFICIENCY.values() if h != "params"]
    else:
        order = [(t, h) for t in tasks for h in columns(t).values()
                 if h != "params" and (len(tasks) == 1 or h not in EFFICIENCY.values())]
    params = row_params(store, runs)
    index = pd.MultiIndex.from_tuples([(label, size, params.get((label, size), "—")) for label, size in rows],
                                      names=["arch", "size", "params"])
    table = pd.DataFrame(index=index, columns=[f"{t}: {h}" for t, h in order], dtype=object)
    position = {(label, size): i for i, (label, size) in enumerate(rows)}
    numeric, samples = {}, {}
    for v in values.itertuples():
        col = f"{v.task}: {v.column}"
        if col not in table.columns:
            continue
        half = spread(v.std, v.count, stat)
        numeric[(v.label, v.size, col)] = (v.mean, v.std if v.count > 1 else float("nan"), v.count)
        samples.setdefault(col, {})[position[(v.label, v.size)]] = v.samples
        table.iloc[position[(v.label, v.size)], table.columns.get_loc(col)] = cell(v.mean, half, v.count)
    for (label, size, task), note in failed.items():
        for t, h in order:
            if t == task:
                col = table.columns.get_loc(f"{t}: {h}")
                shown = table.iloc[position[(label, size)], col]
                table.iloc[position[(label, size)], col] = f"{shown} [{note}]" if isinstance(shown, str) else note
    marks = {}
    heading_of = {f"{t}: {h}": (t, h) for t, h in order}
    for col, by_row in samples.items():
        spec = column_spec(*heading_of[col])  # the direction is the metric's spec, never its name
        for row, mark in rank_column(by_row, spec.better if spec else None).items():
            marks[(row, col)] = mark
    table = table.dropna(axis=1, how="all").fillna("—")
    text = f"{stated}; {caption(runs, stat, samples)}"
    if fmt != "csv":
        return render(table.reset_index(), text, fmt, marks)
    flat = []
    for (label, size, col), (mean, std, n) in numeric.items():
        flat.append({"arch": label, "size": size, "column": col, "mean": mean, "std": std, "n": n})
    wide = pd.DataFrame(flat).pivot_table(index=["arch", "size"], columns="column",
                                          values=["mean", "std"], dropna=False)
    wide.columns = [f"{col} {stat}" for stat, col in wide.columns]
    return wide[sorted(wide.columns)].reset_index().to_csv(index=False)


def length_table(store: RunStore, task: str, metric: str | None = None, split: str = "test",
                 fmt: str = "md") -> str:
    """Rows: architecture; columns: the length buckets of ``metric`` on ``split`` for one task
    label (e.g. ``extrapolation/parity``); cells: mean ± std over seeds."""
    check_format(fmt)
    runs = store.runs()
    runs = runs[runs.status == FINISHED]
    tasks = task_labels(runs)
    suggest("task", task, sorted({t for t in tasks.values() if length_metric(t)}))
    metric = metric or length_metric(task)
    labels = row_labels(runs)
    m = store.metrics()
    m = m[m.run_id.map(tasks) == task]
    suggest("metric", metric, sorted(set(m[m.length.notna()].metric)))
    m = m[(m.metric == metric) & (m.split == split) & m.length.notna()]
    m = m.assign(label=m.run_id.map(labels), length=m.length.astype(int))
    stats = m.groupby(["label", "length"]).value.agg(["mean", "std", "count"])
    if fmt == "csv":
        return stats.reset_index().to_csv(index=False)
    cells = stats.apply(lambda r: cell(r["mean"], r["std"], r["count"]), axis=1)
    table = cells.unstack("length").fillna("—")
    table.columns = [str(c) for c in table.columns]
    spec = TASKS.get(task.split("/")[0]).spec(metric)
    reading = ", ".join(x for x in (f"{spec.better} is better" if spec.better else "", spec.unit) if x)
    text = f"{task}: {split} {metric} ({reading}) by length (columns); mean ± std over seeds"
    return render(table.reset_index(), text, fmt)


def export(store: RunStore, fmt: str = "csv") -> str:
    """Every stored number, one row per run × metric × split × length."""
    frame = store.metrics()
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "jsonl":
        return frame.to_json(orient="records", lines=True)
    raise ValueError(f"unknown export format {fmt!r} (choose from csv, jsonl)")
