"""``harness bench``: training, inference and decoding speed and peak memory against sequence
length, one line per architecture (Long Range Arena's efficiency table, measured carefully).

Every cell (architecture, attention backend, length) runs in a fresh process, so its peak memory
is its own and a hard crash (the kernel's out-of-memory killer) is recorded instead of ending the
benchmark. Inside a cell: the model is the ``lm`` task's language model (``tasks.lm.LanguageModel``:
embedding, backbone, a full softmax over ``vocab`` words); training steps are the training loop's own
step (``harness.train.train_step``); each phase is warmed up, timed between device synchronisations,
and reported as the median over repeats; an error is classified as runs classify theirs
(``harness.train.failure_status``), so running out of memory is recorded as ``oom``.

Bench results are not runs (no task, no dataset, no run id): they are rows of ``bench.csv`` (with a
table and a plot) in ``--out``, outside the run store, and ``harness bench --from`` reads them back.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
from typing import Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from architectures.sizing import build_backbone, parse_options
from harness.core.train_config import TrainConfig
from harness.core.measure import (
    current_memory,
    environment,
    median_seconds,
    peak_memory,
    reset_peak_memory,
)
from harness.core.registry import ARCHITECTURES
from harness.train import failure_status, make_optimizer, make_schedule, train_step
from tasks.lm import LanguageModel, LMOptions

#: dense bf16 tensor-core peaks (TFLOP/s, no sparsity), matched against the CUDA device name
BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "H200": 989.4,
                    "GH200": 989.4, "B200": 2250.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
                    "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.2}

#: aten ops that tell which attention or RNN kernel ran (convolutions choose theirs below dispatch)
KERNEL_OPS = {
    "aten._scaled_dot_product_flash_attention": "attention: flash",
    "aten._scaled_dot_product_flash_attention_for_cpu": "attention: flash (cpu)",
    "aten._scaled_dot_product_efficient_attention": "attention: memory-efficient",
    "aten._scaled_dot_product_cudnn_attention": "attention: cudnn",
    "aten._scaled_dot_product_fused_attention_overrideable": "attention: fused (backend)",
    "aten._cudnn_rnn": "rnn: cudnn",
    "aten.mkldnn_rnn_layer": "rnn: onednn",
}

BACKENDS = ("auto", "math", "flash", "efficient", "cudnn")

PHASES = ("inference", "decode", "train")


class BenchConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    archs: list[str] = pydantic.Field(min_length=1)
    lengths: list[pydantic.PositiveInt] = pydantic.Field(min_length=1)
    size: str = "small"
    #: architecture options (e.g. position=alibi), applied to every architecture that has them
    arch_options: dict = {}
    batch: pydantic.PositiveInt = 8
    device: str = "cpu"
    #: auto: bf16 autocast on CUDA, float32 on the CPU
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    #: SDPA backends to measure attention models with; auto lets PyTorch choose
    attention: list[str] = ["auto", "math"]
    #: byte-sized by default (as Long Range Arena's text tasks), so the softmax does not hide the backbone
    vocab: pydantic.PositiveInt = 256
    warmup: pydantic.NonNegativeInt = 2
    repeats: pydantic.PositiveInt = 5
    #: more repeats (up to 100) until the timed calls of a phase add up to this
    min_seconds: pydantic.NonNegativeFloat = 1.0
    #: tokens generated one at a time, after a prefix of length - decode_tokens
    decode_tokens: pydantic.PositiveInt = 64
    compile: bool = False
    #: dense bf16 peak for MFU; None: looked up from the device name
    peak_tflops: float | None = None
    #: one process per cell (honest peak memory, crashes recorded); off only to test quickly
    isolate: bool = True

    @pydantic.field_validator("attention")
    @classmethod
    def _backends(cls, value):
        unknown = [b for b in value if b not in BACKENDS]
        if unknown:
            raise ValueError(f"unknown attention backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
        return list(dict.fromkeys(value))

    @property
    def resolved_dtype(self) -> str:
        if self.dtype == "auto":
            return "bfloat16" if self.device.startswith("cuda") else "float32"
        return self.dtype

    def options_for(self, arch: str) -> dict:
        fields = ARCHITECTURES.get(arch).Options.model_fields
        return {k: v for k, v in self.arch_options.items() if k in fields}


def bench_model(backbone: nn.Module, vocab: int) -> LanguageModel:
    """The model every cell times: the ``lm`` task's language model with a full softmax over
    ``vocab`` tokens (no dropout)."""
    return LanguageModel(backbone, vocab, LMOptions(softmax="full"))


class _OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def kernels_used(model: LanguageModel, tokens: torch.Tensor) -> str:
    """Which attention / RNN / convolution kernels one forward pass dispatches to."""
    with torch.no_grad(), _OpRecorder() as recorder:
        model(tokens)
    found = {label for op, label in KERNEL_OPS.items() if op in recorder.ops}
    if model.backbone.uses_sdpa and not any(k.startswith("attention") for k in found):
        found.add("attention: math")
    return ", ".join(sorted(found)) or "—"


def train_flops_per_token(arch: str, size: str, options: dict, vocab: int, length: int) -> float:
    """Model FLOPs of one training step (forward + backward) per token at ``length``.

    Counted by PyTorch's FlopCounterMode (matrix products, convolutions, attention; not FFTs or
    element-wise work) on the meta device (no memory, no compute). Chunked backbones are counted
    at ``length`` itself; the others at lengths 8, 16 and 24, then extended exactly (their FLOPs
    per sequence are a polynomial of degree at most 2 in the length, attention's score matrix the
    quadratic term), since the fused RNN kernels step through time even on the meta device."""
    with torch.device("meta"):
        model = bench_model(build_backbone(arch, size, options), vocab)

    def count(n: int) -> int:
        tokens = torch.zeros(1, n, dtype=torch.long, device="meta")
        counter = FlopCounterMode(display=False)
        with counter:
            F.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten()).backward()
        return counter.get_total_flops()

    if not model.backbone.flops_polynomial_in_length:
        return count(length) / length
    samples = [(n, count(n)) for n in (8, 16, 24)]
    (x0, y0), (x1, y1), (x2, y2) = samples
    total = (y0 * (length - x1) * (length - x2) / ((x0 - x1) * (x0 - x2))
             + y1 * (length - x0) * (length - x2) / ((x1 - x0) * (x1 - x2))
             + y2 * (length - x0) * (length - x1) / ((x2 - x0) * (x2 - x1)))
    return total / length


def activation_bytes(model: nn.Module, tokens: torch.Tensor, amp) -> int:
    """Bytes of the tensors one training forward pass saves for its backward pass (parameters
    aside, shared storage counted once): the memory that grows with length, allocator aside."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), amp():
        model(tokens)
    return sum(saved.values())


def state_bytes(state) -> int:
    """Bytes of an incremental decoding state (every tensor in it)."""
    if isinstance(state, torch.Tensor):
        return state.nbytes
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(s) for s in state)
    if isinstance(state, dict):
        return sum(state_bytes(s) for s in state.values())
    return 0


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):  # "H100 PCIe" before "H100"
        if key in name:
            return BF16_PEAK_TFLOPS[key]
    return None


def _sdpa_backend(name: str):
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[name]
    return sdpa_kernel([backend])


def _problem(err: BaseException) -> str:
    if failure_status(err) == "oom":
        return "oom"
    if "No available kernel" in str(err) or "No viable backend" in str(err):
        return "unsupported"
    return f"error: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"


def measure_cell(cfg: BenchConfig, arch: str, backend: str, length: int,
                 skip: frozenset[str] = frozenset()) -> dict:
    """One row: every phase of one (architecture, attention backend, length) cell.
    Phases in ``skip`` ran out of memory at a shorter length and are recorded as such."""
    device = torch.device(cfg.device)
    dtype = cfg.resolved_dtype
    options = cfg.options_for(arch)
    row = _identity(cfg, arch, backend, length)
    problems = {phase: "oom (at a shorter length)" for phase in skip}

    def amp():
        if dtype == "bfloat16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    baseline = current_memory(device)
    torch.manual_seed(0)
    model = bench_model(build_backbone(arch, cfg.size, options), cfg.vocab).to(device)
    row.update(params_non_embedding=model.backbone.num_parameters(),
               params_total=sum(p.numel() for p in model.parameters()), d_model=model.backbone.d_model)
    tokens = torch.randint(cfg.vocab, (cfg.batch, length), device=device)
    run = torch.compile(model) if cfg.compile else model
    tokens_per_step = cfg.batch * length

    def inference():
        model.eval()
        with torch.no_grad(), amp():
            row["kernels"] = kernels_used(model, tokens)
            seconds = median_seconds(lambda: run(tokens), device, cfg.warmup, cfg.repeats, cfg.min_seconds)
        row["infer_tokens_per_s"] = tokens_per_step / seconds

    def decode():
        model.eval()
        steps = min(length, cfg.decode_tokens)
        backbone = model.backbone
        with torch.no_grad(), amp():
            prefix = tokens[:, :length - steps]
            if prefix.shape[1]:
                _, start = backbone.prefill(model.embed(prefix))
            else:
                start = backbone.init_state(cfg.batch, device, getattr(torch, dtype))

            final = {}

            def generate():  # greedy: each step feeds the previous step's prediction
                state, token = start, tokens[:, length - steps]
                for _ in range(steps):
                    y, state = backbone.step(model.embed(token), state)
                    token = model.predict(y)
                final["state"] = state

            seconds = median_seconds(generate, device, min(cfg.warmup, 1), cfg.repeats, cfg.min_seconds)
        row.update(decode_tokens=steps, decode_tokens_per_s=cfg.batch * steps / seconds,
                   decode_ms_per_step=1000 * seconds / steps,
                   decode_state_mb=state_bytes(final["state"]) / 2**20)

    def train():
        model.train()
        train_cfg = TrainConfig(steps=1, batch_size=cfg.batch, seq_len=length)
        optimizer = make_optimizer(model, train_cfg)
        schedule = make_schedule(optimizer, train_cfg)
        targets = tokens.roll(-1, 1)

        def loss():
            return F.cross_entropy(run(tokens).flatten(0, 1).float(), targets.flatten())

        def step():
            train_step(model, loss, optimizer, schedule, train_cfg.clip_norm, amp)

        seconds = median_seconds(step, device, max(cfg.warmup, 1), cfg.repeats, cfg.min_seconds)
        row["train_tokens_per_s"] = tokens_per_step / seconds
        row["train_activations_mb"] = activation_bytes(model, tokens, amp) / 2**20
        row["train_flops_per_token"] = train_flops_per_token(arch, cfg.size, options, cfg.vocab, length)
        peak = peak_tflops(device, cfg.peak_tflops)
        if peak and dtype == "bfloat16":
            row["mfu"] = row["train_flops_per_token"] * row["train_tokens_per_s"] / (peak * 1e12)

    with _sdpa_backend(backend):
        for phase, fn in (("inference", inference), ("decode", decode), ("train", train)):
            if phase in problems:
                continue
            reset_peak_memory(device)
            try:
                fn()
            except (RuntimeError, MemoryError) as err:  # OutOfMemoryError is a RuntimeError
                problems[phase] = _problem(err)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            if phase != "decode":
                row[f"{phase}_peak_mb"] = peak_memory(device)[0] - baseline
    row["memory_kind"] = peak_memory(device)[1]
    return _with_status(row, problems)


def _identity(cfg: BenchConfig, arch: str, backend: str, length: int) -> dict:
    """What every row carries: the cell, the measurement protocol and the environment."""
    return {"arch": arch, "attention": backend, "length": length, "size": cfg.size, "batch": cfg.batch,
            "dtype": cfg.resolved_dtype, "compiled": cfg.compile, "vocab": cfg.vocab,
            "warmup": cfg.warmup, "repeats": cfg.repeats, "min_seconds": cfg.min_seconds, **environment(torch.device(cfg.device))}


def _with_status(row: dict, problems: dict[str, str]) -> dict:
    """``<phase>_status`` per phase, and ``status``: "ok" or every phase's problem."""
    for phase in PHASES:
        row[f"{phase}_status"] = problems.get(phase, "ok")
    row["status"] = "; ".join(f"{p}: {problems[p]}" for p in PHASES if p in problems) or "ok"
    return row


def _isolated(cfg: BenchConfig, arch: str, backend: str, length: int, skip: frozenset[str]) -> dict:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        try:
            return pool.submit(measure_cell, cfg, arch, backend, length, skip).result()
        except concurrent.futures.process.BrokenProcessPool:
            row = _identity(cfg, arch, backend, length)
            crashed = "crashed (process killed: out of memory?)"
            return _with_status(row, {p: crashed for p in PHASES if p not in skip})


def cells(cfg: BenchConfig) -> list[tuple[str, str]]:
    """(architecture, attention backend) lines; backends only for attention models."""
    lines = []
    for arch in cfg.archs:
        cls, _ = parse_options(arch, cfg.options_for(arch))
        for backend in (cfg.attention if cls.uses_sdpa else ["—"]):
            lines.append((arch, backend))
    return lines


def run_bench(cfg: BenchConfig, log=print, keep=None) -> list[dict]:
    """Every cell, shortest length first per line; a phase that ran out of memory is not tried
    again at longer lengths. ``keep(rows)`` receives the rows so far after each cell."""
    measure = _isolated if cfg.isolate else measure_cell
    rows = []
    for arch, backend in cells(cfg):
        skip: set[str] = set()
        for length in sorted(cfg.lengths):
            attention = "auto" if backend == "—" else backend
            row = measure(cfg, arch, attention, length, frozenset(skip))
            row["attention"] = backend
            skip |= {p for p in PHASES if row[f"{p}_status"].startswith(("oom", "crashed"))}
            rows.append(row)
            log(_summary(row), flush=True)
            if keep:
                keep(rows)
    return rows


def _summary(row: dict) -> str:
    def rate(key):
        return f"{row[key]:,.0f}" if row.get(key) is not None else "—"

    label = row["arch"] if row["attention"] == "—" else f"{row['arch']} [{row['attention']}]"
    return (f"{label} L={row['length']}: train {rate('train_tokens_per_s')} tok/s, inference "
            f"{rate('infer_tokens_per_s')} tok/s, decode {rate('decode_tokens_per_s')} tok/s, "
            f"train peak {rate('train_peak_mb')} MB ({row['status']})")
