"""Paper tables from the run store: rows are architectures, columns task metrics, mean ± std over
seeds. The public entry: ``make_table``, ``length_table``, ``mad_table`` (the MAD score) and
``export``; the parts live by job in
``harness.rows`` (row and column identity, labels), ``harness.protocol`` (dev scores, best-lr),
``harness.stats`` (summaries, spread, Welch ranking), ``harness.render`` (md/LaTeX/CSV, bench
table) and ``harness.captions``."""
from __future__ import annotations

import json
import math
from collections import Counter

import pandas as pd

from harness.captions import caption
from harness.core.registry import TASKS, suggest
from harness.protocol import PROTOCOLS, best_lr, dev_better, dev_scores
from harness.render import cell, check_format, number, params_text, render
from harness.rows import (EFFICIENCY, column_spec, columns, length_metric, row_labels, row_params, task_class,
                          task_labels)
from harness.stats import STATS, rank_column, spread, summarise
from harness.store import FINISHED, RunStore



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
        values = values[values.column.isin(EFFICIENCY.values())]
    elif len(set(runs.task)) > 1:
        values = values[~values.column.isin(EFFICIENCY.values())]
    failed = (runs[runs.status != FINISHED].groupby(["label", "size", "task"]).status
              .agg(lambda s: ", ".join(f"{n} {st}" for st, n in s.value_counts().items())))
    rows = sorted({(r.label, r.size) for r in runs.itertuples()})
    tasks = sorted(set(runs.task))
    # a parameter count means one model only within one task (heads differ, mt adds a decoder):
    # a one-task table gives it per row; the efficiency table per task; the all-tasks table not
    one_model = len(tasks) == 1
    if efficiency:
        order = [(t, h) for t in tasks for h in EFFICIENCY.values() if h != "params" or not one_model]
    else:
        order = [(t, h) for t in tasks for h in columns(t).values()
                 if h != "params" and (one_model or h not in EFFICIENCY.values())]
    if one_model:
        params = row_params(store, runs)
        index = pd.MultiIndex.from_tuples([(label, size, params.get((label, size), "—")) for label, size in rows],
                                          names=["arch", "size", "params"])
    else:
        index = pd.MultiIndex.from_tuples(rows, names=["arch", "size"])
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
        text = params_text(v.mean) if v.column == "params" else cell(v.mean, half, v.count)
        table.iloc[position[(v.label, v.size)], table.columns.get_loc(col)] = text
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
    if not one_model:
        stated += ("; params: non-embedding parameters of each task's model" if efficiency else
                   "; params: per task, in the one-task tables and the efficiency table (each task's "
                   "model has its own head, mt's a decoder too, so one count per backbone would match none)")
    text = f"{stated}; {caption(runs, stat, samples)}"
    if fmt != "csv":
        return render(table.reset_index(), text, fmt, marks)
    flat = []
    for (label, size, col), (mean, std, n) in numeric.items():
        flat.append({"arch": label, "size": size, "column": col, "mean": mean, "std": std, "n": n})
    if not flat:  # rows, but no number in any column (e.g. only failed runs)
        return pd.DataFrame(rows, columns=["arch", "size"]).to_csv(index=False)
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


#: what MAD's protocol sweeps for every setting (mad-lab: lr {1e-4, 5e-4, 1e-3} × weight decay {0, 0.1})
MAD_GRID = ("lr", "weight_decay")


def _mad_runs(store: RunStore, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per ``mad`` run: ``setting`` (best-lr's row label with the weight decay also left
    out: the backbone and the setting), ``backbone`` (with the task's options left out too), size,
    seed, task name, ``options`` (the setting, as JSON), grid point, dev score and test accuracy."""
    options = frozenset(f"task.{k}" for k in TASKS.get("mad").Options.model_fields)
    settings = row_labels(runs, ignore=frozenset(MAD_GRID))
    backbones = row_labels(runs, ignore=frozenset(MAD_GRID) | options)
    dev = dev_scores(store)
    m = store.metrics()
    test = m[(m.split == "test") & (m.metric == "accuracy") & m.length.isna()].set_index("run_id").value
    rows = []
    for r in runs.itertuples():
        config = json.loads(r.config)
        task_options = dict(config["task_options"])
        rows.append({"run_id": r.run_id, "setting": settings[r.run_id], "backbone": backbones[r.run_id],
                     "size": r.size, "seed": r.seed, "name": task_options.pop("name"),
                     "options": json.dumps(task_options, sort_keys=True),
                     **{k: config["train"][k] for k in MAD_GRID},
                     "dev": dev.get(r.run_id, math.nan), "test": test.get(r.run_id, math.nan)})
    return pd.DataFrame(rows)


def _at_best_points(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs of each setting at its grid point with the best mean dev score over seeds (a
    setting none of whose runs has a dev score is left out)."""
    higher = dev_better("mad") == "higher"
    kept = []
    for _, group in frame.groupby(["setting", "name", "size"]):
        means = group.groupby(list(MAD_GRID)).dev.mean().dropna()
        if not means.empty:
            lr, weight_decay = means.idxmax() if higher else means.idxmin()
            kept.append(group[(group.lr == lr) & (group.weight_decay == weight_decay)])
    return pd.concat(kept) if kept else frame.iloc[:0]


def _seedwise(parts: list[dict[int, float]]) -> dict[int, float]:
    """Seed → the mean over ``parts`` (each seed → value), for the seeds every part has."""
    seeds = set.intersection(*(set(p) for p in parts)) if parts else set()
    return {s: sum(p[s] for p in parts) / len(parts) for s in sorted(seeds)}


def mad_table(store: RunStore, fmt: str = "md", run_ids: list[str] | None = None, stat: str = "std") -> str:
    """The MAD score (Poli et al. 2024) per backbone and size. Every setting of a ``mad`` task (its
    baseline, or a change of one of its options) is taken at the learning rate × weight decay with
    the best mean dev score over seeds (best-lr's rule, with the weight decay also left out of the
    row) and scored by its test accuracy there; a task's column is the mean over its settings, the
    MAD score the mean over the task columns (as mad-lab's benchmark.py). Cells: mean ± std (or
    ± ci95) over seeds of the same means taken seed by seed, over the seeds every setting averaged
    has; a cell missing settings that other rows have says how many it averages and is not ranked;
    bold and † as in ``make_table``."""
    check_format(fmt)
    suggest("statistic", stat, STATS)
    runs = store.runs()
    runs = runs[runs.task == "mad"]
    if run_ids is not None:
        runs = runs[runs.run_id.isin(run_ids)]
    if runs.empty:
        return "no mad runs recorded yet"
    frame = _mad_runs(store, runs)
    best = _at_best_points(frame)
    chosen = best.dropna(subset=["test"])
    tests = {key: dict(zip(g.seed, g.test)) for key, g in chosen.groupby(["backbone", "size", "name", "options"])}
    names = [n for n in TASKS.get("mad").sweep_axes["name"] if n in set(frame.name)]
    expected = {n: frame[frame.name == n].options.nunique() for n in names}  # settings any row has
    rows = sorted({(r.backbone, r.size) for r in frame.itertuples()})
    headings = ["MAD score", *names]
    table = pd.DataFrame(index=pd.MultiIndex.from_tuples(rows, names=["arch", "size"]), columns=headings,
                         dtype=object)
    samples: dict[str, dict[int, list[float]]] = {}
    numeric = []
    for i, (backbone, size) in enumerate(rows):
        parts = {n: [v for (b, s, name, _), v in tests.items() if (b, s, name) == (backbone, size, n)] for n in names}
        by_task = {n: _seedwise(parts[n]) for n in names}
        cells = {"MAD score": (_seedwise([v for v in by_task.values() if v]), sum(map(len, parts.values())),
                               sum(expected.values())),
                 **{n: (by_task[n], len(parts[n]), expected[n]) for n in names}}
        for heading, (seeds, had, total) in cells.items():
            if not seeds:
                continue
            values = list(seeds.values())
            mean, std = sum(values) / len(values), pd.Series(values).std()
            text = cell(mean, spread(std, len(values), stat), len(values))
            if had < total:
                text += f" [{had}/{total} settings]"
            else:  # only rows with every setting are ranked
                samples.setdefault(heading, {})[i] = values
            table.iloc[i, headings.index(heading)] = text
            numeric.append({"arch": backbone, "size": size, "column": heading, "mean": mean, "std": std})
    if fmt == "csv":
        flat = pd.DataFrame(numeric, columns=["arch", "size", "column", "mean", "std"])
        wide = flat.pivot_table(index=["arch", "size"], columns="column", values=["mean", "std"], dropna=False)
        wide.columns = [f"{col} {what}" for what, col in wide.columns]
        return wide[sorted(wide.columns)].reset_index().to_csv(index=False)
    marks = {(i, col): mark for col, by_row in samples.items() for i, mark in rank_column(by_row, "higher").items()}
    points = best.drop_duplicates(["backbone", "size", "name", "options"])
    sized = len({size for _, size in rows}) > 1
    picks = "; ".join(
        f"{backbone}{f' ({size})' if sized else ''}: " + ", ".join(
            f"{lr:g} × {wd:g}: {n}" for (lr, wd), n in sorted(Counter(zip(group.lr, group.weight_decay)).items()))
        for (backbone, size), group in points.groupby(["backbone", "size"]))
    mad = TASKS.get("mad")
    stated = (f"MAD score (Poli et al. 2024): each setting (a task's baseline, or one of its published changes) "
              f"at the learning rate × weight decay with the best mean {mad.dev_split} {mad.dev_metric} over "
              f"seeds, scored by its test accuracy there (mad-lab picks on the test set itself); a task's "
              f"column: the mean over its settings ({', '.join(f'{n} {expected[n]}' for n in names)}); MAD "
              f"score: the mean over the task columns, as mad-lab's benchmark.py; seed by seed the same means, "
              f"over the seeds every averaged setting has; lr × weight decay chosen (settings): {picks}")
    kept = runs[runs.run_id.isin(chosen.run_id)]
    kept = kept.assign(label=kept.run_id.map(dict(zip(frame.run_id, frame.backbone))),
                       task=kept.run_id.map(task_labels(kept)))
    table = table.dropna(axis=1, how="all").fillna("—")
    return render(table.reset_index(), f"{stated}; {caption(kept, stat, samples)}", fmt, marks)


def export(store: RunStore, fmt: str = "csv") -> str:
    """Every stored number, one row per run × metric × split × length."""
    frame = store.metrics()
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "jsonl":
        return frame.to_json(orient="records", lines=True)
    raise ValueError(f"unknown export format {fmt!r} (choose from csv, jsonl)")


def summary_table(store: RunStore, run_ids: list[str] | None = None, width: int = 120) -> str:
    """The end of a run's screen: backbones (and settings, sizes) as rows, one headline metric per
    task as columns (the first of the task's ``table_metrics``), mean over seeds (± std when there
    are several); plain text in blocks of columns no wider than ``width``. The full tables hold
    every metric, the marks and the caption."""
    values, runs = summarise(store, run_ids)
    runs = runs[runs.task.map(lambda t: task_class(t) is not None)]
    if runs.empty:
        return "no runs recorded yet"
    tasks = sorted(set(runs.task))
    rows = sorted({(r.label, r.size) for r in runs.itertuples()})
    several_sizes = len({size for _, size in rows}) > 1
    names = [f"{label} ({size})" if several_sizes else label for label, size in rows]
    failed = (runs[runs.status != FINISHED].groupby(["label", "size", "task"]).status
              .agg(lambda s: ", ".join(f"{n} {st}" for st, n in s.value_counts().items())))
    found = {(v.label, v.size, v.task, v.column): v for v in values.itertuples()}
    arrow = {"higher": " ↑", "lower": " ↓"}
    blocks = []
    for task in tasks:
        heading = next(iter(columns(task).values()))
        spec = column_spec(task, heading)
        cells = []
        for label, size in rows:
            v = found.get((label, size, task, heading))
            text = "—" if v is None else number(v.mean) if v.count == 1 else f"{number(v.mean)} ± {number(v.std)}"
            note = failed.get((label, size, task))
            cells.append(note if v is None and note else f"{text} [{note}]" if note else text)
        blocks.append([task, heading + arrow.get(spec.better if spec else None, ""), *cells])
    first = ["", "", *names]
    first_width = max(map(len, first))
    parts, current, used = [], [], first_width
    for column in blocks:
        w = max(map(len, column))
        if current and used + 2 + w > width:
            parts.append(current)
            current, used = [], first_width
        current.append(column)
        used += 2 + w
    parts.append(current)
    lines = []
    for part in parts:
        if lines:
            lines.append("")
        widths = [max(map(len, column)) for column in part]
        for i in range(len(first)):
            if i == 2:
                lines.append("-" * (first_width + sum(2 + w for w in widths)))
            lines.append((first[i].ljust(first_width) + "".join(
                "  " + column[i].rjust(w) for column, w in zip(part, widths))).rstrip())
    seeds = runs.groupby(["label", "size", "task"]).seed.nunique()
    lines += ["", f"one headline metric per task (↑/↓: higher/lower is better); mean over seeds "
                  f"(seeds per cell: {seeds.min()}–{seeds.max()}; ± std with several)"]
    return "\n".join(lines)
