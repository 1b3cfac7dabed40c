"""What a results table's caption states: statistic, seeds and test; each task's budget, batch
shape, dtype, the part of a split it scored, task versions and zero-shot scoring; the device,
torch and git SHA the runs recorded."""
from __future__ import annotations

import json

import pandas as pd

from harness.core.references import is_reference
from harness.core.registry import TASKS
from harness.render import ENVIRONMENT_KEYS
from harness.stats import ALPHA


def environments(runs: pd.DataFrame) -> dict[str, list[str]]:
    """Every distinct device name, torch and Python version and git SHA the runs recorded."""
    infos = [json.loads(i or "{}").get("env", {}) for i in runs["info"]]
    return {key: sorted({i.get(key) for i in infos} - {None})
            for key in ENVIRONMENT_KEYS}


def _listed(d: dict) -> str:
    return "; ".join(f"{k} {', '.join(sorted(v)) if isinstance(v, set) else v}" for k, v in sorted(d.items()))


def caption(runs: pd.DataFrame, stat: str, samples: dict) -> str:
    """Budget, seeds, statistic, significance test, batch shape and dtype, partly scored splits,
    task versions, scoring, environment."""
    infos = [json.loads(i or "{}") for i in runs["info"]]
    configs = [json.loads(c) for c in runs["config"]]
    budgets, shapes, dtypes, partial, versions, scoring = {}, {}, set(), {}, {}, {}
    for config, info in zip(configs, infos):
        cls = TASKS.get(config["task"]) if config["task"] in TASKS else None
        train = config["train"]
        if cls is not None and cls.kind != "zero_shot":
            budgets.setdefault(config["task"], set()).add(
                f"{train['steps']} steps of {train['batch_size']}×{train['seq_len']}, lr {train['lr']:g}")
            if info.get("batch_shape"):
                shapes.setdefault(config["task"], set()).add("×".join(map(str, info["batch_shape"])))
            if train.get("final_eval_tokens") is not None and cls.cuts_splits:
                partial.setdefault(f"{config['task']}: {'/'.join(cls.final_splits)} scored on their first",
                                   set()).add(f"{train['final_eval_tokens']:,} tokens")
        if cls is not None and cls.scored_part(config["task_options"]):
            partial.setdefault(f"{config['task']}: scored on", set()).add(cls.scored_part(config["task_options"]))
        if info.get("dtype"):
            dtypes.add(info["dtype"])
        if cls is not None and cls.kind == "zero_shot" and cls.scoring:
            scoring[config["task"]] = cls.scoring
        if "task_version" in info:
            versions.setdefault(config["task"], set()).add(str(info["task_version"]))
    seeds = runs.groupby(["label", "size", "task"]).seed.nunique()
    spread = "std" if stat == "std" else "95% confidence interval (t distribution)"
    several = any(len(v) > 1 for by_row in samples.values() for v in by_row.values())
    test = (f"bold: best in its column; †: not significantly different from it (Welch's t-test "
            f"across seeds, p ≥ {ALPHA})" if several else "bold: best in its column (one seed: no test)")
    env = environments(runs)
    references = sorted({c["arch"] for c in configs if is_reference(c["arch"])})
    parts = [f"mean ± {spread} over seeds (seeds per cell: {seeds.min()}–{seeds.max()})", test,
             f"{', '.join(references)}: pretrained Hugging Face model{'s' if len(references) > 1 else ''} "
             f"scored as a reference (size pretrained), not parameter-matched, not trained here and not ranked" if references else "",
             f"budget: {_listed(budgets)}" if budgets else "",
             f"batch shape (sequences×length): {_listed(shapes)}" if shapes else "",
             f"dtype: {', '.join(sorted(dtypes))}" if dtypes else "",
             "; ".join(f"{k} {', '.join(sorted(v))}" for k, v in sorted(partial.items())),
             f"task versions: {_listed(versions)}" if versions else "",
             f"scoring: {_listed(scoring)}" if scoring else "",
             f"device: {'; '.join(env['device_name'])}", f"torch {', '.join(env['torch_version'])}",
             f"git {', '.join(env['git_sha'])}"]
    return "; ".join(p for p in parts if p)
