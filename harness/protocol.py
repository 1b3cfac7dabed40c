"""Which runs a table reports: every setting, or each row at its best learning rate by mean dev
score over seeds (the dev metric's direction read from its spec)."""
from __future__ import annotations

import json

import pandas as pd

from harness.config import task_label
from harness.core.metrics import Metric
from harness.core.registry import TASKS
from harness.core.train_config import TrainConfig
from harness.rows import row_labels, upstream_configs
from harness.store import RunStore

PROTOCOLS = ("all", "best-lr")
#: the setting best-lr chooses per row, and so leaves out of every row label (as do the views that
#: give each rate a column)
RATE = frozenset({"lr"})


def label_ignores(protocol: str) -> frozenset[str]:
    """The settings ``protocol`` leaves out of row labels: the rate under best-lr, none under all."""
    return RATE if protocol == "best-lr" else frozenset()


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


def dev_better(task: str) -> str:
    """"higher" or "lower": which way the dev metric of ``task`` (a trained task) is better, by
    its spec."""
    cls = TASKS.get(task)
    better = cls.spec(cls.dev_metric).better
    if better is None:
        raise ValueError(f"task {task!r}: dev metric {cls.dev_metric!r} has no better direction")
    return better


def best_lr(store: RunStore, run_ids: list[str] | None = None) -> tuple[list[str], dict[tuple, float]]:
    """Best-of-learning-rate protocol: for every row (architecture and settings other than the
    learning rate), task and size, the learning rate whose mean dev score over seeds is best.
    Returns the runs at the chosen rates and {(label, task, size): lr}."""
    runs = store.runs()
    if run_ids is not None:
        runs = runs[runs.run_id.isin(run_ids)]
    scores = dev_scores(store)
    labels = row_labels(runs, ignore=RATE, upstreams=upstream_configs(store))
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
        chosen[key] = float(means.idxmax() if dev_better(group.base.iloc[0]) == "higher" else means.idxmin())
        kept += list(group[group.lr == chosen[key]].run_id)
    return kept, chosen
