"""harness bench: every registered backbone is measured; FLOP counts are exact; running out of
memory or lacking a kernel is recorded, not fatal; the CLI writes a table, a CSV and a plot."""
import io
import re
import subprocess
import time
import types

import pandas as pd
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from harness import bench
from harness.bench import (
    BenchConfig,
    bench_model,
    measure_cell,
    run_bench,
    train_flops_per_token,
)
from harness.core import measure
from harness.core.registry import ARCHITECTURES
from harness.render import bench_table, read_bench_csv
from tests.conftest import ROOT, harness

QUICK = dict(lengths=[8, 16], size="tiny", batch=2, warmup=0, repeats=1, min_seconds=0, decode_tokens=4,
             isolate=False, device="cpu")

#: what one timed call takes on the fake clock (a power of two: the rates below are exact)
TICK = 0.125


class FakeClock:
    """Stands in for ``time.perf_counter`` in harness.core.measure: each reading moves it on by
    ``step`` seconds, and ``now`` can be moved by hand."""

    def __init__(self, step: float = 0.0):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def use_clock(monkeypatch, clock: FakeClock) -> None:
    fake = types.ModuleType("time")
    fake.__dict__.update(vars(time))
    fake.perf_counter = clock
    monkeypatch.setattr(measure, "time", fake)  # measure's readings only; pytest keeps the real clock


def git(*args) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except OSError:
        return None


def assert_git_sha(value: str) -> None:
    """A commit of this checkout (its first 12 hex digits, "-dirty" with changes), or "unknown"
    where the project is not a git checkout."""
    head = git("rev-parse", "HEAD")
    if head is None or head.returncode != 0:
        assert value == "unknown"
        return
    assert re.fullmatch(r"[0-9a-f]{12}(-dirty)?", value), value
    commit = git("rev-parse", "--verify", "--quiet", value[:12] + "^{commit}")
    assert commit.returncode == 0, f"{value} is not a commit of this checkout"
    # HEAD when it was read (or, should a commit land during the tests, one before it)
    assert git("merge-base", "--is-ancestor", commit.stdout.strip(), "HEAD").returncode == 0, value


def test_every_backbone_is_measured_in_every_phase(monkeypatch):
    use_clock(monkeypatch, FakeClock(step=TICK))  # every timed call takes TICK seconds
    rows = run_bench(BenchConfig(archs=ARCHITECTURES.names(), **QUICK), log=lambda *a, **k: None)
    measured = {(r["arch"], r["attention"]) for r in rows}
    assert {a for a, _ in measured} == set(ARCHITECTURES.names())
    assert ("transformer", "auto") in measured and ("transformer", "math") in measured
    for row in rows:
        assert row["status"] == "ok", row
        # rates are the tokens of one call over its (median) time: batch × length, batch × decoded tokens
        assert row["train_tokens_per_s"] == row["infer_tokens_per_s"] == 2 * row["length"] / TICK, row["arch"]
        assert row["decode_tokens"] == 4
        assert row["decode_tokens_per_s"] == 2 * 4 / TICK and row["decode_ms_per_step"] == 1000 * TICK / 4
        assert row["train_flops_per_token"] > 0, row["arch"]
        assert_git_sha(row["git_sha"])
        assert row["device_name"].endswith(f"({torch.get_num_threads()} threads)")
        assert row["torch_version"] == torch.__version__
    kernels = {(r["arch"], r["attention"]): r["kernels"] for r in rows}
    assert kernels["transformer", "math"] == "attention: math"
    assert kernels["transformer", "auto"].startswith("attention: flash")  # PyTorch's CPU flash kernel


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES.names() if ARCHITECTURES.get(a).flops_polynomial_in_length])
def test_flops_extend_exactly_from_short_lengths(arch):
    """The quadratic extension from lengths 8–24 equals a direct count at a longer length."""
    length = 40
    with torch.device("meta"):
        from architectures.sizing import build_backbone
        model = bench_model(build_backbone(arch, "tiny", {}), 256)
    tokens = torch.zeros(1, length, dtype=torch.long, device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        torch.nn.functional.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten()).backward()
    assert train_flops_per_token(arch, "tiny", {}, 256, length) == pytest.approx(
        counter.get_total_flops() / length, rel=1e-9)


def test_chunked_mixers_are_counted_at_their_own_length():
    """A chunked linear-time mixer costs about the same per token at 128 and 512 tokens (2 and 8
    whole chunks; the first chunk reads no carried state), where a quadratic extension from lengths
    inside one chunk would have it grow like attention's."""
    short, long = (train_flops_per_token("linear_attention", "tiny", {}, 256, n) for n in (128, 512))
    assert long == pytest.approx(short, rel=0.01)
    assert train_flops_per_token("transformer", "tiny", {}, 256, 512) > 1.2 * train_flops_per_token(
        "transformer", "tiny", {}, 256, 128)


def test_recurrent_flops_are_six_per_weight_per_token():
    """Forward + backward of a matmul-only model: 6 FLOPs per weight per token (biases aside)."""
    with torch.device("meta"):
        from architectures.sizing import build_backbone
        model = bench_model(build_backbone("lstm", "tiny", {}), 256)
    weights = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith("embed"))
    assert train_flops_per_token("lstm", "tiny", {}, 256, 128) == pytest.approx(6 * weights, rel=0.01)


def test_out_of_memory_is_recorded_and_not_retried_at_longer_lengths(monkeypatch):
    use_clock(monkeypatch, FakeClock(step=TICK))

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(bench, "make_optimizer", no_memory)  # the training phase runs out of memory
    rows = run_bench(BenchConfig(archs=["gru"], **QUICK), log=lambda *a, **k: None)
    assert [r["train_status"] for r in rows] == ["oom", "oom (at a shorter length)"]
    assert [(r["inference_status"], r["infer_tokens_per_s"]) for r in rows] == [("ok", 2 * 8 / TICK), ("ok", 2 * 16 / TICK)]
    assert rows[0]["status"] == "train: oom"
    assert "train_tokens_per_s" not in rows[0]
    table = bench_table(pd.DataFrame(rows), "md")
    assert "| oom " in table


def test_a_backend_the_device_lacks_is_recorded_as_unsupported():
    row = measure_cell(BenchConfig(archs=["transformer"], attention=["efficient"], **QUICK),
                       "transformer", "efficient", 8)
    assert row["inference_status"] == row["train_status"] == "unsupported"


def test_mfu_uses_the_given_peak():
    row = measure_cell(BenchConfig(archs=["cnn"], dtype="bfloat16", peak_tflops=2.0, **QUICK), "cnn", "auto", 8)
    assert row["dtype"] == "bfloat16" and row["status"] == "ok"
    assert row["mfu"] == pytest.approx(row["train_flops_per_token"] * row["train_tokens_per_s"] / 2e12)


@pytest.mark.parametrize("name,peak", [("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0),
                                       ("NVIDIA H200", 989.4), ("NVIDIA A100-SXM4-80GB", 312.0),
                                       ("Some Future GPU", None)])
def test_peak_is_looked_up_from_the_device_name(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert bench.peak_tflops(torch.device("cuda"), None) == peak


def test_cli_writes_csv_table_and_plot_with_each_cell_in_its_own_process(tmp_path, capsys):
    out = tmp_path / "bench"
    code = harness("bench", "--arch", "lstm", "--lengths", "16", "--size", "tiny", "--batch", "2",
                   "--warmup", "1", "--repeats", "1", "--min-seconds", "0", "--decode-tokens", "4", "--device", "cpu",
                   "--format", "csv", "--out", out)
    assert code == 0
    printed = pd.read_csv(io.StringIO(capsys.readouterr().out))
    stored = pd.read_csv(out / "bench.csv")
    assert list(printed.arch) == list(stored.arch) == ["lstm"]
    assert stored.train_peak_mb.iloc[0] > 1, "a fresh process measures the model's own memory"
    for name in ("bench.png", "bench.pdf", "bench.md"):
        assert (out / name).stat().st_size > 1000
    assert harness("bench", "--from", out / "bench.csv", "--format", "latex") == 0
    latex = capsys.readouterr().out
    assert "\\toprule" in latex and "lstm" in latex and "git" in latex


@pytest.mark.parametrize("sha", ["7583335", "1234e56", "0012345"])
def test_bench_from_keeps_a_sha_that_looks_like_a_number(tmp_path, capsys, sha):
    rows = pd.read_csv(ROOT / "results" / "bench_cpu" / "bench.csv", dtype=str)
    rows["git_sha"], rows["python_version"] = sha, "3.10"
    rows.to_csv(tmp_path / "bench.csv", index=False)
    assert set(read_bench_csv(tmp_path / "bench.csv")[["git_sha", "python_version"]].iloc[0]) == {sha, "3.10"}
    for fmt in ("latex", "md"):
        assert harness("bench", "--from", tmp_path / "bench.csv", "--format", fmt) == 0
        assert f"git {sha}" in capsys.readouterr().out


def test_an_interrupted_bench_keeps_the_cells_it_measured(tmp_path, monkeypatch):
    measured = []

    def cell(cfg, arch, backend, length, skip=frozenset()):
        if measured:
            raise KeyboardInterrupt("signal 15")  # as `timeout` stops the second cell
        measured.append(length)
        return measure_cell(cfg, arch, backend, length, skip)

    measure_cell = bench.measure_cell
    monkeypatch.setattr(bench, "measure_cell", cell)
    out = tmp_path / "bench"
    code = harness("bench", "--arch", "lstm", "--lengths", "8,16", "--size", "tiny", "--batch", "2", "--warmup", "0",
                   "--repeats", "1", "--min-seconds", "0", "--decode-tokens", "2", "--device", "cpu", "--in-process",
                   "--out", out)
    assert code == 130
    stored = pd.read_csv(out / "bench.csv")
    assert list(stored.length) == [8] and stored.status.iloc[0] == "ok"


@pytest.mark.parametrize("args,message", [
    (["--arch", "lstn"], "lstm"),
    (["--arch", "transformer", "--attention", "flashy"], "unknown attention backend"),
    (["--arch", "transformer", "--set", "positon=alibi"], "position"),
    ([], "needs --arch"),
])
def test_bad_bench_input_is_a_clear_error(args, message, capsys):
    assert harness("bench", "--lengths", "8", *args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("arch,backend,quadratic", [("lstm", "auto", False), ("cnn", "auto", False),
                                                    ("transformer", "auto", False), ("transformer", "math", True)])
def test_activation_memory_is_linear_in_length_unless_attention_is_materialised(arch, backend, quadratic):
    import contextlib

    from architectures.sizing import build_backbone
    from harness.bench import _sdpa_backend, activation_bytes

    torch.manual_seed(0)
    model = bench_model(build_backbone(arch, "tiny", {}), 256)
    with _sdpa_backend(backend):
        a1, a2, a4 = (activation_bytes(model, torch.randint(256, (2, n)), contextlib.nullcontext)
                      for n in (32, 64, 128))
    # zero for a + bL; 6144·c for a term c·L² (lengths 32, 64, 128)
    second_difference = (a4 - a2) - 2 * (a2 - a1)
    # math attention keeps one (batch, heads, L, L) float32 matrix per layer for its backward pass
    attention = 2 * model.backbone.options.n_heads * model.backbone.n_layers * 4 if quadratic else 0
    assert second_difference == 6144 * attention


def test_short_calls_are_repeated_until_they_add_up_to_min_seconds(monkeypatch):
    from harness.core.measure import median_seconds

    clock = FakeClock()  # moves only when a call says so
    use_clock(monkeypatch, clock)
    calls = []

    def call(seconds):
        calls.append(seconds)
        clock.now += seconds

    cpu = torch.device("cpu")
    assert median_seconds(lambda: call(TICK), cpu, 0, 2, 1.0) == TICK
    assert len(calls) == 8, "timed calls of TICK until they add up to one second"
    calls.clear()
    assert median_seconds(lambda: call(TICK), cpu, 1, 3, 0.0) == TICK
    assert len(calls) == 4, "one warm-up call, then the three repeats"
    calls.clear()
    times = iter([8.0, 4.0, 2.0, 1.0])  # a warm-up call (untimed), then three timed ones
    assert median_seconds(lambda: call(next(times)), cpu, 1, 3, 0.0) == 2.0, "their median"
    calls.clear()
    assert median_seconds(lambda: call(0.0), cpu, 0, 2, 1.0) == 0.0
    assert len(calls) == 100, "at most 100 calls, however short"
