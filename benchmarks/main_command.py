"""The README's main command, timed end to end, and where its time goes: start-up (until the
first run starts), the runs, and what follows the last run (the summary and the table files).

    python benchmarks/main_command.py --data-dir ../shared/data --repeats 3

Each repeat runs the command (`harness run --arch lstm,transformer --tasks all --budget smoke`)
into a new, empty run store in a temporary folder, removed afterwards. It uses whatever cores are
free: time it on an otherwise idle machine. Prints one line per repeat, then the medians.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from harness.store import RunStore

COMMAND = ["run", "--arch", "lstm,transformer", "--tasks", "all", "--budget", "smoke"]


def breakdown(results: str, started: float, ended: float) -> dict:
    """The parts of one timed command whose store is ``results``: ``started`` and ``ended`` are
    the command's start and exit (seconds since the epoch, as the store records runs)."""
    runs = RunStore(results, create=False).runs()
    first, last = float(runs.started_at.min()), float(runs.finished_at.max())
    return {"runs": len(runs), "finished": int((runs.status == "finished").sum()),
            "wall_s": ended - started, "startup_s": first - started,
            "run_s": float((runs.finished_at - runs.started_at).sum()),
            "span_s": last - first, "after_s": ended - last}


def describe(parts: dict) -> str:
    return (f"{parts['wall_s'] / 60:.1f} min ({parts['wall_s']:.0f} s): start-up {parts['startup_s']:.1f} s, "
            f"first run start to last run end {parts['span_s']:.0f} s, after the last run {parts['after_s']:.1f} s; "
            f"{parts['finished']} of {parts['runs']} runs finished, {parts['run_s']:,.0f} s of runs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {platform.machine()}, {cores} cores available, Python {platform.python_version()}")
    print("command: harness " + " ".join(COMMAND), flush=True)
    measured = []
    for repeat in range(1, args.repeats + 1):
        with tempfile.TemporaryDirectory(prefix="main-command-") as results:
            argv = [sys.executable, "-m", "harness", *COMMAND, "--results", results]
            if args.data_dir:
                argv += ["--data-dir", args.data_dir]
            started = time.time()
            done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            ended = time.time()
            if done.returncode not in (0, 1):  # 1: a run failed, which the line below shows
                sys.exit(f"the command exited {done.returncode}:\n{done.stderr[-2000:]}")
            measured.append(breakdown(results, started, ended))
        print(f"repeat {repeat}: {describe(measured[-1])}", flush=True)
    if len(measured) > 1:
        print("median: " + describe({k: statistics.median(m[k] for m in measured) for k in measured[0]}))


if __name__ == "__main__":
    main()
