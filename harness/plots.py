"""Figures from the run store: metric against length, one line per architecture (and setting),
the spread over seeds as a band."""
from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from harness.core.registry import TASKS, suggest  # noqa: E402
from harness.protocol import PROTOCOLS, best_lr, label_ignores  # noqa: E402
from harness.store import FINISHED, RunStore  # noqa: E402
from harness.rows import column_spec, columns, length_metric, row_labels, task_class, task_labels, upstream_configs  # noqa: E402

MARKERS = "osD^v<>pP*X"
LINESTYLES = ("-", "--", "-.", ":")
#: the column of training speed the Pareto figure plots against
SPEED = "train tok/s"


def metric_label(task: str, metric: str, split: str | None = None) -> str:
    """An axis label for ``metric`` of task label ``task``: "<split> <metric> (<unit>)", the unit
    from the metric's spec (no parentheses when the spec gives none)."""
    unit = task_class(task).spec(metric).unit
    name = f"{split} {metric}" if split else metric
    return f"{name} ({unit})" if unit else name


def direction(better: str | None) -> str:
    return f"{better} is better" if better else "no better direction"


def pareto_labels(panels: list[tuple[str, str]]) -> tuple[str, dict[str, dict[str, str]]]:
    """The Pareto figure's title, and each panel's title, x and y label, for (task label, headline
    column) pairs: metric, unit and direction from the spec of the column's metric."""
    shown, seen = [], set()
    for task, headline in panels:
        spec = column_spec(task, headline)
        text = f"{headline} ({direction(spec.better)})"
        if text not in seen:
            seen.add(text)
            shown.append(text)
    title = textwrap.fill(f"{', '.join(shown)} against training speed: mean over seeds (bars: std); "
                          "line: the Pareto front", 160)
    labels = {}
    for task, headline in panels:
        spec, speed = column_spec(task, headline), column_spec(task, SPEED)
        labels[task] = {"title": f"{task}: {direction(spec.better)}",
                        "x": f"training speed ({speed.unit})" if speed.unit else "training speed",
                        "y": f"{headline} ({spec.unit})" if spec.unit else headline}
    return title, labels


def _sized(frame: pd.DataFrame) -> pd.DataFrame:
    """Each label with its size where the frame holds several: one line per size, never two sizes
    pooled as if they were seeds."""
    if frame["size"].nunique() > 1:
        return frame.assign(label=frame.label + " (" + frame["size"] + ")")
    return frame


def _frame(store: RunStore, protocol: str = "all", families: tuple[str, ...] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The finished runs and their metrics, each labelled with its row. Protocol ``best-lr`` keeps
    the runs of the task ``families`` only at each row's, task's and size's learning rate with the
    best dev score (``harness.protocol.best_lr``) and leaves the rate out of the labels."""
    suggest("protocol", protocol, PROTOCOLS)
    runs = store.runs()
    runs = runs[runs.status == FINISHED]
    if protocol == "best-lr" and not runs.empty:
        candidates = runs[runs.task.isin(families)].run_id
        kept, _ = best_lr(store, list(candidates))
        runs = runs[~runs.run_id.isin(candidates) | runs.run_id.isin(kept)]
    labels = row_labels(runs, ignore=label_ignores(protocol), upstreams=upstream_configs(store)) if not runs.empty else {}
    tasks = task_labels(runs)
    sizes = runs.set_index("run_id")["size"]
    metrics = store.metrics()
    metrics = metrics[metrics.run_id.isin(labels)]
    return runs, _sized(metrics.assign(label=metrics.run_id.map(labels), task=metrics.run_id.map(tasks),
                                       size=metrics.run_id.map(sizes)))


def _colours(labels) -> dict[str, tuple]:
    """One colour per label, the same in every panel of a figure."""
    cmap = plt.get_cmap("tab10" if len(set(labels)) <= 10 else "tab20")
    return {label: cmap(i % cmap.N) for i, label in enumerate(sorted(set(labels)))}


def _line_style(colours: dict[str, tuple], label: str) -> str:
    """Solid while the palette lasts; each time its colours come round again, the next style (so up
    to four palettes' worth of labels are each drawn their own way)."""
    return LINESTYLES[list(colours).index(label) // len(set(colours.values())) % len(LINESTYLES)]


def _lines(ax, data: pd.DataFrame, colours: dict[str, tuple], x: str = "length") -> None:
    """One line per label: mean over seeds, band from the lowest to the highest seed (``x``: the
    column along the x axis)."""
    for label, rows in sorted(data.groupby("label"), key=lambda kv: kv[0]):
        stats = rows.groupby(x).value.agg(["mean", "min", "max"]).sort_index()
        ax.plot(stats.index, stats["mean"], marker="o", markersize=3, label=label, color=colours[label],
                linestyle=_line_style(colours, label))
        if rows.seed.nunique() > 1:
            ax.fill_between(stats.index, stats["min"], stats["max"], color=colours[label], alpha=0.2)


def _legend(fig, colours: dict[str, tuple]) -> None:
    handles = [plt.Line2D([], [], color=c, marker="o", markersize=3, linestyle=_line_style(colours, label),
                          label=label) for label, c in colours.items()]
    fig.legend(handles=handles, loc="outside right center", fontsize=7)  # clear of the suptitle


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for path in paths:
        fig.savefig(path, bbox_inches="tight", dpi=150)
    plt.close(fig)
    return paths


_BEST_LR_NOTE = {"all": "", "best-lr": "; each line at its best learning rate by dev score"}
#: the figures that take a protocol (``harness plot --protocol``)
PROTOCOL_PLOTS = ("extrapolation", "agreement")

#: the task families whose test metric is stored per sequence length
LENGTH_FAMILIES = ("lm", "extrapolation", "chomsky", "mqar", "word_problem")


def plot_extrapolation(store: RunStore, out_dir: Path, protocol: str = "all") -> list[Path]:
    """Test metric against sequence length, one panel per task (lm, the synthetic probes, the
    Chomsky-hierarchy tasks, MQAR, word problems), five panels a row; ``protocol`` as in ``_frame``."""
    runs, metrics = _frame(store, protocol, LENGTH_FAMILIES)
    empty = f"no length-bucketed results of {', '.join(LENGTH_FAMILIES)} in the run store {store.root}"
    if metrics.empty:  # no finished runs: the task column is not even text
        raise ValueError(empty)
    family = metrics.task.astype(str).str.split("/").str[0]
    wanted = metrics[(metrics.split == "test") & metrics.length.notna() & family.isin(LENGTH_FAMILIES)
                     & (metrics.metric == metrics.task.map(length_metric))]
    if wanted.empty:
        raise ValueError(empty)
    panels = sorted(set(wanted.task))
    columns = min(5, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.6 * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("grey dashed: longest training length" + _BEST_LR_NOTE[protocol], fontsize=9)
    colours = _colours(wanted.label)
    for ax, task in zip(axes.flat, panels):
        data = wanted[wanted.task == task]
        _lines(ax, data, colours)
        train_length = json.loads(runs[runs.run_id == data.run_id.iloc[0]]["info"].iloc[0])["train_length"]
        ax.axvline(train_length, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_title(task)
        ax.set_xlabel("sequence length")
        ax.set_ylabel(metric_label(task, length_metric(task), "test"))
    _legend(fig, colours)
    return _save(fig, out_dir, "extrapolation")


def plot_agreement(store: RunStore, out_dir: Path, protocol: str = "all") -> list[Path]:
    """Accuracy against subject–verb distance, one panel per number of attractors; each CNN's
    receptive field is marked with a dotted line in its colour; ``protocol`` as in ``_frame``."""
    runs, metrics = _frame(store, protocol, ("agreement",))
    empty = f"no agreement results in the run store {store.root}"
    if metrics.empty:
        raise ValueError(empty)
    cells = metrics[(metrics.task == "agreement") & (metrics.split == "test") & metrics.length.notna()
                    & metrics.metric.astype(str).str.startswith("accuracy_attractors_")]
    if cells.empty:
        raise ValueError(empty)
    counts = sorted({int(m.rsplit("_", 1)[1]) for m in cells.metric})
    cols = min(3, len(counts))
    rows = math.ceil(len(counts) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharey=True,
                             layout="constrained")
    fig.suptitle("grey dashed: longest training distance; vertical dotted: receptive field (CNN)"
                 + _BEST_LR_NOTE[protocol], fontsize=9)
    info = {r.run_id: json.loads(r.info) for r in runs.itertuples()}
    colours = _colours(cells.label)
    for ax, k in zip(axes.flat, counts):
        data = cells[cells.metric == f"accuracy_attractors_{k}"]
        _lines(ax, data, colours)
        for label, group in data.groupby("label"):
            field = info[group.run_id.iloc[0]].get("backbone", {}).get("receptive_field")
            if field:  # the subject is visible while distance - 1 < receptive field
                ax.axvline(field, color=colours[label], linestyle=":", linewidth=1)
        train_distance = info[data.run_id.iloc[0]]["train_length"]
        ax.axvline(train_distance, color="grey", linestyle="--", linewidth=0.8)
        ax.axhline(0.5, color="black", linewidth=0.5)
        ax.set_title(f"{k} attractor{'s' if k != 1 else ''}")
        ax.set_xlabel("subject–verb distance")
        ax.set_ylabel(metric_label("agreement", f"accuracy_attractors_{k}", "test"))
        ax.set_xscale("log", base=2)
    for ax in list(axes.flat)[len(counts):]:
        ax.axis("off")
    _legend(fig, colours)
    return _save(fig, out_dir, "agreement")


def _pareto_panels(store: RunStore) -> list[tuple[str, str, list]]:
    """(task label, headline column, points) for each training task: a point per (row, size) with
    the stats of its speed and of its headline column."""
    from harness.stats import summarise

    values, _ = summarise(store)
    values = values[values.task.isin({t for t in values.task if TASKS.get(t.split("/")[0]).kind != "zero_shot"})]
    panels = []
    for task in sorted(set(values.task)):
        headline = next(iter(columns(task).values()))
        data = values[values.task == task].set_index(["label", "size", "column"])
        points = [(label, size, data.loc[(label, size, SPEED)], data.loc[(label, size, headline)])
                  for label, size in sorted({(lb, sz) for lb, sz, _ in data.index})
                  if (label, size, SPEED) in data.index and (label, size, headline) in data.index]
        if points:
            panels.append((task, headline, points))
    return panels


def plot_pareto(store: RunStore, out_dir: Path) -> list[Path]:
    """Each training task's headline test metric against training tokens/s, one point per row
    (mean over seeds, bars: std), the Pareto front (faster and better, in the direction the
    metric's spec gives) joined by a line."""
    panels = _pareto_panels(store)
    if not panels:
        raise ValueError("no finished training runs with throughput and a test metric in the run store "
                         f"{store.root}")
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.6 * rows), squeeze=False, layout="constrained")
    title, panel_labels = pareto_labels([(task, headline) for task, headline, _ in panels])
    fig.suptitle(title, fontsize=9)
    labels = sorted({f"{label} ({size})" for _, _, pts in panels for label, size, _, _ in pts})
    colours = _colours(labels)
    markers = {label: MARKERS[i % len(MARKERS)] for i, label in enumerate(labels)}
    for ax, (task, headline, points) in zip(axes.flat, panels):
        better = column_spec(task, headline).better
        front, best = [], None
        for label, size, speed, score in sorted(points, key=lambda p: -p[2]["mean"]):
            name = f"{label} ({size})"
            ax.errorbar(speed["mean"], score["mean"], xerr=_std(speed), yerr=_std(score), marker=markers[name],
                        color=colours[name], linestyle="none", markersize=5, capsize=2)
            if better is not None and (best is None or (
                    score["mean"] > best if better == "higher" else score["mean"] < best)):
                best = score["mean"]
                front.append((speed["mean"], score["mean"]))
        if front:
            ax.plot(*zip(*front), color="grey", linewidth=0.8, linestyle="--", zorder=0)
        speeds = [speed["mean"] for _, _, speed, _ in points]
        if max(speeds) > 10 * min(speeds):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter(sep=""))
        ax.set_title(panel_labels[task]["title"], fontsize=9)
        ax.set_xlabel(panel_labels[task]["x"])
        ax.set_ylabel(panel_labels[task]["y"], fontsize=8)
        ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=colours[label], marker=markers[label], linestyle="none", label=label)
               for label in labels]
    fig.legend(handles=handles, loc="outside right center", fontsize=7)  # clear of the suptitle
    return _save(fig, out_dir, "pareto")


def _std(stats) -> float:
    return 0.0 if stats["count"] < 2 or pd.isna(stats["std"]) else stats["std"]


#: bench column → panel title (the y label is the column's unit, from harness.render.BENCH_COLUMNS)
BENCH_PANELS = {
    "train_tokens_per_s": "training speed",
    "infer_tokens_per_s": "inference speed (full sequence)",
    "decode_tokens_per_s": "decoding speed (one at a time)",
    "train_peak_mb": "training peak memory",
    "train_activations_mb": "activations saved for backward",
    "decode_state_mb": "decoding state at full length",
}


def bench_labels(key: str) -> dict[str, str]:
    """Title, x and y label of the bench panel of column ``key``; units from the bench columns."""
    from harness.render import bench_unit

    return {"title": BENCH_PANELS[key], "x": f"sequence length ({bench_unit('length')})", "y": bench_unit(key)}


def plot_bench(rows: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Speed and memory against length, log–log, one line per architecture (and attention
    backend); markers and line styles differ too, so the figure reads in grey-scale."""
    from harness.render import bench_label

    rows = rows.assign(label=rows.apply(bench_label, axis=1))
    fig, axes = plt.subplots(2, 3, figsize=(12.5, 6.4), layout="constrained")
    caption = f"{rows['size'].iloc[0]} size, batch {rows['batch'].iloc[0]}, {rows['dtype'].iloc[0]}; " \
              f"{', '.join(sorted(set(rows.device_name)))}"
    fig.suptitle(f"harness bench ({caption}); missing points: out of memory", fontsize=9)
    colours = _colours(rows.label)
    styles = {label: (MARKERS[i % len(MARKERS)], LINESTYLES[i % len(LINESTYLES)])
              for i, label in enumerate(sorted(colours))}
    for ax, key in zip(axes.flat, BENCH_PANELS):
        for label, group in sorted(rows.groupby("label"), key=lambda kv: kv[0]):
            data = group[["length", key]].dropna().sort_values("length") if key in group else group[[]]
            if data.empty:
                continue
            marker, style = styles[label]
            ax.plot(data["length"], data[key], marker=marker, linestyle=style, markersize=4,
                    color=colours[label], label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        labels = bench_labels(key)
        ax.set_title(labels["title"], fontsize=9)
        ax.set_xlabel(labels["x"])
        ax.set_ylabel(labels["y"])
        ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
    handles = [plt.Line2D([], [], color=colours[label], marker=styles[label][0], linestyle=styles[label][1],
                          markersize=4, label=label) for label in sorted(colours)]
    fig.legend(handles=handles, loc="outside right center", fontsize=7)  # clear of the suptitle
    return _save(fig, out_dir, "bench")


def log_to_wandb(paths: list[Path], kind: str) -> None:
    """Log the PNGs as images of a W&B run (offline without an API key)."""
    import wandb

    from harness.tracking import wandb_init

    run = wandb_init(paths[0].parent, job_type="plot", name=f"plot-{kind}")
    run.log({kind: [wandb.Image(str(p)) for p in paths if p.suffix == ".png"]})
    run.finish()


def plot_lr(store: RunStore, out_dir: Path) -> list[Path]:
    """Learning-rate robustness (Okpekpe & Orvieto 2025): each task's score (its first table
    metric, as ``harness table --view lr``) against the learning rate (log x), one line per
    backbone (and size, where the figure has several), one panel per task with runs at several
    rates; band: the lowest to the highest seed."""
    from harness.tables import lr_scores, swept_tasks

    frame, scored = lr_scores(store)
    frame = frame.dropna(subset=["value"])
    panels = swept_tasks(frame) if not frame.empty else []
    if not panels:
        raise ValueError(f"no task with finished runs at several learning rates in the run store {store.root}")
    frame = _sized(frame[frame.task.isin(panels)])
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, layout="constrained")
    fig.suptitle("mean over seeds; band: lowest to highest seed; no point: every run failed", fontsize=9)
    colours = _colours(frame.label)
    for ax, task in zip(axes.flat, panels):
        split, metric = scored[task]
        _lines(ax, frame[frame.task == task], colours, x="lr")
        ax.set_xscale("log")
        ax.set_title(f"{task}: {direction(task_class(task).spec(metric).better)}", fontsize=9)
        ax.set_xlabel("learning rate")
        ax.set_ylabel(metric_label(task, metric, split))
        ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    _legend(fig, colours)
    return _save(fig, out_dir, "lr")


#: the probe tasks whose subject-number probe is stored per distance from the subject
NUMBER_PROBES = ("probe_number", "probe_number_lm")


def plot_probe(store: RunStore, out_dir: Path) -> list[Path]:
    """Subject-number probe accuracy (top layer, held-out sentences) against the distance from
    the subject: a row per probe task and probing set, a panel for all sentences, one per group
    (number of attractors; original or nonce), and one for selectivity (accuracy minus
    control-task accuracy)."""
    runs, metrics = _frame(store)
    empty = f"no number-probe results of {', '.join(NUMBER_PROBES)} in the run store {store.root}"
    if metrics.empty:
        raise ValueError(empty)
    family = metrics.task.astype(str).str.split("/").str[0]
    wanted = metrics[family.isin(NUMBER_PROBES) & metrics.length.notna()
                     & metrics.metric.astype(str).str.match(r"number_(accuracy|selectivity)($|_attractors_|_original|_nonce)")]
    if wanted.empty:
        raise ValueError(empty)
    rows = sorted(set(zip(wanted.task, wanted.split)))

    def order(metric: str):
        return (metric == "number_selectivity", metric != "number_accuracy", metric)

    panels = {row: sorted(set(wanted[(wanted.task == row[0]) & (wanted.split == row[1])].metric), key=order)
              for row in rows}
    columns = max(len(p) for p in panels.values())
    fig, axes = plt.subplots(len(rows), columns, figsize=(3.4 * columns, 3.0 * len(rows)), squeeze=False,
                             layout="constrained")
    fig.suptitle("subject-number probe on the top layer, held-out sentences; 0 = the subject itself", fontsize=9)
    colours = _colours(wanted.label)
    for axes_row, (task, split) in zip(axes, rows):
        for ax in axes_row[len(panels[(task, split)]):]:
            ax.set_visible(False)
        for ax, metric in zip(axes_row, panels[(task, split)]):
            data = wanted[(wanted.task == task) & (wanted.split == split) & (wanted.metric == metric)]
            _lines(ax, data, colours)
            ax.axhline(0.0 if metric == "number_selectivity" else 0.5, color="black", linewidth=0.5)
            group = metric.removeprefix("number_accuracy").removeprefix("_").replace("attractors_", "attractors ")
            what = "selectivity" if metric == "number_selectivity" else group or "all sentences"
            ax.set_title(f"{task} {split}: {what}", fontsize=8)
            ax.set_xlabel("distance from the subject (words)")
            ax.set_ylabel(metric_label(task, metric, split), fontsize=7)
    _legend(fig, colours)
    return _save(fig, out_dir, "probe")


PLOTS = {"extrapolation": plot_extrapolation, "agreement": plot_agreement, "probe": plot_probe,
         "pareto": plot_pareto, "lr": plot_lr}
