"""Paper tables from the run store: rows are architectures, columns task metrics, mean ± std over seeds."""
from __future__ import annotations

import json
import math

import pandas as pd

from harness.config import TrainConfig, task_label
from harness.registry import TASKS, suggest
from harness.store import FINISHED, Metric, RunStore

#: efficiency columns shown for every task: (split, metric) → heading
EFFICIENCY = {
    ("run", "params_non_embedding"): "params",
    ("train", "tokens_per_s"): "train tok/s",
    ("inference", "tokens_per_s"): "infer tok/s",
    ("run", "peak_memory_mb"): "peak MB",
}
FORMATS = ("md", "latex", "csv")


def _columns(task: str) -> dict[tuple[str, str], str]:
    """(split, metric) → heading for a task label such as ``extrapolation/parity``."""
    cols = {(split, metric): f"{split} {metric}" for split, metric in TASKS.get(task.split("/")[0]).table_metrics}
    return {**cols, **EFFICIENCY}


def _number(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "nan"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _cell(mean: float, std: float, count: int) -> str:
    """A table cell: the mean, and ± the standard deviation when there are several seeds."""
    return _number(mean) if count == 1 else f"{_number(mean)} ± {_number(std)}"


def _flat(config: dict) -> dict:
    flat = dict(config["arch_options"])
    flat.update({f"task.{k}": v for k, v in config["task_options"].items()})
    flat.update(config["train"])
    return flat


def task_labels(runs: pd.DataFrame) -> dict[str, str]:
    return {r.run_id: task_label((c := json.loads(r.config))["task"], c["task_options"]) for r in runs.itertuples()}


def length_metric(label: str) -> str | None:
    """The metric a task label (e.g. ``extrapolation/parity``) stores per length, if any."""
    base = label.split("/")[0]
    return TASKS.get(base).length_metric if base in TASKS else None


def row_labels(runs: pd.DataFrame, ignore: frozenset[str] = frozenset()) -> dict[str, str]:
    """Row label per run: its architecture plus every setting that differs between the runs of
    the same architecture and task, or from the architecture's defaults (seeds are averaged);
    settings in ``ignore`` never split rows."""
    configs = {r.run_id: json.loads(r.config) for r in runs.itertuples()}
    groups: dict[tuple[str, str], list[str]] = {}
    for run_id, config in configs.items():
        groups.setdefault((config["arch"], task_label(config["task"], config["task_options"])), []).append(run_id)
    # backbone options that vary anywhere label every row of that architecture alike
    values: dict[tuple[str, str], set[str]] = {}
    for config in configs.values():
        for k, v in config["arch_options"].items():
            values.setdefault((config["arch"], k), set()).add(json.dumps(v))
    arch_varying = {arch: {k for (a, k), seen in values.items() if a == arch and len(seen) > 1}
                    for arch in {c["arch"] for c in configs.values()}}
    labels = {}
    for (arch, _), ids in groups.items():
        flats = {i: _flat(configs[i]) for i in ids}
        keys = sorted({k for f in flats.values() for k in f})
        varying = [k for k in keys if k not in ignore and (
            len({json.dumps(f.get(k)) for f in flats.values()}) > 1 or k in arch_varying[arch])]
        for i in ids:
            base = runs.loc[runs.run_id == i, "label"].iloc[0]
            extra = [f"{k}={flats[i].get(k)}" for k in varying if f"{k}=" not in base]
            if extra:
                base = f"{base[:-1]},{','.join(extra)}]" if base.endswith("]") else f"{base}[{','.join(extra)}]"
            labels[i] = base
    return labels


PROTOCOLS = ("all", "best-lr")


def dev_scores(store: RunStore) -> dict[str, float]:
    """Each finished run's dev score (its task's dev metric at the training length); a run that
    scores an upstream model has the upstream run's score."""
    runs = store.runs()
    metrics = store.metrics()
    configs = {r.run_id: json.loads(r.config) for r in runs.itertuples()}
    own = {}
    for run_id, rows in metrics.groupby("run_id"):
        config = configs[run_id]
        task = TASKS.get(config["task"]) if config["task"] in TASKS else None
        if task is None or task.upstream:
            continue
        stored = [Metric(r.split, r.metric, r.value, None if pd.isna(r.length) else int(r.length))
                  for r in rows.itertuples()]
        try:
            own[run_id] = task.dev_score(stored, TrainConfig(**config["train"]))
        except KeyError:  # no dev score recorded
            pass
    return {run_id: own[config.get("upstream") or run_id] for run_id, config in configs.items()
            if (config.get("upstream") or run_id) in own}


def best_lr(store: RunStore, run_ids: list[str] | None = None) -> tuple[list[str], dict[tuple, float]]:
    """Best-of-learning-rate protocol: for every row (architecture and settings other than the
    learning rate), task and size, the learning rate whose mean dev score over seeds is best.
    Returns the runs at the chosen rates and {(label, task, size): lr}."""
    runs = store.runs()
    if run_ids is not None:
        runs = runs[runs.run_id.isin(run_ids)]
    scores = dev_scores(store)
    labels = row_labels(runs, ignore=frozenset({"lr"}))
    table = pd.DataFrame([{"run_id": r.run_id, "label": labels[r.run_id],
                           "task": task_label((c := json.loads(r.config))["task"], c["task_options"]),
                           "size": r.size, "lr": c["train"]["lr"], "dev": scores.get(r.run_id, float("nan")),
                           "base": c["task"] if not TASKS.get(c["task"]).upstream else TASKS.get(c["task"]).upstream}
                          for r in runs.itertuples()])
    chosen, kept = {}, []
    for key, group in table.groupby(["label", "task", "size"]):
        means = group.groupby("lr").dev.mean().dropna()
        if means.empty:
            raise ValueError(f"no dev score for {'/'.join(map(str, key))}: cannot choose a learning rate")
        lower_is_better = TASKS.get(group.base.iloc[0]).dev_metric[1]
        chosen[key] = float(means.idxmin() if lower_is_better else means.idxmax())
        kept += list(group[group.lr == chosen[key]].run_id)
    return kept, chosen


def summarise(store: RunStore, run_ids: list[str] | None = None,
              ignore: frozenset[str] = frozenset()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(values, runs): one row per (label, size, task, column) with mean, std, n, and the runs."""
    runs = store.runs()
    metrics = store.metrics()
    if run_ids is not None:
        runs = runs[runs.run_id.isin(run_ids)]
        metrics = metrics[metrics.run_id.isin(run_ids)]
    labels = row_labels(runs, ignore)
    tasks = task_labels(runs)
    runs = runs.assign(label=runs.run_id.map(labels), task=runs.run_id.map(tasks))
    metrics = metrics.assign(label=metrics.run_id.map(labels), task=metrics.run_id.map(tasks))
    train_length = {r.run_id: json.loads(r.info or "{}").get("train_length") for r in runs.itertuples()}
    metrics = metrics.assign(train_length=metrics.run_id.map(train_length))
    keep = []
    for row in metrics.itertuples():
        base = row.task.split("/")[0]
        heading = _columns(row.task).get((row.split, row.metric)) if base in TASKS else None
        if heading and (row.split, row.metric) not in EFFICIENCY and TASKS.get(base).table_at_train_length:
            wanted = row.length == row.train_length
        else:
            wanted = pd.isna(row.length)
        keep.append(heading if heading and wanted and row.status == FINISHED else None)
    metrics = metrics.assign(column=keep).dropna(subset=["column"])
    values = (metrics.groupby(["label", "size", "task", "column"], sort=False)["value"]
              .agg(["mean", "std", "count"]).reset_index())
    return values, runs


def make_table(store: RunStore, fmt: str = "md", run_ids: list[str] | None = None,
               task: str | None = None, protocol: str = "all") -> str:
    """Rows: architecture and size; columns: each task's metrics, plus efficiency columns when
    the table holds one task (``task`` keeps the tasks whose label starts with it). Protocol
    ``all`` reports every setting; ``best-lr`` each row at its best learning rate (by dev score)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r} (choose from {', '.join(FORMATS)})")
    suggest("protocol", protocol, PROTOCOLS)
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
    if len(set(runs.task)) > 1:
        values = values[~values.column.isin(EFFICIENCY.values())]
    failed = (runs[runs.status != FINISHED].groupby(["label", "size", "task"]).status
              .agg(lambda s: ", ".join(f"{n} {st}" for st, n in s.value_counts().items())))
    rows = sorted({(r.label, r.size) for r in runs.itertuples()})
    tasks = sorted(set(runs.task))
    efficiency = len(tasks) == 1
    order = [(t, h) for t in tasks for h in _columns(t).values() if efficiency or h not in EFFICIENCY.values()]
    table = pd.DataFrame(index=pd.MultiIndex.from_tuples(rows, names=["arch", "size"]),
                         columns=[f"{t}: {h}" for t, h in order], dtype=object)
    numeric = {}
    for v in values.itertuples():
        col = f"{v.task}: {v.column}"
        std = v.std if v.count > 1 else float("nan")
        numeric[(v.label, v.size, col)] = (v.mean, std, v.count)
        table.loc[(v.label, v.size), col] = _cell(v.mean, v.std, v.count)
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
    caption = (f"{stated}; mean ± std over seeds (seeds per cell: {seeds.min()}–{seeds.max()}); "
               f"device: {'; '.join(sorted(filter(None, envs)))}; torch {', '.join(sorted(filter(None, torch_versions)))}; "
               f"git {', '.join(sorted(filter(None, shas)))}")
    if fmt != "csv":
        return _render(table.reset_index(), caption, fmt)
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
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r} (choose from {', '.join(FORMATS)})")
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
    cells = stats.apply(lambda r: _cell(r["mean"], r["std"], r["count"]), axis=1)
    table = cells.unstack("length").fillna("—")
    table.columns = [str(c) for c in table.columns]
    caption = f"{task}: {split} {metric} by length (columns); mean ± std over seeds"
    return _render(table.reset_index(), caption, fmt)


def _render(table: pd.DataFrame, caption: str, fmt: str) -> str:
    """Markdown with the caption below, or LaTeX with the caption as a comment above."""
    if fmt == "md":
        return f"{table.to_markdown(index=False, disable_numparse=True)}\n\n{caption}"
    return f"% {caption}\n" + table.to_latex(index=False).replace("±", r"$\pm$")


#: bench columns: row key → heading, and how to print it
BENCH_COLUMNS = {
    "params_non_embedding": ("params", lambda v: f"{v / 1e6:.2f}M"),
    "length": ("length", lambda v: f"{int(v)}"),
    "train_tokens_per_s": ("train tok/s", lambda v: f"{v:,.0f}"),
    "infer_tokens_per_s": ("inference tok/s", lambda v: f"{v:,.0f}"),
    "decode_tokens_per_s": ("decode tok/s", lambda v: f"{v:,.0f}"),
    "decode_ms_per_step": ("decode ms/step", lambda v: f"{v:.2f}"),
    "train_peak_mb": ("train peak MB", lambda v: f"{v:,.0f}"),
    "train_activations_mb": ("activations MB", lambda v: f"{v:,.1f}"),
    "inference_peak_mb": ("inference peak MB", lambda v: f"{v:,.0f}"),
    "decode_state_mb": ("decode state MB", lambda v: f"{v:,.2f}"),
    "train_flops_per_token": ("train GFLOP/token", lambda v: f"{v / 1e9:.3f}"),
    "mfu": ("MFU", lambda v: f"{100 * v:.1f}%"),
}


def bench_label(row) -> str:
    return row["arch"] if row["attention"] in ("—", None) or pd.isna(row["attention"]) \
        else f"{row['arch']} [{row['attention']}]"


def bench_table(rows: pd.DataFrame, fmt: str = "md") -> str:
    """``harness bench`` rows as a table: one row per architecture (and attention backend) and
    length; a phase that failed shows its status instead of a number."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r} (choose from {', '.join(FORMATS)})")
    if fmt == "csv":
        return rows.to_csv(index=False)
    table = pd.DataFrame({"arch": rows.apply(bench_label, axis=1), "kernels": rows.get("kernels")})
    phase_of = {"train": "train", "infer": "inference", "inference": "inference", "decode": "decode"}
    for key, (heading, show) in BENCH_COLUMNS.items():
        if key not in rows or rows[key].isna().all():
            continue
        phase = phase_of.get(key.split("_")[0])
        table[heading] = [show(v) if pd.notna(v) else
                          (r.get(f"{phase}_status", "—").split(" (")[0] if phase else "—")
                          for v, (_, r) in zip(rows[key], rows.iterrows())]
    first = rows.iloc[0]
    memory = {"peak_rss": "resident-set growth of the cell's own process",
              "cuda_max_allocated": "CUDA memory allocated by tensors"}.get(first.get("memory_kind"), "—")
    caption = (f"harness bench: size {first['size']}, batch {first['batch']} × length, "
               f"{first['dtype']}{', torch.compile' if first.get('compiled') else ''}; "
               f"median of ≥ {first.get('repeats')} repeats (and ≥ {first.get('min_seconds')} s) after "
               f"{first.get('warmup')} warm-up; "
               f"decode: the last {int(rows['decode_tokens'].max()) if 'decode_tokens' in rows else '—'} "
               f"tokens generated one at a time after the rest as a prefix; peak memory: {memory}, "
               f"model and optimiser included; activations: tensors saved for the backward pass; "
               f"decode state: RNN state, CNN buffers or KV cache at the full length; device: {', '.join(sorted(set(rows.device_name)))}; "
               f"torch {', '.join(sorted(set(rows.torch_version)))}; git {', '.join(sorted(set(rows.git_sha)))}")
    return _render(table.fillna("—"), caption, fmt)


def export(store: RunStore, fmt: str = "csv") -> str:
    """Every stored number, one row per run × metric × split × length."""
    frame = store.metrics()
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "jsonl":
        return frame.to_json(orient="records", lines=True)
    raise ValueError(f"unknown export format {fmt!r} (choose from csv, jsonl)")
