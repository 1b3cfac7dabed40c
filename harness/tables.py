"""Paper tables from the run store: rows are architectures, columns task metrics, mean ± std over seeds."""
from __future__ import annotations

import json
import math
import warnings

import pandas as pd

from harness.config import task_arch_defaults, task_label
from harness.core.train_config import TrainConfig
from harness.core.registry import ARCHITECTURES, TASKS, suggest
from harness.core.metrics import Metric
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


def _arch_options(config: dict) -> dict:
    """Backbone options, those at their task's own default (bidirectional for tagging) read as the
    backbone's default, so one backbone's rows line up across tasks."""
    options = dict(config["arch_options"])
    if config["task"] in TASKS and config["arch"] in ARCHITECTURES:
        plain = ARCHITECTURES.get(config["arch"]).Options().model_dump(mode="json")
        for k, v in task_arch_defaults(config["task"], config["arch"]).items():
            if options.get(k) == v:
                options[k] = plain[k]
    return options


def _flat(config: dict) -> dict:
    flat = _arch_options(config)
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
        for k, v in _arch_options(config).items():
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
    scores an upstream model without training has the upstream run's score."""
    runs = store.runs()
    metrics = store.metrics()
    configs = {r.run_id: json.loads(r.config) for r in runs.itertuples()}
    own = {}
    for run_id, rows in metrics.groupby("run_id"):
        config = configs[run_id]
        task = TASKS.get(config["task"]) if config["task"] in TASKS else None
        if task is None or task.kind == "zero_shot":
            continue
        stored = [Metric(r.split, r.metric, r.value, None if pd.isna(r.length) else int(r.length))
                  for r in rows.itertuples()]
        try:
            own[run_id] = task.dev_score(stored, TrainConfig(**config["train"]))
        except KeyError:  # no dev score recorded
            pass
    scored = {run_id: run_id if run_id in own else config.get("upstream") for run_id, config in configs.items()}
    return {run_id: own[source] for run_id, source in scored.items() if source in own}


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
                           "base": TASKS.get(c["task"]).upstream if TASKS.get(c["task"]).kind == "zero_shot" else c["task"]}
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
              .agg(["mean", "std", "count", list]).rename(columns={"list": "samples"}).reset_index())
    return values, runs


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
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r} (choose from {', '.join(FORMATS)})")
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
        order = [(t, h) for t in tasks for h in _columns(t).values()
                 if h != "params" and (len(tasks) == 1 or h not in EFFICIENCY.values())]
    params = _params(store, runs)
    index = pd.MultiIndex.from_tuples([(label, size, params.get((label, size), "—")) for label, size in rows],
                                      names=["arch", "size", "params"])
    table = pd.DataFrame(index=index, columns=[f"{t}: {h}" for t, h in order], dtype=object)
    position = {(label, size): i for i, (label, size) in enumerate(rows)}
    numeric, samples = {}, {}
    for v in values.itertuples():
        col = f"{v.task}: {v.column}"
        if col not in table.columns:
            continue
        spread = _spread(v.std, v.count, stat)
        numeric[(v.label, v.size, col)] = (v.mean, v.std if v.count > 1 else float("nan"), v.count)
        samples.setdefault(col, {})[position[(v.label, v.size)]] = v.samples
        table.iloc[position[(v.label, v.size)], table.columns.get_loc(col)] = _cell(v.mean, spread, v.count)
    for (label, size, task), note in failed.items():
        for t, h in order:
            if t == task:
                col = table.columns.get_loc(f"{t}: {h}")
                cell = table.iloc[position[(label, size)], col]
                table.iloc[position[(label, size)], col] = f"{cell} [{note}]" if isinstance(cell, str) else note
    marks = {}
    for col, by_row in samples.items():
        for row, mark in rank_column(by_row, _direction(col.split(": ", 1)[1])).items():
            marks[(row, col)] = mark
    table = table.dropna(axis=1, how="all").fillna("—")
    caption = f"{stated}; {_caption(runs, stat, samples)}"
    if fmt != "csv":
        return _render(table.reset_index(), caption, fmt, marks)
    flat = []
    for (label, size, col), (mean, std, n) in numeric.items():
        flat.append({"arch": label, "size": size, "column": col, "mean": mean, "std": std, "n": n})
    wide = pd.DataFrame(flat).pivot_table(index=["arch", "size"], columns="column",
                                          values=["mean", "std"], dropna=False)
    wide.columns = [f"{col} {stat}" for stat, col in wide.columns]
    return wide[sorted(wide.columns)].reset_index().to_csv(index=False)


STATS = ("std", "ci95")
#: significance level of the test against the best row
ALPHA = 0.05


def _spread(std: float, count: int, stat: str) -> float:
    """± part of a cell: the standard deviation, or the half-width of the 95% t-interval."""
    if count < 2:
        return float("nan")
    if stat == "std":
        return std
    from scipy import stats

    return float(stats.t.ppf(0.975, count - 1) * std / math.sqrt(count))


def _direction(heading: str) -> str | None:
    """Whether a column is better high ("max") or low ("min"); None: not a ranking."""
    metric = heading.rsplit(" ", 1)[-1] if " " in heading else heading
    if heading in ("params", "params_non_embedding") or any(
            k in heading for k in ("coverage", "best_step", "ties", "items", "unk_rate", "version")):
        return None
    if heading.endswith("MB") or any(k in metric for k in ("ppl", "loss", "perplexity")):
        return "min"
    return "max"


def rank_column(samples: dict, direction: str | None) -> dict:
    """{row: "best" | "tie"}: the row(s) with the best mean, and the rows whose seeds are not
    significantly different from the best row's (Welch's t-test, p ≥ ALPHA; needs ≥ 2 seeds
    on both sides)."""
    if direction is None or not samples:
        return {}
    from scipy import stats

    means = {row: sum(v) / len(v) for row, v in samples.items() if v and all(map(math.isfinite, v))}
    if not means:
        return {}
    best_mean = (max if direction == "max" else min)(means.values())
    best_rows = [row for row, m in means.items() if m == best_mean]
    marks = {row: "best" for row in best_rows}
    reference = samples[best_rows[0]]
    for row, m in means.items():
        if row in marks or len(reference) < 2 or len(samples[row]) < 2:
            continue
        with warnings.catch_warnings():  # nearly constant samples: scipy warns, the p-value stands
            warnings.simplefilter("ignore", RuntimeWarning)
            p = stats.ttest_ind(reference, samples[row], equal_var=False).pvalue
        if not p < ALPHA:  # nan: both constant and equal
            marks[row] = "tie"
    return marks


def _params(store: RunStore, runs: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Non-embedding parameter count per (row, size), as 0.50M."""
    metrics = store.metrics()
    counts = metrics[(metrics.metric == "params_non_embedding") & metrics.run_id.isin(runs.run_id)]
    counts = counts.assign(label=counts.run_id.map(dict(zip(runs.run_id, runs.label))))
    return {(label, size): f"{group.value.mean() / 1e6:.2f}M"
            for (label, size), group in counts.groupby(["label", "size"])}


def environments(runs: pd.DataFrame) -> dict[str, list[str]]:
    """Every distinct device name, torch and Python version and git SHA the runs recorded."""
    infos = [json.loads(i or "{}").get("env", {}) for i in runs["info"]]
    return {key: sorted({i.get(key) for i in infos} - {None})
            for key in ("device_name", "torch_version", "python_version", "git_sha")}


def _caption(runs: pd.DataFrame, stat: str, samples: dict) -> str:
    """Budget, seeds, statistic, significance test, task versions, scoring, environment."""
    infos = [json.loads(i or "{}") for i in runs["info"]]
    configs = [json.loads(c) for c in runs["config"]]
    budgets, versions, scoring = {}, {}, {}
    for config, info in zip(configs, infos):
        cls = TASKS.get(config["task"]) if config["task"] in TASKS else None
        train = config["train"]
        if cls is not None and cls.kind != "zero_shot":
            budgets.setdefault(config["task"], set()).add(
                f"{train['steps']} steps of {train['batch_size']}×{train['seq_len']}, lr {train['lr']:g}")
        if cls is not None and cls.kind == "zero_shot" and cls.scoring:
            scoring[config["task"]] = cls.scoring
        if "task_version" in info:
            versions.setdefault(config["task"], set()).add(str(info["task_version"]))
    seeds = runs.groupby(["label", "size", "task"]).seed.nunique()
    spread = "std" if stat == "std" else "95% confidence interval (t distribution)"
    several = any(len(v) > 1 for by_row in samples.values() for v in by_row.values())
    test = (f"bold: best in its column; †: not significantly different from it (Welch's t-test "
            f"across seeds, p ≥ {ALPHA})" if several else "bold: best in its column (one seed: no test)")

    def listed(d):
        return "; ".join(f"{k} {', '.join(sorted(v)) if isinstance(v, set) else v}" for k, v in sorted(d.items()))

    env = environments(runs)
    parts = [f"mean ± {spread} over seeds (seeds per cell: {seeds.min()}–{seeds.max()})", test,
             f"budget: {listed(budgets)}" if budgets else "",
             f"task versions: {listed(versions)}" if versions else "",
             f"scoring: {listed(scoring)}" if scoring else "",
             f"device: {'; '.join(env['device_name'])}", f"torch {', '.join(env['torch_version'])}",
             f"git {', '.join(env['git_sha'])}"]
    return "; ".join(p for p in parts if p)


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


def _render(table: pd.DataFrame, caption: str, fmt: str, marks: dict | None = None) -> str:
    """Markdown with the caption below, or a LaTeX table (booktabs) with its caption; ``marks``
    maps (row position, column) to "best" (bold) or "tie" (†)."""
    marks = marks or {}
    if fmt == "md":
        shown = table.copy()
        for (row, col), mark in marks.items():
            cell = shown.iloc[row][col]
            shown.iloc[row, shown.columns.get_loc(col)] = f"**{cell}**" if mark == "best" else f"{cell} †"
        return f"{shown.to_markdown(index=False, disable_numparse=True)}\n\n{caption}"
    return latex_table(table, caption, marks)


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "±": r"$\pm$", "—": "---", "–": "--", "×": r"$\times$", "≥": r"$\geq$", "†": r"\dag{}",
                 "·": r"$\cdot$", "²": r"\textsuperscript{2}"}


def latex_escape(text) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def latex_table(table: pd.DataFrame, caption: str, marks: dict | None = None) -> str:
    """A table float ready to ``\\input`` (needs ``\\usepackage{booktabs}``): text columns
    left-aligned, numbers right-aligned, every special character escaped."""
    marks = marks or {}
    numeric = [not any(str(v)[:1].isalpha() for v in table[c] if str(v) not in ("—", "nan")) for c in table.columns]
    spec = "".join("r" if n else "l" for n in numeric)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    for i in range(len(table)):
        cells = []
        for col in table.columns:
            text = latex_escape(table.iloc[i][col])
            mark = marks.get((i, col))
            cells.append(rf"\textbf{{{text}}}" if mark == "best" else rf"{text}\textsuperscript{{\dag}}"
                         if mark == "tie" else text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


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
