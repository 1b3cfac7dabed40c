"""What a table row and column are: a run's row label (its architecture plus every setting that
varies), its task label, the columns each task shows, and the spec of the metric behind a column."""
from __future__ import annotations

import json

import pandas as pd

from harness.config import task_arch_defaults, task_label
from harness.core.metrics import MetricSpec
from harness.core.registry import ARCHITECTURES, TASKS
from harness.store import RunStore

#: efficiency columns shown for every task: (split, metric) → heading
EFFICIENCY = {
    ("run", "params_non_embedding"): "params",
    ("train", "tokens_per_s"): "train tok/s",
    ("inference", "tokens_per_s"): "infer tok/s",
    ("run", "peak_memory_mb"): "peak MB",
}


def task_class(label: str):
    """The task class of a task label such as ``extrapolation/parity`` (None: not registered)."""
    base = label.split("/")[0]
    return TASKS.get(base) if base in TASKS else None


def columns(task: str) -> dict[tuple[str, str], str]:
    """(split, metric) → heading for a task label such as ``extrapolation/parity``."""
    cols = {(split, metric): f"{split} {metric}" for split, metric in TASKS.get(task.split("/")[0]).table_metrics}
    return {**cols, **EFFICIENCY}


def column_spec(task: str, heading: str) -> MetricSpec | None:
    """The spec of the metric behind column ``heading`` of task label ``task`` (None: the task or
    the column is unknown)."""
    cls = task_class(task)
    if cls is None:
        return None
    metric = next((m for (_, m), h in columns(task).items() if h == heading), None)
    return None if metric is None else cls.spec(metric)


def length_metric(label: str) -> str | None:
    """The metric a task label (e.g. ``extrapolation/parity``) stores per length, if any."""
    cls = task_class(label)
    return cls.length_metric if cls is not None else None


def arch_options(config: dict) -> dict:
    """Backbone options, those at their task's own default (bidirectional for tagging) read as the
    backbone's default, so one backbone's rows line up across tasks; options a stored config leaves
    out while at their default (``id_optional``) read as that default."""
    options = dict(config["arch_options"])
    if config["task"] in TASKS and config["arch"] in ARCHITECTURES:
        option_cls = ARCHITECTURES.get(config["arch"]).Options
        for k in getattr(option_cls, "id_optional", ()):  # a plugin's options may not derive from ours
            options.setdefault(k, option_cls.model_fields[k].default)
        plain = option_cls().model_dump(mode="json")
        for k, v in task_arch_defaults(config["task"], config["arch"]).items():
            if options.get(k) == v:
                options[k] = plain[k]
    return options


def upstream_configs(store: RunStore) -> dict[str, dict]:
    """Run id → config of every recorded run, where ``row_labels`` finds a run's upstream."""
    return {r.run_id: json.loads(r.config) for r in store.runs().itertuples()}


def _flat(config: dict, upstreams: dict[str, dict]) -> dict:
    flat = arch_options(config)
    up = upstreams.get(config.get("upstream"))
    if up is not None:  # the upstream run's task options (a subword lm) set a zero-shot row apart
        flat.update({f"{up['task']}.{k}": v for k, v in up["task_options"].items()})
    flat.update({f"task.{k}": v for k, v in config["task_options"].items()})
    flat.update(config["train"])
    return flat


def _set_apart(config: dict, upstreams: dict[str, dict]) -> set[str]:
    """The upstream run's options that always join a row label, varying or not (a subword
    ``lm``'s ``bpe_vocab``: its models read other tokens)."""
    up = upstreams.get(config.get("upstream"))
    if up is None or up["task"] not in TASKS:
        return set()
    return {f"{up['task']}.{k}" for k in TASKS.get(up["task"]).label_options
            if up["task_options"].get(k) is not None}


def task_labels(runs: pd.DataFrame) -> dict[str, str]:
    return {r.run_id: task_label((c := json.loads(r.config))["task"], c["task_options"]) for r in runs.itertuples()}


def row_labels(runs: pd.DataFrame, ignore: frozenset[str] = frozenset(),
               upstreams: dict[str, dict] | None = None, across_tasks: bool = False) -> dict[str, str]:
    """Row label per run: its architecture plus every setting that differs between the runs of
    the same architecture and task, or from the architecture's defaults (seeds are averaged);
    settings in ``ignore`` never split rows. ``upstreams`` (``upstream_configs``) adds the task
    options of each run's upstream run, as ``lm.bpe_vocab``. ``across_tasks``: for a view whose
    row spans several tasks of one family (the MAD score's six), a setting that differs between
    any of the architecture's runs labels all of them, so one row is one setting in every column."""
    upstreams = upstreams or {}
    configs = {r.run_id: json.loads(r.config) for r in runs.itertuples()}
    groups: dict[tuple[str, str], list[str]] = {}
    for run_id, config in configs.items():
        task = config["task"] if across_tasks else task_label(config["task"], config["task_options"])
        groups.setdefault((config["arch"], task), []).append(run_id)
    # backbone options that vary anywhere label every row of that architecture alike
    values: dict[tuple[str, str], set[str]] = {}
    for config in configs.values():
        for k, v in arch_options(config).items():
            values.setdefault((config["arch"], k), set()).add(json.dumps(v))
    arch_varying = {arch: {k for (a, k), seen in values.items() if a == arch and len(seen) > 1}
                    for arch in {c["arch"] for c in configs.values()}}
    labels = {}
    for (arch, _), ids in groups.items():
        flats = {i: _flat(configs[i], upstreams) for i in ids}
        keys = sorted({k for f in flats.values() for k in f})
        varying = [k for k in keys if k not in ignore and (
            len({json.dumps(f.get(k)) for f in flats.values()}) > 1 or k in arch_varying[arch])]
        for i in ids:
            base = runs.loc[runs.run_id == i, "label"].iloc[0]
            # a setting this run leaves unset (a task option at its default) adds nothing to its label
            shown = [*varying, *sorted(_set_apart(configs[i], upstreams) - set(varying))]
            extra = [f"{k}={flats[i][k]}" for k in shown if f"{k}=" not in base and k in flats[i]]
            if extra:
                base = f"{base[:-1]},{','.join(extra)}]" if base.endswith("]") else f"{base}[{','.join(extra)}]"
            labels[i] = base
    return labels


def row_params(store: RunStore, runs: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Non-embedding parameter count per (row, size), as 0.50M."""
    metrics = store.metrics()
    counts = metrics[(metrics.metric == "params_non_embedding") & metrics.run_id.isin(runs.run_id)]
    counts = counts.assign(label=counts.run_id.map(dict(zip(runs.run_id, runs.label))))
    return {(label, size): f"{group.value.mean() / 1e6:.2f}M"
            for (label, size), group in counts.groupby(["label", "size"])}
