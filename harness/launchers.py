"""Launchers: where a sweep's runs execute.

- ``local``: one process per worker (by default one per visible GPU, or per CPU core), each
  pinned to its own GPU or given its share of the cores' threads, all claiming runs from the same
  store, the most training first; with one worker, in this process, one run after another. A
  worker that dies is replaced; its run is redone once, then recorded as failed.
- ``ray``: each run is a Ray task asking for one GPU (or some CPUs) on a local or remote Ray
  cluster. Workers need neither the run store nor a shared disk: each runs in a scratch store
  and sends back its metrics and files; the driver writes them into the store.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from harness.config import RunConfig, expected_work
from harness.runner import CHECKPOINT
from harness.core.metrics import Metric
from harness.screen import Progress, duration, environment_set, quiet, run_name
from harness.store import FINISHED, RunStore, left_to_run
from harness.sweep import SweepSummary, check_datasets, run_sweep

#: times a run may take its worker down with it before it is recorded as failed
WORKER_DEATHS_ALLOWED = 1


@dataclass(frozen=True)
class Launch:
    """How to run a sweep's configs: everything but the configs and the store."""

    data_dir: str | None = None
    wandb: bool = False
    retry_failed: bool = False
    progress: bool = True
    #: local: worker processes (None: ``default_workers``);
    #: ray: CPUs of the local cluster it starts (None: all)
    workers: int | None = None
    #: ray: cluster address (None: start a local cluster)
    address: str | None = None
    #: ray: CPUs each run asks for when it runs on the CPU
    cpus_per_run: int = 1
    #: the libraries' own log lines and warnings shown (``--verbose``); else silenced, in workers too
    verbose: bool = False


def _tracker(launch: Launch):
    if not launch.wandb:
        return None
    from harness.tracking import WandbTracker
    return WandbTracker


def visible_gpus() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


#: the most worker processes a CPU sweep starts unasked: each holds its own libraries, datasets
#: and model (about 2 GB at the smoke budget)
CPU_WORKERS_MAX = 8
#: the environment variable that sets the local launcher's default number of workers
WORKERS_VARIABLE = "HARNESS_WORKERS"


def default_workers(configs: list[RunConfig], store: RunStore, retry_failed: bool = False) -> int:
    """Local workers when ``--workers`` is not given: ``$HARNESS_WORKERS`` if set; else one per
    visible GPU for CUDA runs; else, on the CPU, one per core (at most ``CPU_WORKERS_MAX``), each
    with its share of the cores' threads; never more than there are runs that can start at once
    (a run waits for the model it scores or tunes to be trained). Small models use a core better
    alone than sharing two (docs/running.md, Launchers, has the measurements)."""
    if os.environ.get(WORKERS_VARIABLE):
        try:
            workers = int(os.environ[WORKERS_VARIABLE])
        except ValueError:
            workers = 0
        if workers < 1:
            raise ValueError(f"${WORKERS_VARIABLE} must be a whole number of at least 1, "
                             f"not {os.environ[WORKERS_VARIABLE]!r}")
        return workers
    todo = {cfg.run_id for cfg in configs if left_to_run(store.status(cfg.run_id), retry_failed)}
    # a run that scores or tunes a model still to be trained cannot start beside that run
    ready = sum(cfg.run_id in todo and cfg.upstream not in todo for cfg in configs)
    if any(cfg.device.startswith("cuda") for cfg in configs):
        return max(1, min(visible_gpus(), ready))
    return max(1, min(usable_cores(), CPU_WORKERS_MAX, ready))


def claim_order(configs: list[RunConfig]) -> list[RunConfig]:
    """The order workers claim runs in: the most work first, so that no long run starts last while
    the other workers sit idle; a run never before the upstream run it starts from (it counts as
    no more work than that run, and sorts after it among equals), else in plan order among equals."""
    by_id = {cfg.run_id: cfg for cfg in configs}
    key: dict[str, tuple[float, int]] = {}

    def rank(cfg: RunConfig) -> tuple[float, int]:  # (work, depth in the chain of upstream runs)
        if cfg.run_id not in key:
            work, depth = expected_work(cfg), 0
            if cfg.upstream in by_id:
                up_work, up_depth = rank(by_id[cfg.upstream])
                work, depth = min(work, up_work), up_depth + 1
            key[cfg.run_id] = (work, depth)
        return key[cfg.run_id]

    return sorted(configs, key=lambda cfg: (-rank(cfg)[0], rank(cfg)[1]))


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity (a container's cpuset, not the host's
    cores; a CPU quota without a cpuset is not seen)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1


def run_local(configs: list[RunConfig], store: RunStore, launch: Launch, log=print) -> SweepSummary:
    workers = launch.workers
    if workers is None:
        workers = default_workers(configs, store, launch.retry_failed)
    if workers == 1:
        return run_sweep(configs, store, data_dir=launch.data_dir, tracker_factory=_tracker(launch),
                         retry_failed=launch.retry_failed, progress=launch.progress, log=log)
    return _run_workers(configs, store, launch, workers, log)


#: the thread pools a CPU worker's share of the cores limits: OpenMP (torch), and the BLAS
#: libraries numpy, SciPy and scikit-learn load. Read when a process starts, so set before it does:
#: two workers whose BLAS each used both cores made the probes' fits 20 times slower
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_share(workers: int) -> int:
    """The threads each of ``workers`` CPU workers gets: its share of the cores."""
    return max(1, usable_cores() // workers)


def thread_env(workers: int) -> dict[str, str]:
    """The environment of one of ``workers`` CPU workers: its share of the cores' threads."""
    threads = str(thread_share(workers))
    return {name: threads for name in THREAD_VARIABLES}


def _worker(slot: int, gpus: int, configs, root: str, launch: Launch) -> None:
    """One local worker process: runs whatever it can claim, pinned to GPU ``slot``."""
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
    else:  # CPU workers share the cores
        import torch
        torch.set_num_threads(thread_share(launch.workers))
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with quiet(verbose=launch.verbose, progress=False):  # as the process that started it
            # the datasets were checked before the workers started, and the progress line is
            # the starting process's, from the store
            run_sweep(configs, RunStore(root), data_dir=launch.data_dir, tracker_factory=_tracker(launch),
                      retry_failed=launch.retry_failed, progress=False, log=_silent, check=False)
    except KeyboardInterrupt:
        pass  # run_sweep has given the run in progress back


def _silent(*args, **kwargs) -> None:
    pass


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _run_workers(configs, store: RunStore, launch: Launch, workers: int, log) -> SweepSummary:
    check_datasets(configs, launch.data_dir)  # before any worker claims a run
    launch = replace(launch, workers=workers)
    gpus = visible_gpus() if any(cfg.device.startswith("cuda") for cfg in configs) else 0
    context = multiprocessing.get_context("spawn")
    before = {cfg.run_id: store.status(cfg.run_id) for cfg in configs}
    deaths: dict[str, int] = {}
    slots: dict[int, int] = {}  # worker pid → slot
    progress = _WorkerProgress(configs, store, before, launch.retry_failed, workers, slots, log)
    ordered = claim_order(configs)

    def start(slot):
        process = context.Process(target=_worker, args=(slot, gpus, ordered, str(store.root), launch),
                                  name=f"harness-worker-{slot}")
        with environment_set({} if gpus else thread_env(workers)):
            process.start()
        slots[process.pid] = slot
        return process

    log(f"local launcher: {workers} worker processes" + (f" over {gpus} GPUs" if gpus else " on the CPU"),
        flush=True)
    progress.skip_recorded()
    processes = {slot: start(slot) for slot in range(workers)}
    try:
        while processes:
            time.sleep(0.2)
            progress.poll()
            for slot, process in list(processes.items()):
                if process.is_alive():
                    continue
                del processes[slot]
                if process.exitcode == 0:
                    continue
                # died: its claimed run is redone by a new worker, or recorded as failed
                for run_id in store.claimed_by(process.pid):
                    deaths[run_id] = deaths.get(run_id, 0) + 1
                    if deaths[run_id] > WORKER_DEATHS_ALLOWED:
                        store.finish(run_id, "failed", [], {}, f"its worker process died {deaths[run_id]} "
                                     f"times (exit code {process.exitcode}; killed by the system for memory?)")
                log(f"worker {slot} died (exit code {process.exitcode}); starting a new one", flush=True)
                processes[slot] = start(slot)
    except KeyboardInterrupt:
        for process in processes.values():
            process.terminate()  # SIGTERM: each worker gives its run back
        for process in processes.values():
            process.join()
        progress.poll(every=0)
        raise
    progress.finish()
    summary = SweepSummary()
    for cfg in configs:
        status = store.status(cfg.run_id)
        if before[cfg.run_id] == FINISHED or (before[cfg.run_id] == status and not launch.retry_failed):
            summary.skipped += 1
        elif status:
            summary.add(status)
    return summary


class _WorkerProgress:
    """The local workers' progress, as one process prints it: a line per run as it ends (read
    from the store), counted over the whole plan, as a sweep in one process prints it."""

    def __init__(self, configs, store: RunStore, before: dict, retry_failed: bool, workers: int,
                 slots: dict, log):
        self.configs, self.store, self.slots, self.log = configs, store, slots, log
        self.line = Progress(configs, store, workers=workers)
        self.todo = {cfg.run_id: cfg for cfg in configs if left_to_run(before[cfg.run_id], retry_failed)}
        self.since = time.time()  # a record older than this (a failed run to retry) is not this sweep's
        self.host = socket.gethostname()
        self.last = 0.0

    def skip_recorded(self) -> None:
        """A line for each run recorded before the sweep began, which no worker will run."""
        for cfg in self.configs:
            if cfg.run_id not in self.todo:
                self.skip(cfg)

    def skip(self, cfg) -> None:
        self.log(self.line.skipped(cfg), flush=True)

    def poll(self, every: float = 1.0) -> None:
        """A line for each run of the plan that has ended since the last look (at most one look
        every ``every`` seconds)."""
        if time.monotonic() - self.last < every:
            return
        self.last = time.monotonic()
        runs = self.store.runs()
        ended = runs[runs.run_id.isin(list(self.todo)) & (runs.finished_at >= self.since)]
        for row in ended.sort_values("finished_at").itertuples():
            cfg = self.todo.pop(row.run_id)
            took = duration(row.finished_at - row.started_at) if pd.notna(row.started_at) else "?"
            mine = row.host == self.host and row.pid in self.slots
            worker = f" (worker {self.slots[row.pid]})" if mine else ""
            self.log(self.line.line(run_name(cfg), cfg.run_id, f"{row.status} in {took}{worker}"), flush=True)

    def finish(self) -> None:
        """The last look, and a line for each run no worker ran (another process holds it)."""
        self.poll(every=0)
        for cfg in list(self.todo.values()):
            self.skip(cfg)


# ---------------------------------------------------------------- Ray

def execute_remote(cfg_json: str, data_dir, wandb: bool, upstream_json: str | None,
                   upstream_files: dict[str, bytes] | None) -> dict:  # runs on a Ray worker
    """Run one config in a scratch store (with its upstream run, if any, copied in) and return
    everything the driver records: status, metrics, info, error and the run folder's files."""
    from harness.runner import execute

    cfg = RunConfig.model_validate_json(cfg_json)
    with tempfile.TemporaryDirectory(prefix="harness-run-") as scratch_dir:
        scratch = RunStore(scratch_dir)
        if upstream_json:
            upstream = RunConfig.model_validate_json(upstream_json)
            scratch.claim(upstream)
            _write_files(scratch.run_dir(upstream.run_id), upstream_files or {})
            scratch.finish(upstream.run_id, FINISHED, [], {})
        scratch.claim(cfg)
        tracker = _tracker(Launch(wandb=wandb))
        execute(cfg, scratch, data_dir, tracker, progress=False)
        record = scratch.record(cfg.run_id)
        record["files"] = _read_files(scratch.run_dir(cfg.run_id))
        record["host"], record["pid"] = os.uname().nodename, os.getpid()
        return record


def _read_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def run_ray(configs: list[RunConfig], store: RunStore, launch: Launch, log=print) -> SweepSummary:
    """Submit every run that is not recorded yet as a Ray task; record results as they arrive.
    A run whose upstream run (e.g. the language model it scores) is in the plan waits for it."""
    import ray

    if launch.data_dir:  # workers resolve it from their own working directory
        launch = replace(launch, data_dir=str(Path(launch.data_dir).resolve()))
    check_datasets(configs, launch.data_dir)  # before anything is claimed
    by_id = {cfg.run_id: cfg for cfg in configs}
    summary = SweepSummary()
    progress_line = Progress(configs, store)
    pending = []
    for cfg in configs:
        if store.claim(cfg, retry_failed=launch.retry_failed):
            pending.append(cfg)
        else:
            log(progress_line.skipped(cfg), flush=True)
            summary.skipped += 1
    if not pending:
        return summary
    started_here = not ray.is_initialized()
    if started_here:
        local = {"num_cpus": launch.workers} if launch.workers and not launch.address else {}
        ray.init(address=launch.address, include_dashboard=False, log_to_driver=False,
                 logging_level="warning", **local)
    remote = ray.remote(max_retries=WORKER_DEATHS_ALLOWED)(execute_remote)
    running: dict = {}
    try:
        while pending or running:
            unfinished = {c.run_id for c in pending} | set(running.values())
            for cfg in [c for c in pending if c.upstream not in unfinished]:
                pending.remove(cfg)
                upstream, files = None, None
                if cfg.upstream:
                    if store.status(cfg.upstream) != FINISHED:
                        store.finish(cfg.run_id, "failed", [], {}, f"its upstream run {cfg.upstream} "
                                     f"is {store.status(cfg.upstream) or 'not in the store'}")
                        summary.add("failed")
                        continue
                    folder = store.run_dir(cfg.upstream)
                    upstream = (folder / "config.json").read_text()
                    files = {name: (folder / name).read_bytes() for name in ("config.json", CHECKPOINT)}
                resources = {"num_gpus": 1} if cfg.device.startswith("cuda") else {"num_cpus": launch.cpus_per_run}
                ref = remote.options(**resources).remote(cfg.model_dump_json(), launch.data_dir,
                                                         launch.wandb, upstream, files)
                running[ref] = cfg.run_id
            if not running:
                break
            done, _ = ray.wait(list(running), num_returns=1)
            run_id = running.pop(done[0])
            status = _record(store, by_id[run_id], done[0])
            log(progress_line.line(run_name(by_id[run_id]), run_id, status), flush=True)
            summary.add(status)
    except KeyboardInterrupt:
        for ref, run_id in running.items():
            ray.cancel(ref, force=True)
            store.release(run_id)
        for cfg in pending:
            store.release(cfg.run_id)
        raise
    finally:
        if started_here:
            ray.shutdown()
    return summary


def _record(store: RunStore, cfg: RunConfig, ref) -> str:
    """Write a finished Ray task's files and outcome into the store (files first, so a finished
    run always has them)."""
    import ray

    try:
        record = ray.get(ref)
    except ray.exceptions.RayError as err:  # the worker died more often than retries allow
        store.finish(cfg.run_id, "failed", [], {}, f"Ray task failed: {type(err).__name__}: {err}")
        return "failed"
    _write_files(store.run_dir(cfg.run_id), record["files"])
    metrics = [Metric(m["split"], m["metric"], m["value"], m["length"]) for m in record["metrics"]]
    info = {**record["info"], "worker_host": record["host"], "worker_pid": record["pid"]}
    store.finish(cfg.run_id, record["status"], metrics, info, record["error"])
    return record["status"]


LAUNCHERS = {"local": run_local, "ray": run_ray}
