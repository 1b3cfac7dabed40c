"""DeltaNet (Yang et al. 2024, "Parallelizing linear transformers with the delta rule over sequence
length") and Gated DeltaNet (Yang, Kautz & Hatamizadeh 2025, "Gated Delta Networks").

Per head (width ``d_h = d / H``), with q, k and v passed through SiLU (after the short convolution)
and q, k L2-normalised, β_t = σ(·) (``eigenvalues="signed"``: 2σ(·), Grazzi et al. 2025):

    S_t = α_t · S_{t-1} (I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ,        o_t = S_t q_t

(S is d_h × d_h; α = 1 for DeltaNet; for Gated DeltaNet α_t = exp(−softplus(a_t) · exp(a_log)) ∈ (0, 1)).
The transition α_t (I − β_t k_t k_tᵀ) has the eigenvalue α_t (1 − β_t) along k_t and α_t on the
rest: in [0, 1] with β ∈ (0, 1), in (−1, 1] with β ∈ (0, 2) (a reflection as β → 2).
The output is each head's RMS-normalised o, times SiLU(W_g x) when gated, then ``out_proj``.

Parallel form (both variants), the chunked WY representation. Writing ``u_t = β_t (v_t − α_t S_{t-1} k_t)``
gives ``S_t = α_t S_{t-1} + u_t k_tᵀ``; inside a chunk that starts from ``S_0``, with the cumulative
decays ``γ_t = Π_{s ≤ t} α_s`` and ``Γ_ts = γ_t/γ_s`` (s ≤ t, else 0; both 1 when not gated):

    (I + A) U = diag(β) V − diag(βγ) K S_0ᵀ,   A = tril(diag(β) (K Kᵀ ⊙ Γ), −1)
    O = diag(γ) Q S_0ᵀ + (Q Kᵀ ⊙ Γ) U,   S_C = γ_C S_0 + Uᵀ diag(γ_C/γ_t) K

(rows are positions). The triangular solves (``solve_triangular``) and the intra-chunk products run
for all chunks at once; only the carried state ``S_0`` is passed from chunk to chunk in a loop. Only
ratios ``γ_t/γ_s ≤ 1`` are ever formed, so strong decays cannot overflow. Logarithms are taken
of α alone, which stays positive; β, whatever its range, enters only as a factor, so negative
eigenvalues (β > 1) need nothing special.
Recurrent form: the update above, one position at a time, plus the short convolution's buffer.
"""
from __future__ import annotations

import math
from typing import ClassVar

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from architectures.base import BackboneOptions
from architectures.mixer import Eigenvalues, Mixer, MixerStack, ShortConv, inverse_softplus
from harness.core.registry import ARCHITECTURES


class DeltaNetOptions(BackboneOptions):
    #: heads H; each has a d_h × d_h state (d_h = d_model / H)
    n_heads: int = pydantic.Field(default=4, ge=1)
    #: Gated DeltaNet: a decay α_t ∈ (0, 1) per head and position, and a SiLU output gate
    gated: bool = False
    #: kernel of the causal depthwise short convolution on q, k and v (0: none)
    conv_size: int = pydantic.Field(default=4, ge=0)
    #: positions per chunk of the parallel (WY) form
    chunk: int = pydantic.Field(default=64, ge=1)
    #: transition eigenvalue along k, α(1 − β): ``positive`` β = σ(·) ∈ (0, 1), so in [0, 1];
    #: ``signed`` β = 2σ(·) ∈ (0, 2), so in (−1, 1)
    eigenvalues: Eigenvalues = "positive"

    id_optional: ClassVar[tuple[str, ...]] = ("eigenvalues",)


def segment_sums(log_alpha: torch.Tensor) -> torch.Tensor:
    """``(…, C) -> (…, C, C)``: entry [t, s] is log(γ_t/γ_s) = Σ_{s<r≤t} log α_r for s ≤ t, −inf above.

    Summed term by term rather than as ``g_t − g_s`` of a cumulative sum, which would cancel
    catastrophically in float32 once a strong decay has made ``g`` large.
    """
    C = log_alpha.shape[-1]
    causal = torch.ones(C, C, dtype=torch.bool, device=log_alpha.device).tril()
    terms = log_alpha.unsqueeze(-1).expand(*log_alpha.shape, C)  # [t, s] = log α_t
    sums = terms.masked_fill(~causal.tril(-1), 0.0).cumsum(-2)
    return sums.masked_fill(~causal, -math.inf)


def chunked_delta_rule(q, k, v, beta, log_alpha, chunk: int):
    """All outputs of the (gated) delta rule and the final state, by chunks (module docstring).

    q, k, v: ``(B, H, T, D)``; beta, log_alpha: ``(B, H, T)``. Returns ``o (B, H, T, D)`` and
    ``S (B, H, D, D)`` (rows index values, columns keys). Computes in float32.
    """
    B, H, T, D = q.shape
    n = -(-T // chunk)
    pad = n * chunk - T

    # Padded positions have k = v = β = 0 and α = 1: they neither write nor decay the state.
    def blocks(x):
        x = x.float()
        x = F.pad(x, (0, 0, 0, pad)) if x.dim() == 4 else F.pad(x, (0, pad))
        return x.view(B, H, n, chunk, *x.shape[3:])

    q, k, v, beta, log_alpha = map(blocks, (q, k, v, beta, log_alpha))
    g = log_alpha.cumsum(-1)  # log γ_t within each chunk
    ratios = segment_sums(log_alpha).exp()  # Γ_ts
    A = (beta.unsqueeze(-1) * (k @ k.transpose(-1, -2)) * ratios).tril(-1)
    eye = torch.eye(chunk, device=q.device)
    # the pseudo-values U = U_v − W S_0ᵀ, with U_v = (I + A)⁻¹ diag(β) V and W = (I + A)⁻¹ diag(βγ) K
    solve = lambda rhs: torch.linalg.solve_triangular(eye + A, rhs, upper=False, unitriangular=True)
    U_v = solve(beta.unsqueeze(-1) * v)
    W = solve((beta * g.exp()).unsqueeze(-1) * k)
    attend = (q @ k.transpose(-1, -2)) * ratios  # (Q Kᵀ ⊙ Γ), diagonal included
    q_decayed = q * g.exp().unsqueeze(-1)
    k_to_end = k * ratios[..., -1, :].unsqueeze(-1)  # k_s · γ_C/γ_s
    chunk_decay = g[..., -1].exp()  # γ_C per chunk

    M = q.new_zeros(B, H, D, D)  # Sᵀ: rows index keys, columns values
    outputs = []
    for c in range(n):
        u = U_v[:, :, c] - W[:, :, c] @ M
        outputs.append(q_decayed[:, :, c] @ M + attend[:, :, c] @ u)
        M = chunk_decay[:, :, c, None, None] * M + k_to_end[:, :, c].transpose(-1, -2) @ u
    o = torch.cat(outputs, 2)[:, :, :T]
    return o, M.transpose(-1, -2)


class DeltaNetMixer(Mixer):
    """Multi-head (gated) delta rule (module docstring). State: ``S (B, H, d_h, d_h)`` and the
    short convolution's last ``conv_size − 1`` inputs of q, k and v."""

    def __init__(self, d: int, options: DeltaNetOptions):
        super().__init__()
        if d % options.n_heads:
            raise ValueError(f"d_model={d} is not a multiple of n_heads={options.n_heads}")
        self.heads, self.head_dim = options.n_heads, d // options.n_heads
        self.gated, self.kernel, self.chunk = options.gated, options.conv_size, options.chunk
        self.eigenvalues = options.eigenvalues
        self.qkv = nn.Linear(d, 3 * d, bias=False)  # the three Linear(d, d) of q, k, v side by side
        self.conv = ShortConv(3 * d, self.kernel, bias=False) if self.kernel else None
        self.beta_proj = nn.Linear(d, self.heads)
        if self.gated:
            # α = exp(−softplus(a) · A), A = exp(a_log) ~ U(1, 16), softplus(bias) ~ log-U(1e-3, 0.1)
            # at init (Mamba's step-size initialisation, as Gated DeltaNet)
            self.decay_proj = nn.Linear(d, self.heads)
            self.a_log = nn.Parameter(torch.empty(self.heads).uniform_(1, 16).log())
            with torch.no_grad():
                dt = torch.empty(self.heads).uniform_(math.log(1e-3), math.log(0.1)).exp()
                self.decay_proj.bias.copy_(inverse_softplus(dt))
            self.gate_proj = nn.Linear(d, d, bias=False)
        self.norm_weight = nn.Parameter(torch.ones(self.head_dim))  # per-head RMSNorm, shared by heads
        self.out_proj = nn.Linear(d, d)

    def _inputs(self, x: torch.Tensor, qkv: torch.Tensor):
        """q, k, v ``(…, H, d_h)`` and β, log α ``(…, H)`` from the block input and the convolved q, k, v."""
        split = lambda t: t.unflatten(-1, (self.heads, self.head_dim))
        q, k, v = (split(t) for t in qkv.chunk(3, -1))
        q = F.normalize(F.silu(q), dim=-1, eps=1e-6)
        k = F.normalize(F.silu(k), dim=-1, eps=1e-6)
        v = F.silu(v)
        beta = torch.sigmoid(self.beta_proj(x))
        if self.eigenvalues == "signed":
            beta = 2 * beta
        if self.gated:
            log_alpha = -F.softplus(self.decay_proj(x)) * self.a_log.exp()
        else:
            log_alpha = torch.zeros_like(beta)
        return q, k, v, beta, log_alpha

    def transitions(self, x: torch.Tensor) -> torch.Tensor:
        """The eigenvalue α_t (1 − β_t) of each step's transition α_t (I − β_t k_t k_tᵀ) along k_t,
        for the block input ``x`` (B, T, d): ``(B, T, H)`` (the others are α_t, 1 when not gated)."""
        qkv = self.qkv(x)
        if self.conv is not None:
            qkv = self.conv(qkv)
        _, _, _, beta, log_alpha = self._inputs(x, qkv)
        return log_alpha.exp() * (1 - beta)

    def _output(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """RMSNorm of each head's output ``(…, H, d_h)``, the output gate (gated), ``out_proj``."""
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6) * self.norm_weight
        o = o.flatten(-2)
        if self.gated:
            o = o * F.silu(self.gate_proj(x))
        return self.out_proj(o)

    def prefill(self, x: torch.Tensor):
        qkv, state = self.qkv(x), {}
        if self.conv is not None:
            qkv, state["conv"] = self.conv.prefill(qkv)
        q, k, v, beta, log_alpha = self._inputs(x, qkv)
        heads_first = lambda t: t.transpose(1, 2)  # (B, T, H, …) -> (B, H, T, …)
        o, S = chunked_delta_rule(*map(heads_first, (q, k, v, beta, log_alpha)), self.chunk)
        y = self._output(x, heads_first(o).to(x.dtype))
        return y, {"S": S.to(x.dtype), **state}

    def init_state(self, batch_size: int, device, dtype):
        state = {"S": torch.zeros(batch_size, self.heads, self.head_dim, self.head_dim, device=device, dtype=dtype)}
        if self.conv is not None:
            state["conv"] = self.conv.init_state(batch_size, device, dtype)
        return state

    def step(self, x: torch.Tensor, state):
        qkv, new = self.qkv(x), {}
        if self.conv is not None:
            qkv, new["conv"] = self.conv.step(qkv, state["conv"])
        q, k, v, beta, log_alpha = self._inputs(x, qkv)
        S, beta = state["S"], beta[..., None, None]
        alpha = log_alpha.exp()[..., None, None]
        Sk = S @ k.unsqueeze(-1)  # (B, H, d_h, 1)
        S = alpha * (S - beta * Sk @ k.unsqueeze(-2)) + beta * v.unsqueeze(-1) @ k.unsqueeze(-2)
        o = (S @ q.unsqueeze(-1)).squeeze(-1)
        return self._output(x, o), {"S": S, **new}

    def state_size(self) -> int:
        return self.heads * self.head_dim ** 2 + (0 if self.conv is None else self.conv.state_size())


@ARCHITECTURES.register("deltanet")
class DeltaNet(MixerStack):
    """DeltaNet (Yang et al. 2024) and, with ``gated``, Gated DeltaNet (Yang, Kautz & Hatamizadeh 2025),
    each block followed by the MLP.

    Parallel form: the chunked WY representation for both variants (the gated one with the cumulative
    decays inside each chunk). Recurrent form: the delta-rule state update per position.
    ``eigenvalues="signed"``: β ∈ (0, 2), transition eigenvalues in (−1, 1) (Grazzi et al. 2025).
    """

    Options = DeltaNetOptions
    mlp = True
    test_options = ({}, {"gated": True}, {"chunk": 8}, {"gated": True, "chunk": 8}, {"conv_size": 0},
                    {"eigenvalues": "signed", "chunk": 8}, {"eigenvalues": "signed", "gated": True, "chunk": 8})


    @classmethod
    def width_step_for(cls, options: DeltaNetOptions) -> int:
        return options.n_heads  # d_model must split into whole heads

    def make_mixer(self, d: int, options: DeltaNetOptions) -> Mixer:
        return DeltaNetMixer(d, options)
