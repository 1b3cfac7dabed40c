"""What ``harness run`` and ``harness sweep`` show: the plan before anything runs (runs to do and
already done, tasks × backbones × seeds, an estimate of the time from the run store's own finished
runs), the libraries kept quiet while runs execute (unless ``-v``), and at the end a summary a
terminal can show, with the full tables written to files."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import textwrap
import time
import warnings
from functools import partialmethod
from pathlib import Path
from typing import TYPE_CHECKING

from harness.store import FAILED_STATUSES, FINISHED, RunStore, left_to_run

if TYPE_CHECKING:
    import pandas as pd

#: screen width the plan, the summary and the file list keep to
WIDTH = 120

#: environment that quiets third-party libraries, in this process and in workers it starts:
#: progress bars (tqdm, Hugging Face), log levels (transformers, datasets, lm-eval), W&B, tokenizers
QUIET_ENV = {
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DATASETS_VERBOSITY": "error",
    "LMEVAL_LOG_LEVEL": "ERROR",
    "WANDB_SILENT": "true",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore",
}
#: environment that turns off every tqdm bar not asked for explicitly (workers read it at import)
NO_BARS_ENV = {"TQDM_DISABLE": "1"}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def duration(seconds: float) -> str:
    """12 s, 14 min, 2 h 05 min."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def _budget_key(cfg_json: dict) -> tuple:
    train = cfg_json["train"]
    return (train["steps"], train["batch_size"], train["seq_len"], str(cfg_json["device"]).split(":")[0])


def wall_times(store: RunStore) -> pd.Series:
    """Each recorded run's wall time in seconds, by run id."""
    metrics = store.metrics()
    return metrics[(metrics.split == "run") & (metrics.metric == "wall_time_s")].set_index("run_id").value


def estimate(configs, store: RunStore) -> tuple[float, list, list]:
    """(seconds, configs estimated, configs not estimated): each config's time is the median
    wall time of the store's finished runs of the same task label, size and budget (steps, batch,
    length, device type), of its own backbone when there are some, of any backbone otherwise."""
    from harness.rows import task_labels

    runs = store.runs()
    runs = runs[runs.status == FINISHED]
    if runs.empty:
        return 0.0, [], list(configs)
    wall = wall_times(store)
    labels = task_labels(runs)
    seen: dict[tuple, list[float]] = {}
    for r in runs.itertuples():
        if r.run_id not in wall.index:
            continue
        config = json.loads(r.config)
        key = (labels[r.run_id], r.size, _budget_key(config))
        seconds = float(wall.loc[r.run_id])
        seen.setdefault(key, []).append(seconds)
        seen.setdefault((*key, r.arch), []).append(seconds)
    total, known, unknown = 0.0, [], []
    for cfg in configs:
        key = (cfg.task_label, cfg.size, _budget_key(cfg.model_dump(mode="json")))
        times = seen.get((*key, cfg.arch)) or seen.get(key)
        if times:
            total += statistics.median(times)
            known.append(cfg)
        else:
            unknown.append(cfg)
    return total, known, unknown


def run_name(cfg) -> str:
    """A run as progress lines name it."""
    return f"{cfg.label} {cfg.task_label} size={cfg.size} seed={cfg.seed} ({cfg.run_id})"


class Progress:
    """The line a sweep prints as each run ends: how many of its runs are done, the run and its
    outcome, the time since the start, and about how long the rest will take. Runs still to do
    are timed as the plan times them (this store's finished runs of the same task, size and
    budget, which include those this sweep has just run); runs with no such run are timed at
    this sweep's own pace so far, in training work (``expected_work``: the runs it has trained
    took this long for this much work), or per run while it has trained none; a run that trains
    nothing (a zero-shot score) at the median time of the plan's finished ones, and not at all
    before one has finished. ``workers`` run side by side: the stored times are shared among
    them."""

    def __init__(self, configs, store: RunStore, clock=time.perf_counter, workers: int = 1):
        from harness.config import expected_work

        self.configs, self.store, self.clock, self.workers = list(configs), store, clock, workers
        self.work = {c.run_id: expected_work(c) for c in self.configs}
        self.done: set[str] = set()
        self.executed = 0
        self.work_done = 0.0
        self.started = clock()

    def line(self, name: str, run_id: str, outcome: str, executed: bool = True) -> str:
        """Count the run as done (``executed``: run here, not skipped) and return its line."""
        self.done.add(run_id)
        self.executed += executed
        self.work_done += self.work.get(run_id, 0.0) if executed else 0.0
        elapsed = self.clock() - self.started
        text = f"[{len(self.done)}/{len(self.configs)}] {name}: {outcome} · {duration(elapsed)} elapsed"
        runs = self.store.runs()
        finished = set(runs.run_id[runs.status == FINISHED])
        rest = [c for c in self.configs if c.run_id not in self.done and c.run_id not in finished]
        if not rest:
            return text
        seconds, _, unknown = estimate(rest, self.store)
        side_by_side = min(self.workers, len(rest))
        seconds /= side_by_side
        if unknown and not self.executed:
            return text
        if unknown and self.work_done:
            zero_shot = [c for c in unknown if not self.work[c.run_id]]
            seconds += elapsed * sum(self.work[c.run_id] for c in unknown) / self.work_done
            if zero_shot:
                seconds += len(zero_shot) * self._zero_shot_seconds(runs) / side_by_side
        elif unknown:
            seconds += len(unknown) * elapsed / self.executed
        return f"{text}, about {duration(seconds)} left" if seconds else text

    def _zero_shot_seconds(self, runs) -> float:
        """The median time of this plan's finished runs that trained nothing (0 before one has)."""
        zero_shot = set(runs.run_id[runs.status == FINISHED]) & {r for r, w in self.work.items() if not w}
        if not zero_shot:
            return 0.0
        wall = wall_times(self.store)
        wall = wall[wall.index.isin(zero_shot)]
        return float(wall.median()) if len(wall) else 0.0

    def skipped(self, cfg) -> str:
        """Count a run this process leaves alone (recorded already, or running in another process)
        and return its line."""
        return self.line(run_name(cfg), cfg.run_id, f"{self.store.status(cfg.run_id)}, skipped", executed=False)


def _listing(title: str, names) -> list[str]:
    return textwrap.wrap(f"{title}: {', '.join(names)}", WIDTH, initial_indent="  ", subsequent_indent="      ")


def plan_lines(configs, store: RunStore, retry_failed: bool = False, workers: int | None = None) -> list[str]:
    """The plan: how many runs, how many are done, what they cross, and how long the rest should
    take (from this store's finished runs of the same tasks; "no estimate yet" without any)."""
    statuses = {c.run_id: store.status(c.run_id) for c in configs}
    done = sum(s == FINISHED for s in statuses.values())
    failed = sum(s in FAILED_STATUSES for s in statuses.values())
    skipped = 0 if retry_failed else failed
    todo = [c for c in configs if left_to_run(statuses[c.run_id], retry_failed)]
    first = f"{len(configs)} runs, {done} already finished, {len(todo)} to run"
    if skipped:
        first += f", {skipped} recorded as failed, diverged or oom (kept; --retry-failed reruns them)"
    tasks = sorted({c.task_label for c in configs})
    archs = sorted({c.arch for c in configs})
    settings = sorted({c.label for c in configs})
    seeds = sorted({c.seed for c in configs})
    sizes = sorted({c.size for c in configs})
    cross = (f"  {_plural(len(tasks), 'task')} × {_plural(len(archs), 'backbone')}"
             + (f" ({_plural(len(settings), 'setting')})" if len(settings) != len(archs) else "")
             + f" × {_plural(len(seeds), 'seed')} ({', '.join(map(str, seeds))})"
             + f", size {', '.join(sizes)}")
    lines = [first, cross, *_listing("tasks", tasks),
             *_listing("backbones" if len(settings) == len(archs) else "rows", settings)]
    if not todo:
        return lines
    seconds, known, unknown = estimate(todo, store)
    source = "from this store's finished runs of the same task, size and budget"
    if not known:
        lines.append(f"  estimate: no estimate yet (no finished run in {store.root} of the same task, "
                     "size and budget to time it by)")
        return lines
    share = "" if not unknown else f" for {len(known)} of the {len(todo)} runs to run"
    text = f"  estimate: about {duration(seconds)}{share} one after another ({source})"
    if workers and workers > 1:
        text += f"; {workers} workers share them"
    if unknown:
        text += f"; no estimate yet for {', '.join(sorted({c.task_label for c in unknown}))}"
    lines += textwrap.wrap(text, WIDTH, subsequent_indent="    ")
    return lines


@contextlib.contextmanager
def quiet(verbose: bool = False, progress: bool = True):
    """Unless ``verbose``: the libraries' own progress bars, log lines below errors (lm-eval, Ray,
    W&B, Hugging Face, ...) and warnings are silenced, in this process and in worker processes
    started meanwhile (through the environment); everything is as before afterwards. The
    harness's own training bar passes ``disable`` explicitly, so ``progress`` alone decides it;
    ``progress=False`` also turns the libraries' bars off with ``verbose``."""
    env = ({} if verbose else dict(QUIET_ENV)) | ({} if progress and verbose else dict(NO_BARS_ENV))
    with environment_set(env):
        import tqdm.std

        init = tqdm.std.tqdm.__dict__["__init__"]
        if env.get("TQDM_DISABLE"):  # tqdm read its environment at import: default its `disable` here
            tqdm.std.tqdm.__init__ = partialmethod(init, disable=True)
        bars = _hf_bars(disable=not verbose)
        previous_disable = logging.root.manager.disable
        with warnings.catch_warnings():
            if not verbose:
                logging.disable(logging.WARNING)  # every logger: errors only
                warnings.simplefilter("ignore")
            try:
                yield
            finally:
                logging.disable(previous_disable)
                tqdm.std.tqdm.__init__ = init
                for restore in bars:
                    restore()


@contextlib.contextmanager
def environment_set(variables: dict[str, str]):
    """``variables`` set in this process's environment (and so in processes started meanwhile);
    as before afterwards."""
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _hf_bars(disable: bool) -> list:
    """Turn off the bars of Hugging Face libraries already imported (later imports read the
    environment); returns the functions that restore them."""
    import sys

    restore = []
    if not disable:
        return restore
    for name in ("datasets", "huggingface_hub"):
        module = sys.modules.get(name)
        utils = getattr(module, "utils", None) if module else None
        off, on = getattr(utils, "disable_progress_bars", None), getattr(utils, "enable_progress_bars", None)
        check = getattr(utils, "are_progress_bars_disabled", None)
        if off and on and check and not check():
            off()
            restore.append(on)
    return restore


def _slug(label: str) -> str:
    return label.replace("/", "__")


def write_tables(store: RunStore, run_ids: list[str], folder: Path) -> dict[str, Path]:
    """The full tables of these runs, each as .md, .tex and .csv in ``folder``: ``results`` (every
    task and metric), ``efficiency`` (params, throughput, memory per training task) and one per
    task (``task_<label>``, with its parameter count); returns name → the Markdown file."""
    from harness.core.registry import TASKS
    from harness.rows import task_labels
    from harness.render import write_formats
    from harness.tables import make_tables

    runs = store.runs()
    runs = runs[runs.run_id.isin(run_ids)]
    labels = sorted({t for t in task_labels(runs).values() if t.split("/")[0] in TASKS})
    tables = {"results": {}}
    if any(TASKS.get(t.split("/")[0]).kind != "zero_shot" for t in labels):
        tables["efficiency"] = {"efficiency": True}
    for label in labels:
        tables[f"task_{_slug(label)}"] = {"task": label}
    folder.mkdir(parents=True, exist_ok=True)
    return {name: write_formats(folder, name, make_tables(store, run_ids=run_ids, **selection))
            for name, selection in tables.items()}


def table_file_lines(written: dict[str, Path]) -> list[str]:
    """Where the full tables are, for the screen."""
    what = {"results": "every task and metric, mean ± std, bold best, caption",
            "efficiency": "params, training/inference tokens/s and peak memory per task"}
    shown = {str(written[name]): description for name, description in what.items() if name in written}
    per_task = {name.removeprefix("task_"): path for name, path in written.items() if name.startswith("task_")}
    if per_task:
        template = str(next(iter(per_task.values())).parent / "task_<task>.md")
        shown[template] = "one per task, with its parameter count; <task>: " + ", ".join(per_task)
    width = max(map(len, shown))
    lines = ["full tables (each also as .tex and .csv beside it):"]
    for path, description in shown.items():
        lines += textwrap.wrap(f"{path.ljust(width)}  {description}", WIDTH, initial_indent="  ",
                               subsequent_indent=" " * (width + 4), break_on_hyphens=False)
    return lines
