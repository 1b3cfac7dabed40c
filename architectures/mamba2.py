"""Mamba-2: a selective state-space model with a scalar decay per head (Dao & Gu 2024,
"Transformers are SSMs: generalized models and efficient algorithms through structured state
space duality").

The expanded input is split into H heads of P = head_dim channels. Each head keeps a (P, N) state
that decays by one scalar per token, and reads its input map B and output map C from the head's
group (the G groups share B and C among their heads, like grouped-query attention):

    h_t = exp(Δ_t·A)·h_{t−1} + Δ_t·x_t ⊗ B_t,    y_t = h_t·C_t + D·x_t     (per head; A, Δ_t, D scalars).

With ``eigenvalues="signed"`` (Grazzi et al. 2025) the decay is 2·exp(Δ_t·A) − 1 ∈ (−1, 1).

Training evaluates it chunk by chunk with the log-depth associative scan of ``architectures.mamba``
(the decay stays one number per head and token; the scan multiplies decays directly, never their
logarithms, so negative ones need nothing special); decoding steps the recurrence.
"""
from __future__ import annotations

import math
from typing import ClassVar

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from architectures.mamba import linear_scan
from architectures.mixer import (Eigenvalues, Mixer, MixerStack, ShortConv, StepSizeOptions, diagonal_transition,
                                 initial_log_step_sizes, inverse_softplus)
from harness.core.registry import ARCHITECTURES


class Mamba2Options(StepSizeOptions):
    #: N, the size of each channel's state
    state_size: int = pydantic.Field(default=16, ge=1)
    #: the inner width is about expand · d_model (rounded to whole heads in every group)
    expand: int = pydantic.Field(default=2, ge=1)
    #: P, channels per head (each head has one decay)
    head_dim: int = pydantic.Field(default=16, ge=1)
    #: G, groups of heads sharing B and C
    n_groups: int = pydantic.Field(default=1, ge=1)
    #: width of the causal depthwise convolution over (x, B, C)
    conv_size: int = pydantic.Field(default=4, ge=1)
    #: positions per chunk of the parallel scan (memory is batch × chunk × d_inner × N; on a CPU,
    #: longer chunks outgrow the allocator's cache and run slower)
    chunk: int = pydantic.Field(default=16, ge=1)
    #: decay range: ``positive`` exp(Δ·A) ∈ (0, 1); ``signed`` 2·exp(Δ·A) − 1 ∈ (−1, 1)
    eigenvalues: Eigenvalues = "positive"

    id_optional: ClassVar[tuple[str, ...]] = ("eigenvalues",)


class Mamba2Mixer(Mixer):
    """The Mamba-2 block: in_proj → (z, x, B, C, Δ); (x, B, C) → causal depthwise conv → SiLU →
    selective scan; output = out_proj(RMSNorm(y · SiLU(z)))."""

    def __init__(self, d: int, options: Mamba2Options):
        super().__init__()
        G, P = options.n_groups, options.head_dim
        # heads: about expand·d / P, a whole number per group (so widths grow in steps of G·P)
        self.n_heads = H = G * max(1, round(options.expand * d / (P * G)))
        self.n_groups, self.head_dim, self.n = G, P, options.state_size
        self.d_inner = di = H * P
        self.conv_size = K = options.conv_size
        self.chunk = options.chunk
        self.eigenvalues = options.eigenvalues
        self.conv_width = di + 2 * G * self.n  # the convolution runs over x, B and C

        self.in_proj = nn.Linear(d, di + self.conv_width + H, bias=False)  # z, (x, B, C), Δ
        self.conv = ShortConv(self.conv_width, K)
        self.norm_weight = nn.Parameter(torch.ones(di))
        self.out_proj = nn.Linear(di, d, bias=False)
        # A = −exp(A_log) per head, initially uniform in [1, 16]; Δ = softplus(raw + dt_bias)
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(H))
        self.dt_bias = nn.Parameter(inverse_softplus(initial_log_step_sizes(H, options).exp()))

    def _split(self, xbc: torch.Tensor):
        """x (…, H, P), B (…, G, N) and C (…, G, N) from the convolved ``xbc`` (…, conv_width)."""
        x, B, C = xbc.split([self.d_inner, self.n_groups * self.n, self.n_groups * self.n], -1)
        lead = xbc.shape[:-1]
        return (x.view(*lead, self.n_heads, self.head_dim), B.view(*lead, self.n_groups, self.n),
                C.view(*lead, self.n_groups, self.n))

    def _output(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """out_proj of the gated RMSNorm of y (…, d_inner) by SiLU(z)."""
        y = y * F.silu(z)
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5) * self.norm_weight
        return self.out_proj(y)

    def _proj(self, u: torch.Tensor):
        z, xbc, dt = self.in_proj(u).split([self.d_inner, self.conv_width, self.n_heads], -1)
        return z, xbc, F.softplus(dt + self.dt_bias)

    def prefill(self, u: torch.Tensor):
        Bsz, T = u.shape[:2]
        G, hpg = self.n_groups, self.n_heads // self.n_groups
        z, xbc, dt = self._proj(u)  # dt: (B, T, H)
        xbc, conv_state = self.conv.prefill(xbc)
        x, B, C = self._split(F.silu(xbc))
        A = -torch.exp(self.A_log)  # (H,)

        h = u.new_zeros(Bsz, self.n_heads, self.head_dim, self.n)  # u's dtype: float32 under autocast
        ys = []
        for s in range(0, T, self.chunk):
            part = slice(s, s + self.chunk)
            L = x[:, part].shape[1]
            decay = diagonal_transition(dt[:, part] * A, self.eigenvalues)[..., None, None]  # (B, L, H, 1, 1)
            dtx = (dt[:, part, :, None] * x[:, part]).view(Bsz, L, G, hpg, self.head_dim, 1)
            inp = (dtx * B[:, part, :, None, None, :]).view(Bsz, L, self.n_heads, self.head_dim, self.n)
            hs = linear_scan(decay, inp, h)  # (B, L, H, P, N)
            ys.append(torch.einsum("blgkpn,blgn->blgkp",
                                   hs.view(Bsz, L, G, hpg, self.head_dim, self.n), C[:, part]))
            h = hs[:, -1].clone()  # not a view: the chunk's states can be freed
        y = torch.cat(ys, 1).reshape(Bsz, T, self.n_heads, self.head_dim) + self.D[:, None] * x
        return self._output(y.reshape(Bsz, T, self.d_inner), z), (conv_state, h)

    def transitions(self, u: torch.Tensor) -> torch.Tensor:
        """The decays (each head's state transition is its decay times the identity) the recurrence
        applies to ``u`` (B, T, d): ``(B, T, H)``."""
        _, _, dt = self._proj(u)
        return diagonal_transition(dt * -torch.exp(self.A_log), self.eigenvalues)

    def init_state(self, batch_size: int, device, dtype):
        return (self.conv.init_state(batch_size, device, dtype),
                torch.zeros(batch_size, self.n_heads, self.head_dim, self.n, device=device, dtype=dtype))

    def step(self, u: torch.Tensor, state):
        conv_state, h = state
        Bsz = u.shape[0]
        G, hpg = self.n_groups, self.n_heads // self.n_groups
        z, xbc, dt = self._proj(u)  # dt: (B, H)
        xbc, conv_state = self.conv.step(xbc, conv_state)
        x, B, C = self._split(F.silu(xbc))
        A = -torch.exp(self.A_log)
        # each head reads its group's B and C
        B_h = B.repeat_interleave(hpg, 1)  # (B, H, N)
        C_h = C.repeat_interleave(hpg, 1)
        decay = diagonal_transition(dt * A, self.eigenvalues)[..., None, None]  # (B, H, 1, 1)
        h = decay * h + (dt[..., None] * x)[..., None] * B_h[:, :, None, :]
        y = torch.einsum("bhpn,bhn->bhp", h, C_h) + self.D[:, None] * x
        return self._output(y.reshape(Bsz, self.d_inner), z), (conv_state, h)

    def state_size(self) -> int:
        return self.d_inner * self.n + self.conv.state_size()

    def receptive_field(self) -> None:
        return None


@ARCHITECTURES.register("mamba2")
class Mamba2(MixerStack):
    """Mamba-2 (Dao & Gu 2024): residual blocks of an SSD mixer (scalar decay per head), no
    separate MLP.

    Parallel: projections and the causal convolution over the whole sequence, then the scan chunk
    by chunk, each chunk a log-depth associative scan (``architectures.mamba.linear_scan``) started
    from the previous chunk's last state. Recurrent: a (conv_size − 1)-input convolution buffer and
    the (H, P, N) state per layer, updated one token at a time. ``eigenvalues="signed"``: decays
    in (−1, 1) (Grazzi et al. 2025).
    """

    Options = Mamba2Options
    mlp = False
    test_options = ({}, {"chunk": 8}, {"state_size": 4, "conv_size": 2, "head_dim": 8}, {"n_groups": 2},
                    {"eigenvalues": "signed", "chunk": 8})

    def make_mixer(self, d: int, options: Mamba2Options) -> Mixer:
        return Mamba2Mixer(d, options)
