"""What every efficiency number carries: timing with device synchronisation, peak memory, and
the environment (git SHA, device, library versions)."""
from __future__ import annotations

import functools
import platform
import resource
import statistics
import subprocess
import time
from pathlib import Path

import torch

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Accumulates time over several intervals, synchronising the device at each edge."""

    def __init__(self, device: torch.device):
        self.device = device
        self.elapsed = 0.0
        self._start: float | None = None

    def start(self) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def stop(self) -> None:
        if self._start is not None:
            synchronize(self.device)
            self.elapsed += time.perf_counter() - self._start
            self._start = None

    @property
    def running(self) -> bool:
        return self._start is not None


def median_seconds(fn, device: torch.device, warmup: int, repeats: int, min_seconds: float = 0.0) -> float:
    """Median wall time of ``fn()`` after ``warmup`` untimed calls, over ``repeats`` timed calls,
    or more (up to 100) until they add up to ``min_seconds``: short calls are noisy. Each call is
    timed between device synchronisations."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < repeats or (sum(times) < min_seconds and len(times) < 100):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def inference_tokens_per_s(model, task, batch, device, warmup: int = 2, repeats: int = 5) -> float:
    """Median tokens/s of forward passes (the task's scoring of ``batch``, no gradients)."""
    batch = {k: v.to(device) for k, v in batch.items()}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        seconds = median_seconds(lambda: task.loss(model, batch), device, warmup, repeats)
    model.train(was_training)
    return task.batch_tokens(batch) / seconds


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the process's peak resident set size (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def current_memory(device: torch.device) -> float:
    """Megabytes in use now: GPU memory allocated by tensors, or the process's resident set."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    rss = _proc_status_mb("VmRSS")
    return 0.0 if rss is None else rss


def peak_memory(device: torch.device) -> tuple[float, str]:
    """(megabytes, what was measured): GPU memory allocated by tensors, or the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak, "peak_rss"
    # ru_maxrss is kilobytes on Linux and bytes on macOS
    scale = 2**20 if platform.system() == "Darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, "peak_rss_process"


def _proc_status_mb(field: str) -> float | None:
    """A kilobyte field of /proc/self/status (Linux) in megabytes; None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=None)
def git_revision() -> str:
    """The project's commit, with '-dirty' when the work tree has changes; 'unknown' outside git."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip()[:12] + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict:
    return {
        "git_sha": git_revision(),
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "threads": torch.get_num_threads(),
        "blas_threads": blas_threads(),
    }


def blas_threads() -> int | None:
    """The most threads any BLAS library loaded in this process (numpy's, SciPy's) may use."""
    from threadpoolctl import threadpool_info

    counts = [pool["num_threads"] for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return max(counts) if counts else None


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    return name
