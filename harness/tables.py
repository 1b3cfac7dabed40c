"""Paper tables from the run store: rows are architectures, columns task metrics, mean ± std over
seeds. The public entry: ``make_table`` (``make_tables``: several formats at once), ``length_table``, ``mad_table`` (the MAD score),
``lr_table`` (learning-rate robustness), ``depth_table`` (depth to solve) and ``export``; the
parts live by job in ``harness.rows`` (row and column identity, labels), ``harness.protocol``
(dev scores, best-lr), ``harness.stats`` (summaries, spread, Welch ranking), ``harness.render``
(md/LaTeX/CSV, bench table) and ``harness.captions``."""
from __future__ import annotations

import json
import math
from collections import Counter

import pandas as pd

from harness.captions import caption
from harness.core.registry import TASKS, suggest
from harness.protocol import PROTOCOLS, RATE, best_lr, dev_better, dev_scores, label_ignores
from harness.render import FORMATS, cell, check_format, number, params_text, render
from harness.rows import (EFFICIENCY, column_spec, columns, length_metric, row_labels, row_params, task_class,
                          task_labels, upstream_configs)
from harness.core.references import SIZE as REFERENCE_SIZE
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
    return make_tables(store, run_ids, task, protocol, stat, efficiency, fmts=(fmt,))[fmt]


def make_tables(store: RunStore, run_ids: list[str] | None = None,
                task: str | None = None, protocol: str = "all", stat: str = "std",
                efficiency: bool = False, fmts: tuple[str, ...] = FORMATS) -> dict[str, str]:
    """``make_table`` in each of ``fmts`` (format → text), its numbers read and ranked once."""
    for fmt in fmts:
        check_format(fmt)
    suggest("protocol", protocol, PROTOCOLS)
    suggest("statistic", stat, STATS)
    if protocol == "best-lr":
        run_ids, chosen = best_lr(store, run_ids)
        values, runs = summarise(store, run_ids, ignore=RATE)
        sized = len({size for _, _, size in chosen}) > 1
        picks = "; ".join(f"{label} {t}{f' ({size})' if sized else ''}: {lr:g}"
                          for (label, t, size), lr in sorted(chosen.items()))
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
        return {fmt: "no runs recorded yet" for fmt in fmts}
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
        ranked = {row: v for row, v in by_row.items() if rows[row][1] != REFERENCE_SIZE}  # references: context only
        for row, mark in rank_column(ranked, spec.better if spec else None).items():
            marks[(row, col)] = mark
    table = table.dropna(axis=1, how="all").fillna("—")
    if not one_model:
        stated += ("; params: non-embedding parameters of each task's model" if efficiency else
                   "; params: per task, in the one-task tables and the efficiency table (each task's "
                   "model has its own head, mt's a decoder too, so one count per backbone would match none)")
    text = f"{stated}; {caption(runs, stat, samples)}"
    return {fmt: _csv(numeric, rows) if fmt == "csv" else render(table.reset_index(), text, fmt, marks)
            for fmt in fmts}


def _csv(numeric: dict, rows: list[tuple[str, str]]) -> str:
    """A table's numbers as CSV: per row, each column's mean and std."""
    flat = []
    for (label, size, col), (mean, std, n) in numeric.items():
        flat.append({"arch": label, "size": size, "column": col, "mean": mean, "std": std, "n": n})
    if not flat:  # rows, but no number in any column (e.g. only failed runs)
        return pd.DataFrame(rows, columns=["arch", "size"]).to_csv(index=False)
    wide = pd.DataFrame(flat).pivot_table(index=["arch", "size"], columns="column",
                                          values=["mean", "std"], dropna=False)
    wide.columns = [f"{col} {stat}" for stat, col in wide.columns]
    return wide[sorted(wide.columns)].reset_index().to_csv(index=False)


def length_table(store: RunStore, task: str, metric: str | None = None, split: str | None = None,
                 fmt: str = "md", protocol: str = "all") -> str:
    """Rows: architecture and size; columns: the length buckets of ``metric`` on ``split`` (default:
    the task's ``length_split``) for one task label (e.g. ``extrapolation/parity``); cells: mean ±
    std over seeds. Protocol ``best-lr``: each row at its best learning rate by dev score."""
    check_format(fmt)
    suggest("protocol", protocol, PROTOCOLS)
    runs = store.runs()
    runs = runs[runs.status == FINISHED]
    tasks = task_labels(runs)
    suggest("task", task, sorted({t for t in tasks.values() if length_metric(t)}))
    metric = metric or length_metric(task)
    split = split or TASKS.get(task.split("/")[0]).length_split
    stated = "every setting reported"
    if protocol == "best-lr":
        kept, chosen = best_lr(store, [r for r in runs.run_id if tasks[r] == task])
        runs = runs[runs.run_id.isin(kept)]
        picks = "; ".join(f"{label} ({size}): {lr:g}" for (label, _, size), lr in sorted(chosen.items()))
        stated = f"best learning rate per row by mean dev score over seeds ({picks})"
    labels = row_labels(runs, ignore=label_ignores(protocol), upstreams=upstream_configs(store))
    m = store.metrics()
    m = m[m.run_id.isin(runs.run_id) & (m.run_id.map(tasks) == task)]
    suggest("metric", metric, sorted(set(m[m.length.notna()].metric)))
    m = m[(m.metric == metric) & (m.split == split) & m.length.notna()]
    sizes = runs.set_index("run_id")["size"]
    m = m.assign(label=m.run_id.map(labels), size=m.run_id.map(sizes), length=m.length.astype(int))
    stats = m.groupby(["label", "size", "length"]).value.agg(["mean", "std", "count"])
    if fmt == "csv":
        return stats.reset_index().to_csv(index=False)
    cells = stats.apply(lambda r: cell(r["mean"], r["std"], r["count"]), axis=1)
    table = cells.unstack("length").fillna("—")
    table.columns = [str(c) for c in table.columns]
    spec = TASKS.get(task.split("/")[0]).spec(metric)
    reading = ", ".join(x for x in (f"{spec.better} is better" if spec.better else "", spec.unit) if x)
    text = f"{task}: {split} {metric} ({reading}) by length (columns); mean ± std over seeds; protocol: {stated}"
    return render(table.reset_index(), text, fmt)


#: what MAD's protocol sweeps for every setting (mad-lab: lr {1e-4, 5e-4, 1e-3} × weight decay {0, 0.1})
MAD_GRID = ("lr", "weight_decay")


def _mad_runs(store: RunStore, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per ``mad`` run: ``setting`` (best-lr's row label with the weight decay also left
    out: the backbone and the setting), ``backbone`` (with the task's options left out too), size,
    seed, task name, ``options`` (the setting, as JSON), grid point, dev score and test accuracy."""
    options = frozenset(f"task.{k}" for k in TASKS.get("mad").Options.model_fields)
    settings = row_labels(runs, ignore=frozenset(MAD_GRID), across_tasks=True)
    backbones = row_labels(runs, ignore=frozenset(MAD_GRID) | options, across_tasks=True)
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


# ---------------------------------------------------------------------------------------------
# learning-rate robustness (Okpekpe & Orvieto 2025) and depth to solve (Merrill et al. 2024)

#: how close to a row's best mean a learning rate must come to count as inside the window:
#: absolute for fraction-valued metrics (accuracy), relative to the best otherwise (perplexity)
LR_TOLERANCE = 0.05


def _tolerance(spec) -> tuple[bool, str, str]:
    """(absolute?, heading text, caption text) of the lr window for a metric's spec."""
    if spec.unit == "fraction":
        return True, f"{LR_TOLERANCE:g}", f"{LR_TOLERANCE:g} (absolute: the metric is a fraction)"
    percent = f"{100 * LR_TOLERANCE:g}%"
    return False, percent, f"{percent} (relative to the best: the metric is no fraction)"


def _within(mean: float, best: float, absolute: bool) -> bool:
    """Whether ``mean`` is inside the window around ``best`` (its end included; 1e-9 slack for
    floating point)."""
    allowed = LR_TOLERANCE if absolute else LR_TOLERANCE * abs(best)
    return abs(mean - best) <= allowed * (1 + 1e-9) + 1e-12


def _score_choice(cls, split: str | None, metric: str | None) -> tuple[str, str]:
    """(split, metric) the lr view scores a task by: its first table metric, unless ``split`` or
    ``metric`` is given (``split`` alone: the dev metric on the dev split, else the first table
    metric's name on that split; ``metric`` alone: on test)."""
    head_split, head_metric = cls.table_metrics[0]
    if split is None and metric is None:
        return head_split, head_metric
    split = split or "test"
    if metric is None:
        metric = cls.dev_metric if split != head_split and split == getattr(cls, "dev_split", None) else head_metric
    return split, metric


def _task_filter(labels, task: str | None) -> set[str]:
    """The task labels ``task`` names (itself, or the family it starts: ``extrapolation``);
    every label when None; an unknown name answers with the closest ones."""
    labels = set(labels)
    if task is None:
        return labels
    chosen = {t for t in labels if t == task or t.startswith(f"{task}/")}
    if not chosen:
        suggest("task", task, sorted(labels))
    return chosen


def lr_scores(store: RunStore, run_ids: list[str] | None = None, task: str | None = None,
              metric: str | None = None, split: str | None = None) -> tuple[pd.DataFrame, dict[str, tuple[str, str]]]:
    """(frame, scored): one row per run of a registered task, with ``label`` (its row label with
    the learning rate left out: the backbone and every other setting that varies), size, task
    label, lr, seed, status and ``value``, the score (NaN when the run did not finish or stored
    none; at the training length for tasks whose table reads it there, such as ``lm``); and
    task label → the (split, metric) scored (see ``_score_choice``). A split or metric the user
    chose leaves out the tasks that stored none of it (none has it: the closest names)."""
    columns_ = ["run_id", "label", "size", "task", "lr", "seed", "status", "value"]
    runs = store.runs()
    if run_ids is not None:
        runs = runs[runs.run_id.isin(run_ids)]
    tasks = {i: t for i, t in task_labels(runs).items() if task_class(t) is not None}
    runs = runs[runs.run_id.isin(list(tasks))]
    if runs.empty:
        return pd.DataFrame(columns=columns_), {}
    chosen = _task_filter(tasks.values(), task)
    runs = runs[runs.run_id.map(tasks).isin(chosen)]
    labels = row_labels(runs, ignore=RATE, upstreams=upstream_configs(store))
    m = store.metrics()
    m = m[m.run_id.isin(runs.run_id)]
    by_run = dict(tuple(m.groupby("run_id")))
    rows, scored, missing = [], {}, []
    for t in sorted(chosen):
        cls = task_class(t)
        ids = [i for i in runs.run_id if tasks[i] == t]
        s, name = _score_choice(cls, split, metric)
        if metric is not None or split is not None:  # a choice of the user's: tasks that stored it
            stored = sorted(set(m[m.run_id.isin(ids) & (m.split == s)].metric))
            if name not in stored:
                missing.append((f"metric on {s} of {t}", name, stored))
                continue
        if cls.spec(name).better is None:
            raise ValueError(f"{t}: metric {name!r} has no better direction, so no best learning rate")
        scored[t] = (s, name)
        for r in runs[runs.run_id.isin(ids)].itertuples():
            value = math.nan
            if r.status == FINISHED and r.run_id in by_run:
                g = by_run[r.run_id]
                g = g[(g.split == s) & (g.metric == name)]
                if cls.table_at_train_length:
                    g = g[g.length == json.loads(r.info or "{}").get("train_length")]
                else:
                    g = g[g.length.isna()]
                if not g.empty and math.isfinite(g.value.iloc[0]):
                    value = float(g.value.iloc[0])
            rows.append({"run_id": r.run_id, "label": labels[r.run_id], "size": r.size, "task": t,
                         "lr": float(json.loads(r.config)["train"]["lr"]), "seed": r.seed, "status": r.status,
                         "value": value})
    if missing and not scored:  # no task has it: the closest names of the first
        suggest(*missing[0])
    return pd.DataFrame(rows, columns=columns_), scored


def swept_tasks(frame: pd.DataFrame) -> list[str]:
    """The task labels of an ``lr_scores`` frame where some row has runs at several rates."""
    return sorted(t for t, g in frame.groupby("task") if g.groupby(["label", "size"]).lr.nunique().max() > 1)


def _caption_rest(runs: pd.DataFrame, stat: str) -> str:
    """``caption``'s budget, dtype, versions and environment, without its seeds and ranking
    parts (the views state their own)."""
    text = caption(runs, stat, {})
    return "; ".join(p for p in text.split("; ") if not p.startswith(("mean ± ", "bold: ")))


def _lr_one(store: RunStore, frame: pd.DataFrame, task: str, scored: tuple[str, str], stat: str):
    """One task's lr table: (table, marks, caption, csv records)."""
    cls = task_class(task)
    split, metric = scored
    spec = cls.spec(metric)
    higher = spec.better == "higher"
    absolute, window, window_text = _tolerance(spec)
    rates = sorted(set(frame.lr))
    heading = {lr: f"lr {lr:g}" for lr in rates}
    inside, best_col = f"within {window} of best", "best lr"
    rows = sorted({(r.label, r.size) for r in frame.itertuples()})
    table = pd.DataFrame(index=pd.MultiIndex.from_tuples(rows, names=["arch", "size"]),
                         columns=[*heading.values(), inside, best_col], dtype=object)
    marks, records, counts = {}, [], []
    for i, (label, size) in enumerate(rows):
        group = frame[(frame.label == label) & (frame["size"] == size)]
        grid = sorted(set(group.lr))
        means, record = {}, {"task": task, "arch": label, "size": size}
        for lr in grid:
            at = group[group.lr == lr]
            values = at.value.dropna()
            failed = at[at.status != FINISHED].status.value_counts()
            note = ", ".join(f"{n} {st}" for st, n in failed.items())
            text = "—"
            if len(values):
                mean, std = float(values.mean()), float(values.std()) if len(values) > 1 else math.nan
                means[lr] = mean
                counts.append(len(values))
                text = cell(mean, spread(std, len(values), stat), len(values))
                record |= {f"{heading[lr]} mean": mean, f"{heading[lr]} std": std}
            table.iloc[i, table.columns.get_loc(heading[lr])] = (
                f"{text} [{note}]" if note and text != "—" else note or text)
        if means:
            best = (max if higher else min)(means.values())
            best_lr = min(lr for lr, v in means.items() if v == best)
            n_in = sum(_within(v, best, absolute) for v in means.values())
            table.iloc[i, table.columns.get_loc(inside)] = f"{n_in}/{len(grid)}"
            table.iloc[i, table.columns.get_loc(best_col)] = f"{best_lr:g}"
            marks[(i, heading[best_lr])] = "best"
            record |= {inside: n_in / len(grid), best_col: best_lr}
        records.append(record)
    table = table.fillna("—")
    spread_text = "std" if stat == "std" else "95% confidence interval (t distribution)"
    if (split, metric) == tuple(cls.table_metrics[0]):
        which = "the task's first table metric"
    elif (split, metric) == (getattr(cls, "dev_split", None), getattr(cls, "dev_metric", None)):
        which = "the task's dev metric"
    else:
        which = "chosen with --metric/--split"
    at_length = " at the training length" if cls.table_at_train_length else ""
    reading = ", ".join(x for x in (f"{spec.better} is better", spec.unit) if x)
    seeds = f"{min(counts)}–{max(counts)}" if counts else "none"
    stated = (f"{task}: learning-rate robustness (Okpekpe & Orvieto 2025): {split} {metric}{at_length} "
              f"({reading}; {which}) at each learning rate (columns), mean ± {spread_text} over seeds "
              f"(seeds per cell: {seeds}); bold: the row's best rate; {inside}: how many of the row's "
              f"learning rates (every rate it has a run at; one whose runs all failed counts as outside) "
              f"have a mean within {window_text} of the row's best mean, the direction from the metric's "
              f"spec; {best_col}: the rate with the best mean (ties: the lower rate); [n status]: runs that "
              f"did not finish, the cell averaging the others; rows: backbone (every setting but the "
              f"learning rate) and size")
    runs = store.runs()
    runs = runs[runs.run_id.isin(frame.run_id)]
    runs = runs.assign(label=runs.run_id.map(dict(zip(frame.run_id, frame.label))), task=task)
    return table, marks, f"{stated}; {_caption_rest(runs, stat)}", records


def lr_table(store: RunStore, fmt: str = "md", run_ids: list[str] | None = None, task: str | None = None,
             stat: str = "std", metric: str | None = None, split: str | None = None) -> str:
    """Learning-rate robustness (Okpekpe & Orvieto 2025): one table per task label with runs at
    several learning rates (with ``task``: every task it names). Rows: backbone (the row label
    with the learning rate left out) and size; columns: the score at each learning rate (mean ±
    std or ci95 over seeds; the task's first table metric unless ``metric``/``split`` say
    otherwise), then how many of the row's rates come within ``LR_TOLERANCE`` of its best mean
    (absolute for fraction-valued metrics, relative otherwise; the direction from the metric's
    spec) and the best rate, which is bold. CSV: one row per task and row, mean and std per rate,
    the fraction within and the best rate."""
    check_format(fmt)
    suggest("statistic", stat, STATS)
    frame, scored = lr_scores(store, run_ids, task, metric, split)
    if frame.empty:
        return "no runs recorded yet"
    shown = sorted(set(frame.task)) if task is not None else swept_tasks(frame)
    if not shown:
        return ("no task has runs at several learning rates yet (the lr view compares each row's "
                "learning rates; --task names one to show anyway)")
    parts, records = [], []
    for t in shown:
        table, marks, text, rows = _lr_one(store, frame[frame.task == t], t, scored[t], stat)
        records += rows
        if fmt != "csv":
            parts.append(render(table.reset_index(), text, fmt, marks))
    if fmt != "csv":
        return ("\n\n" if fmt == "md" else "\n").join(parts)
    wide = pd.DataFrame(records)
    rates = sorted({float(c.split()[1]) for c in wide.columns if c.startswith("lr ")})
    ordered = ["task", "arch", "size", *(f"lr {lr:g} {what}" for lr in rates for what in ("mean", "std")),
               *(c for c in wide.columns if c.startswith("within ")), "best lr"]
    return wide.reindex(columns=[c for c in dict.fromkeys(ordered) if c in wide.columns]).to_csv(index=False)


def _width(size: str) -> str:
    """A size name less its depth: ``d128x3`` and ``d128`` → ``d128`` (a fixed width); a
    parameter-matched preset (``tiny``) stays itself (its width follows the budget)."""
    from architectures.sizing import preset

    p = preset(size)
    return f"d{p.d_model}" if p.d_model is not None else size


def _depth(info: dict, size: str) -> int:
    """A run's number of layers, as the backbone recorded it (else as its size preset says)."""
    from architectures.sizing import preset

    layers = info.get("backbone", {}).get("n_layers")
    return int(layers) if layers is not None else preset(size).n_layers


def depth_table(store: RunStore, fmt: str = "md", threshold: float = 0.99, metric: str | None = None,
                task: str | None = None, split: str = "test", run_ids: list[str] | None = None) -> str:
    """Depth to solve (Merrill et al. 2024): one table per task label; rows: backbone (the row
    label with the learning rate left out) and width (the size name less its depth, so a
    backbone at two widths is two rows); columns: the lengths ``metric`` is stored at on
    ``split`` (default: the task's per-length metric); a cell: the fewest layers whose best run
    (the best value at that length over every learning rate and seed of that depth) reaches
    ``threshold`` (≥ for a higher-is-better metric, ≤ for a lower one, from its spec); ``≤d``
    where depth d − 1 was not tried, ``>d`` where no depth tried (up to d) reaches it. Without
    ``task`` only tasks whose metric is a fraction are shown."""
    check_format(fmt)
    if not math.isfinite(threshold):
        raise ValueError(f"--threshold must be a finite number, got {threshold}")
    runs = store.runs()
    runs = runs[runs.status == FINISHED]
    if run_ids is not None:
        runs = runs[runs.run_id.isin(run_ids)]
    tasks = {i: t for i, t in task_labels(runs).items() if task_class(t) is not None}
    runs = runs[runs.run_id.isin(list(tasks))]
    if runs.empty:
        return "no finished runs recorded yet"
    chosen = _task_filter(tasks.values(), task)
    m = store.metrics()
    m = m[m.run_id.isin(runs.run_id) & (m.split == split) & m.length.notna()]
    m = m.assign(task=m.run_id.map(tasks))
    m = m[m.task.isin(chosen)]
    if metric is not None:
        suggest(f"metric stored per length on {split}", metric, sorted(set(m.metric)))
    wanted = {t: metric or length_metric(t) for t in chosen}
    shown = sorted(t for t in chosen if wanted[t] and ((m.task == t) & (m.metric == wanted[t])).any()
                   and (task is not None or task_class(t).spec(wanted[t]).unit == "fraction"))
    if not shown:
        what = f"{split} {metric}" if metric else f"a fraction-valued {split} metric"
        return f"no task stores {what} per length yet"
    runs = runs[runs.run_id.map(tasks).isin(shown)]
    labels = row_labels(runs, ignore=RATE, upstreams=upstream_configs(store))
    infos = {r.run_id: json.loads(r.info or "{}") for r in runs.itertuples()}
    depth = {r.run_id: _depth(infos[r.run_id], r.size) for r in runs.itertuples()}
    width = {r.run_id: _width(r.size) for r in runs.itertuples()}
    lrs = {r.run_id: float(json.loads(r.config)["train"]["lr"]) for r in runs.itertuples()}
    parts, records = [], []
    for t in shown:
        name = wanted[t]
        spec = task_class(t).spec(name)
        if spec.better is None:
            raise ValueError(f"{t}: metric {name!r} has no better direction, so no threshold to reach")
        higher = spec.better == "higher"
        data = m[(m.task == t) & (m.metric == name) & m.run_id.isin(runs.run_id)]
        data = data.assign(label=data.run_id.map(labels), width=data.run_id.map(width),
                           depth=data.run_id.map(depth), length=data.length.astype(int))
        best = data.groupby(["label", "width", "depth", "length"]).value.agg("max" if higher else "min")
        lengths = sorted(set(data.length))
        order = {w: (int(w[1:]) if w[1:].isdigit() and w.startswith("d") else math.inf, w) for w in set(data.width)}
        rows = sorted({(r.label, r.width) for r in data.itertuples()}, key=lambda lw: (lw[0], order[lw[1]]))
        table = pd.DataFrame(index=pd.MultiIndex.from_tuples(rows, names=["arch", "width"]),
                             columns=[str(n) for n in lengths], dtype=object)
        tried_text = []
        for i, (label, w) in enumerate(rows):
            at_row = best.loc[(label, w)]
            tried = sorted(set(at_row.index.get_level_values("depth")))
            tried_text.append(f"{label} {w}: {', '.join(map(str, tried))}")
            for n in lengths:
                scores = {d: v for (d, length), v in at_row.items() if length == n}
                if not scores:
                    continue
                reached = [d for d, v in scores.items() if (v >= threshold if higher else v <= threshold)]
                if reached:
                    smallest = min(reached)
                    text = f"≤{smallest}" if smallest > 1 and smallest - 1 not in scores else str(smallest)
                else:
                    smallest, text = None, f">{max(scores)}"
                table.iloc[i, table.columns.get_loc(str(n))] = text
                records.append({"task": t, "arch": label, "width": w, "length": n, "min_depth": smallest,
                                "depths": " ".join(map(str, sorted(scores))), "cell": text})
        if fmt == "csv":
            continue
        kept = runs[runs.run_id.isin(data.run_id)]
        kept = kept.assign(label=kept.run_id.map(labels), task=t)
        rates = ", ".join(f"{lr:g}" for lr in sorted({lrs[i] for i in kept.run_id}))
        per_depth = kept.assign(depth=kept.run_id.map(depth), width=kept.run_id.map(width)).groupby(
            ["label", "width", "depth"]).run_id.count()
        reading = ", ".join(x for x in (f"{spec.better} is better", spec.unit) if x)
        sign = "≥" if higher else "≤"
        stated = (f"{t}: depth to solve (Merrill et al. 2024): the fewest layers whose best run reaches {split} "
                  f"{name} {sign} {threshold:g} ({reading}) at each {split} length (columns); best run: the "
                  f"{'highest' if higher else 'lowest'} {split} {name} at that length over every learning rate "
                  f"and seed of that depth (chosen on the {split} set itself: the table asks whether some "
                  f"trained model of that depth solves that length); ≤d: depth d reaches it and d − 1 was not "
                  f"tried; >d: no depth tried, up to d, reaches it; —: no run at that length; rows: backbone "
                  f"(every setting but the learning rate) and width (the size name less its depth: a backbone "
                  f"at two widths is two rows; depth read from each run's recorded backbone); depths tried: "
                  f"{'; '.join(tried_text)}; learning rates: {rates}; runs per depth: "
                  f"{per_depth.min()}–{per_depth.max()}; finished runs only")
        parts.append(render(table.fillna("—").reset_index(), f"{stated}; {_caption_rest(kept, 'std')}", fmt))
    if fmt == "csv":
        frame = pd.DataFrame(records, columns=["task", "arch", "width", "length", "min_depth", "depths", "cell"])
        return frame.astype({"min_depth": "Int64"}).to_csv(index=False)
    return ("\n\n" if fmt == "md" else "\n").join(parts)
