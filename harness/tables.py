"""Paper tables from the run store: rows are architectures, columns task metrics, mean ± std over seeds."""
from __future__ import annotations

import json
import math

import pandas as pd

from harness.registry import TASKS
from harness.store import FINISHED, RunStore

#: efficiency columns shown for every task: (split, metric) → heading
EFFICIENCY = {
    ("run", "params_non_embedding"): "params",
    ("train", "tokens_per_s"): "train tok/s",
    ("inference", "tokens_per_s"): "infer tok/s",
    ("run", "peak_memory_mb"): "peak MB",
}
FORMATS = ("md", "latex", "csv")


def _columns(task: str) -> dict[tuple[str, str], str]:
    cols = {(split, metric): f"{split} {metric}" for split, metric in TASKS.get(task).table_metrics}
    return {**cols, **EFFICIENCY}


def _number(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "nan"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _flat(config: dict) -> dict:
    flat = dict(config["arch_options"])
    flat.update({f"task.{k}": v for k, v in config["task_options"].items()})
    flat.update(config["train"])
    return flat


def row_labels(runs: pd.DataFrame) -> dict[str, str]:
    """Row label per run: its architecture plus every setting that differs between the runs of
    the same architecture, or from the architecture's defaults (seeds are averaged over)."""
    configs = {r.run_id: json.loads(r.config) for r in runs.itertuples()}
    labels = {}
    for arch in set(runs.arch):
        ids = [r.run_id for r in runs.itertuples() if r.arch == arch]
        flats = {i: _flat(configs[i]) for i in ids}
        keys = sorted({k for f in flats.values() for k in f})
        varying = [k for k in keys if len({json.dumps(f.get(k)) for f in flats.values()}) > 1]
        for i in ids:
            base = runs.loc[runs.run_id == i, "label"].iloc[0]
            extra = [f"{k}={flats[i].get(k)}" for k in varying if f"{k}=" not in base]
            if extra:
                base = f"{base[:-1]},{','.join(extra)}]" if base.endswith("]") else f"{base}[{','.join(extra)}]"
            labels[i] = base
    return labels


def summarise(store: RunStore, run_ids: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(values, runs): one row per (label, size, task, column) with mean, std, n, and the runs."""
    runs = store.runs()
    metrics = store.metrics()
    if run_ids is not None:
        runs = runs[runs.run_id.isin(run_ids)]
        metrics = metrics[metrics.run_id.isin(run_ids)]
    labels = row_labels(runs)
    runs = runs.assign(label=runs.run_id.map(labels))
    metrics = metrics.assign(label=metrics.run_id.map(labels))
    train_length = {r.run_id: json.loads(r.info or "{}").get("train_length") for r in runs.itertuples()}
    metrics = metrics.assign(train_length=metrics.run_id.map(train_length))
    keep = []
    for row in metrics.itertuples():
        heading = _columns(row.task).get((row.split, row.metric)) if row.task in TASKS else None
        at_train_length = pd.isna(row.length) or row.length == row.train_length
        keep.append(heading if heading and at_train_length and row.status == FINISHED else None)
    metrics = metrics.assign(column=keep).dropna(subset=["column"])
    values = (metrics.groupby(["label", "size", "task", "column"], sort=False)["value"]
              .agg(["mean", "std", "count"]).reset_index())
    return values, runs


def make_table(store: RunStore, fmt: str = "md", run_ids: list[str] | None = None) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r} (choose from {', '.join(FORMATS)})")
    values, runs = summarise(store, run_ids)
    if runs.empty:
        return "no runs recorded yet"
    failed = (runs[runs.status != FINISHED].groupby(["label", "size", "task"]).status
              .agg(lambda s: ", ".join(f"{n} {st}" for st, n in s.value_counts().items())))
    rows = sorted({(r.label, r.size) for r in runs.itertuples()})
    tasks = sorted(set(runs.task))
    order = [(t, h) for t in tasks for h in _columns(t).values()]
    table = pd.DataFrame(index=pd.MultiIndex.from_tuples(rows, names=["arch", "size"]),
                         columns=[f"{t}: {h}" for t, h in order], dtype=object)
    numeric = {}
    for v in values.itertuples():
        col = f"{v.task}: {v.column}"
        std = v.std if v.count > 1 else float("nan")
        numeric[(v.label, v.size, col)] = (v.mean, std, v.count)
        text = _number(v.mean) if v.count == 1 else f"{_number(v.mean)} ± {_number(v.std)}"
        table.loc[(v.label, v.size), col] = text
    for (label, size, task), note in failed.items():
        for t, h in order:
            if t == task:
                col = f"{t}: {h}"
                cell = table.loc[(label, size), col]
                table.loc[(label, size), col] = f"{cell} [{note}]" if isinstance(cell, str) else note
    table = table.dropna(axis=1, how="all").fillna("—")
    seeds = runs.groupby(["label", "size", "task"]).seed.nunique()
    envs = {json.loads(i or "{}").get("env", {}).get("device_name") for i in runs["info"]}
    torch_versions = {json.loads(i or "{}").get("env", {}).get("torch_version") for i in runs["info"]}
    shas = {json.loads(i or "{}").get("env", {}).get("git_sha") for i in runs["info"]}
    caption = (f"mean ± std over seeds (seeds per cell: {seeds.min()}–{seeds.max()}); "
               f"device: {'; '.join(sorted(filter(None, envs)))}; torch {', '.join(sorted(filter(None, torch_versions)))}; "
               f"git {', '.join(sorted(filter(None, shas)))}")
    if fmt == "md":
        return f"{table.reset_index().to_markdown(index=False, disable_numparse=True)}\n\n{caption}"
    if fmt == "latex":
        latex = table.reset_index().to_latex(index=False).replace("±", r"$\pm$")
        return f"% {caption}\n{latex}"
    flat = []
    for (label, size, col), (mean, std, n) in numeric.items():
        flat.append({"arch": label, "size": size, "column": col, "mean": mean, "std": std, "n": n})
    wide = pd.DataFrame(flat).pivot_table(index=["arch", "size"], columns="column",
                                          values=["mean", "std"], dropna=False)
    wide.columns = [f"{col} {stat}" for stat, col in wide.columns]
    return wide[sorted(wide.columns)].reset_index().to_csv(index=False)


def export(store: RunStore, fmt: str = "csv") -> str:
    """Every stored number, one row per run × metric × split × length."""
    frame = store.metrics()
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "jsonl":
        return frame.to_json(orient="records", lines=True)
    raise ValueError(f"unknown export format {fmt!r} (choose from csv, jsonl)")
