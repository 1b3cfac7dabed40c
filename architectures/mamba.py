"""Mamba: a selective state-space model (Gu & Dao 2023, "Mamba: Linear-time sequence modeling
with selective state spaces").

Each channel of the expanded input runs a diagonal linear recurrence whose step size Δ and
input/output maps B, C depend on the current token:

    h_t = exp(Δ_t·A)·h_{t−1} + Δ_t·B_t·x_t,    y_t = C_t·h_t + D·x_t.

With ``eigenvalues="signed"`` (Grazzi et al. 2025) the transition is 2·exp(Δ_t·A) − 1 ∈ (−1, 1)
instead of exp(Δ_t·A) ∈ (0, 1); nothing else changes.

Training evaluates it chunk by chunk with a log-depth associative scan (``linear_scan``);
decoding steps the recurrence one token at a time. The scan multiplies the transitions
themselves (never their logarithms), so it takes negative ones as they are.
"""
from __future__ import annotations

import math
from typing import ClassVar

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from architectures.mixer import (Eigenvalues, Mixer, MixerStack, ShortConv, StepSizeOptions, diagonal_transition,
                                 initial_log_step_sizes, inverse_softplus)
from harness.core.registry import ARCHITECTURES
from harness.core.train_config import exempt_from_weight_decay


def _doubling_scan(a: torch.Tensor, b: torch.Tensor, reverse: bool = False):
    """Hillis–Steele doubling for ``h_t = a_t·h_{t−1} + b_t`` from a zero start, time in dimension 1
    (``reverse``: ``h_t = a_t·h_{t+1} + b_t``, run from the end). Returns (h, running product of a).

    After the round with offset ``off``, ``b[t]`` holds the recurrence run from zero over the
    ``2·off`` positions ending at ``t`` and ``a[t]`` the product of their ``a``, so ⌈log₂ L⌉
    rounds cover every position. Each round reads only the previous round's values: a shifted
    product goes to a scratch tensor before it is written back. (Reusing one scratch tensor
    rather than allocating fresh ones each round is much faster on CPUs.)"""
    a, b = a.clone(), b.clone()
    a_scratch, b_scratch = torch.empty_like(a), torch.empty_like(b)
    L, off = a.shape[1], 1
    while off < L:
        new, old = (slice(None, -off), slice(off, None)) if reverse else (slice(off, None), slice(None, -off))
        torch.mul(a[:, new], b[:, old], out=b_scratch[:, new])
        b[:, new] += b_scratch[:, new]
        torch.mul(a[:, new], a[:, old], out=a_scratch[:, new])
        a[:, new] = a_scratch[:, new]
        off *= 2
    return b, a


class _LinearScan(torch.autograd.Function):
    """``linear_scan`` with its gradient written out: the gradient of a linear recurrence is the
    same recurrence run backwards, g_t = ∂L/∂h_t + a_{t+1}·g_{t+1}; then ∂L/∂b_t = g_t,
    ∂L/∂a_t = g_t·h_{t−1} (summed over the dimensions ``a`` broadcasts along) and
    ∂L/∂h0 = a_1·g_1. (Far cheaper than differentiating every round.)"""

    @staticmethod
    def forward(ctx, a, b, h0):
        h, a_prod = _doubling_scan(a, b)
        h.addcmul_(a_prod, h0.unsqueeze(1))
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h):
        a, h, h0 = ctx.saved_tensors
        a_next = torch.cat((a[:, 1:], torch.zeros_like(a[:, :1])), 1)  # a_{t+1}; nothing after the end
        g, _ = _doubling_scan(a_next, grad_h, reverse=True)
        h_prev = torch.cat((h0.unsqueeze(1), h[:, :-1]), 1)
        return (g * h_prev).sum_to_size(a.shape), g, a[:, 0] * g[:, 0]


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """All states of the linear recurrence ``h_t = a_t·h_{t−1} + b_t`` (elementwise), in parallel.
    ``a`` may take any sign: the scan and its gradient multiply the ``a`` themselves.

    ``b`` is ``(B, L, ...)``, time in dimension 1; ``a`` is ``b``'s shape or broadcasts to it
    along size-1 dimensions after time (a decay shared by a head's channels stays small);
    ``h0`` is the state before the first position, ``(B, ...)`` (None: zeros). Returns ``h`` of
    the shape of ``b``, ``h[:, t]`` the state after position t. A log-depth (Hillis–Steele) scan
    from a zero start, the start state then entering as (a_1 ⋯ a_t)·h0. Differentiable in all
    three arguments; work is O(L log L) and memory O(L) times the size of one position, so callers
    chunk long sequences. It runs in the widest of the three dtypes (under bf16 autocast, pass
    float32 ``a`` or ``h0`` to keep the recurrence in float32).
    """
    if a.dim() != b.dim() or a.shape[:2] != b.shape[:2]:
        raise ValueError(f"linear_scan: a {tuple(a.shape)} must match b {tuple(b.shape)} in batch "
                         "and time and have as many dimensions")
    if h0 is None:
        h0 = b.new_zeros(b.shape[:1] + b.shape[2:])
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), h0.dtype)
    return _LinearScan.apply(a.to(dtype), b.to(dtype), h0.to(dtype))


class MambaOptions(StepSizeOptions):
    #: N, the size of each channel's state
    state_size: int = pydantic.Field(default=16, ge=1)
    #: d_inner = expand · d_model, the width the recurrence runs at
    expand: int = pydantic.Field(default=2, ge=1)
    #: width of the causal depthwise convolution before the recurrence
    conv_size: int = pydantic.Field(default=4, ge=1)
    #: rank of the projection producing Δ; None means ⌈d_model / 16⌉
    dt_rank: int | None = pydantic.Field(default=None, ge=1)
    #: positions per chunk of the parallel scan (memory is batch × chunk × d_inner × N; on a CPU,
    #: longer chunks outgrow the allocator's cache and run slower)
    chunk: int = pydantic.Field(default=16, ge=1)
    #: transition range: ``positive`` exp(Δ·A) ∈ (0, 1); ``signed`` 2·exp(Δ·A) − 1 ∈ (−1, 1)
    eigenvalues: Eigenvalues = "positive"

    id_optional: ClassVar[tuple[str, ...]] = ("eigenvalues",)


class MambaMixer(Mixer):
    """The Mamba block: in_proj → (x, z); x → causal depthwise conv → SiLU → selective scan;
    output = out_proj(y · SiLU(z))."""

    def __init__(self, d: int, options: MambaOptions):
        super().__init__()
        self.n = N = options.state_size
        self.d_inner = di = options.expand * d
        self.dt_rank = R = math.ceil(d / 16) if options.dt_rank is None else options.dt_rank
        self.conv_size = K = options.conv_size
        self.chunk = options.chunk
        self.eigenvalues = options.eigenvalues

        self.in_proj = nn.Linear(d, 2 * di, bias=False)
        self.conv = ShortConv(di, K)
        self.x_proj = nn.Linear(di, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, di)
        self.out_proj = nn.Linear(di, d, bias=False)
        # S4D-Real: A = −(1, 2, …, N) in every channel
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(di, 1))
        exempt_from_weight_decay(self.A_log)
        self.D = nn.Parameter(torch.ones(di))

        with torch.no_grad():
            bound = R ** -0.5
            self.dt_proj.weight.uniform_(-bound, bound)
            # initial Δ = softplus(bias) log-uniform in [dt_min, dt_max]
            self.dt_proj.bias.copy_(inverse_softplus(initial_log_step_sizes(di, options).exp()))

    def _selection(self, xc: torch.Tensor):
        """Δ (…, d_inner), B (…, N), C (…, N) from the convolved input ``xc`` (…, d_inner)."""
        delta, B, C = self.x_proj(xc).split([self.dt_rank, self.n, self.n], -1)
        return F.softplus(self.dt_proj(delta)), B, C

    def prefill(self, u: torch.Tensor):
        T = u.shape[1]
        x, z = self.in_proj(u).chunk(2, -1)  # (B, T, d_inner) each
        xc, conv_state = self.conv.prefill(x)
        xc = F.silu(xc)
        dt, B, C = self._selection(xc)
        A = -torch.exp(self.A_log)  # (d_inner, N)

        h = u.new_zeros(u.shape[0], self.d_inner, self.n)  # u's dtype: float32 under autocast
        ys = []
        for s in range(0, T, self.chunk):
            part = slice(s, s + self.chunk)
            dt_c = dt[:, part].unsqueeze(-1)  # (B, L, d_inner, 1)
            dtx = (dt[:, part] * xc[:, part]).unsqueeze(-1)
            hs = linear_scan(diagonal_transition(dt_c * A, self.eigenvalues), dtx * B[:, part].unsqueeze(2), h)
            ys.append(torch.einsum("bldn,bln->bld", hs, C[:, part]))
            h = hs[:, -1].clone()  # not a view: the chunk's states can be freed
        y = torch.cat(ys, 1) + self.D * xc
        return self.out_proj(y * F.silu(z)), (conv_state, h)

    def transitions(self, u: torch.Tensor) -> torch.Tensor:
        """The diagonal transitions (the eigenvalues of each step's state transition) the
        recurrence applies to ``u`` (B, T, d): ``(B, T, d_inner, N)``."""
        x, _ = self.in_proj(u).chunk(2, -1)
        dt, _, _ = self._selection(F.silu(self.conv(x)))
        return diagonal_transition(dt.unsqueeze(-1) * -torch.exp(self.A_log), self.eigenvalues)

    def init_state(self, batch_size: int, device, dtype):
        return (self.conv.init_state(batch_size, device, dtype),
                torch.zeros(batch_size, self.d_inner, self.n, device=device, dtype=dtype))

    def step(self, u: torch.Tensor, state):
        conv_state, h = state
        x, z = self.in_proj(u).chunk(2, -1)  # (B, d_inner) each
        xc, conv_state = self.conv.step(x, conv_state)
        xc = F.silu(xc)
        dt, B, C = self._selection(xc)
        A = -torch.exp(self.A_log)
        dt = dt.unsqueeze(-1)  # (B, d_inner, 1)
        h = diagonal_transition(dt * A, self.eigenvalues) * h + dt * B.unsqueeze(1) * xc.unsqueeze(-1)
        y = torch.einsum("bdn,bn->bd", h, C) + self.D * xc
        return self.out_proj(y * F.silu(z)), (conv_state, h)

    def state_size(self) -> int:
        return self.d_inner * self.n + self.conv.state_size()

    def receptive_field(self) -> None:
        return None


@ARCHITECTURES.register("mamba")
class Mamba(MixerStack):
    """Mamba (Gu & Dao 2023): residual blocks of a selective SSM mixer, no separate MLP.

    Parallel: projections and the causal convolution over the whole sequence, then the selective
    scan chunk by chunk, each chunk a log-depth associative scan started from the previous
    chunk's last state. Recurrent: a (conv_size − 1)-input convolution buffer and the
    (d_inner, N) state per layer, updated one token at a time. ``eigenvalues="signed"``: the
    transitions range over (−1, 1) (Grazzi et al. 2025).
    """

    Options = MambaOptions
    mlp = False
    test_options = ({}, {"chunk": 8}, {"state_size": 4, "conv_size": 2}, {"dt_rank": 3},
                    {"eigenvalues": "signed", "chunk": 8})

    def make_mixer(self, d: int, options: MambaOptions) -> Mixer:
        return MambaMixer(d, options)
