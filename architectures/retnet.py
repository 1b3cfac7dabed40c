"""RetNet: multi-scale retention (Sun et al. 2023, "Retentive network: a successor to Transformer
for large language models").

Each head h decays its state by a fixed γ_h = 1 − 2^(−5−h). With q and k rotated by position
(rotary embedding, base 10000: the paper's e^{inθ} without xPos) and k scaled by d_head^(−½),

    S_t = γ·S_{t−1} + k_tᵀ v_t,    o_t = q_t S_t,

equivalently o_n = Σ_{m≤n} γ^{n−m} (q_n·k_m) v_m. The heads are normalised separately (GroupNorm)
and gated: Y = W_O(swish(W_G x) ⊙ GroupNorm(o)). With 4 heads the decays keep memories of roughly
32 to 256 tokens (1/(1 − γ_h)); more heads reach further.

Departures from the paper: values and gate are d wide, not 2d (the width is solved for the
parameter budget either way), and the paper's scaling of the decay matrix and scores by their row
sums is left out: GroupNorm undoes any per-row scale, so it changes nothing but rounding.
"""
from __future__ import annotations

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from architectures.base import BackboneOptions
from architectures.mixer import Mixer, MixerStack
from architectures.transformer import rope_tables, rotate
from harness.core.registry import ARCHITECTURES

ROPE_BASE = 10000.0


class RetNetOptions(BackboneOptions):
    #: retention heads, each with its own decay γ_h = 1 − 2^(−5−h); head width d_model / n_heads (even)
    n_heads: int = pydantic.Field(default=4, ge=1)
    #: positions per chunk of the chunkwise-recurrent parallel form
    chunk: int = pydantic.Field(default=64, ge=1)


class MultiScaleRetention(Mixer):
    def __init__(self, d: int, options: RetNetOptions):
        super().__init__()
        H = self.n_heads = options.n_heads
        if d % H or (d // H) % 2:
            raise ValueError(f"d_model={d} must split into {H} heads of even size")
        self.d, self.head_dim, self.chunk = d, d // H, options.chunk
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.gate = nn.Linear(d, d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.norm = nn.GroupNorm(H, d)  # one group per head: heads are contiguous channels

    def log_decay(self, device) -> torch.Tensor:
        """log γ_h, ``(H,)``."""
        h = torch.arange(self.n_heads, device=device, dtype=torch.float32)
        return torch.log1p(-(2.0 ** (-5.0 - h)))

    def _qkv(self, x: torch.Tensor, start: int):
        """Rotated q, scaled and rotated k, and v, ``(…, H, T, d_head)``, for inputs ``(…, T, d)``
        at absolute positions ``start …``."""
        *batch, T, _ = x.shape
        q, k, v = (proj(x).view(*batch, T, self.n_heads, self.head_dim).transpose(-2, -3)
                   for proj in (self.q, self.k, self.v))
        cos, sin = rope_tables(start, T, self.head_dim, ROPE_BASE, x)
        return rotate(q, cos, sin), rotate(k, cos, sin) * self.head_dim ** -0.5, v

    def _finish(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """W_O(swish(W_G x) ⊙ GroupNorm(o)) for ``x`` and the concatenated heads ``o``, ``(…, d)``."""
        normed = self.norm(o.reshape(-1, self.d)).view(o.shape)
        return self.out(F.silu(self.gate(x)) * normed)

    def prefill(self, x: torch.Tensor):
        """Chunkwise recurrent form: for chunk positions n, m (0-based within the chunk),
        o_n = Σ_{m≤n} γ^{n−m} (q_n·k_m) v_m + γ^{n+1} q_n R, where R is the state before the chunk,
        then R ← γ^C R + Σ_m γ^{C−1−m} k_mᵀ v_m."""
        B, T, d = x.shape
        q, k, v = self._qkv(x, 0)  # (B, H, T, d_head)
        log_g = self.log_decay(x.device).view(-1, 1, 1)  # (H, 1, 1)
        R = x.new_zeros(B, self.n_heads, self.head_dim, self.head_dim)
        outputs = []
        for s in range(0, T, self.chunk):
            e = min(s + self.chunk, T)
            C = e - s
            n = torch.arange(C, device=x.device, dtype=torch.float32)
            lag = n.view(-1, 1) - n.view(1, -1)  # n − m
            decay = torch.exp(lag.clamp(min=0) * log_g).masked_fill(lag < 0, 0).to(x.dtype)  # (H, C, C)
            qc, kc, vc = q[:, :, s:e], k[:, :, s:e], v[:, :, s:e]
            inner = ((qc @ kc.transpose(-1, -2)) * decay) @ vc
            cross = (qc @ R) * torch.exp((n + 1).view(-1, 1) * log_g).to(x.dtype)
            outputs.append(inner + cross)
            to_end = torch.exp((C - 1 - n).view(-1, 1) * log_g).to(x.dtype)  # γ^{C−1−m}, (H, C, 1)
            R = torch.exp(C * log_g).to(x.dtype) * R + (kc * to_end).transpose(-1, -2) @ vc
        o = torch.cat(outputs, 2).transpose(1, 2).reshape(B, T, d)
        return self._finish(x, o), {"S": R, "t": T}

    def init_state(self, batch_size: int, device, dtype):
        """S ``(B, H, d_head, d_head)`` and ``t``, the next position (an int, shared by the batch)."""
        S = torch.zeros(batch_size, self.n_heads, self.head_dim, self.head_dim, device=device, dtype=dtype)
        return {"S": S, "t": 0}

    def step(self, x: torch.Tensor, state):
        t = state["t"]
        q, k, v = (a.squeeze(-2) for a in self._qkv(x.unsqueeze(1), t))  # (B, H, d_head)
        gamma = self.log_decay(x.device).exp().to(x.dtype).view(-1, 1, 1)
        S = gamma * state["S"] + k.unsqueeze(-1) * v.unsqueeze(-2)
        o = (q.unsqueeze(-2) @ S).squeeze(-2).reshape(x.shape)
        return self._finish(x, o), {"S": S, "t": t + 1}

    def state_size(self) -> int:
        return self.n_heads * self.head_dim ** 2

    def receptive_field(self) -> None:
        return None


@ARCHITECTURES.register("retnet")
class RetNet(MixerStack):
    """RetNet (Sun et al. 2023): multi-scale retention, each followed by a GELU MLP.

    Parallel: the paper's chunkwise recurrent representation, a Python loop over chunks only,
    with the decay-masked (QKᵀ ⊙ D)V inside a chunk and the decayed state R carried across
    chunks. Recurrent: S_t = γ·S_{t−1} + k_tᵀ v_t per head and the position counter t (for the
    rotation).
    """

    Options = RetNetOptions
    mlp = True
    test_options = ({}, {"chunk": 8}, {"n_heads": 2})

    @classmethod
    def width_step_for(cls, options: RetNetOptions) -> int:
        return 2 * options.n_heads  # the rotation needs an even head width

    def make_mixer(self, d: int, options: RetNetOptions) -> Mixer:
        return MultiScaleRetention(d, options)
