"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs: fast autoregressive
Transformers with linear attention") and Based (Arora et al. 2024, "Simple linear attention
language models balance the recall-throughput tradeoff").

Softmax attention's exp(q·k) is replaced by a product of feature maps φ(q)·φ(k), so causal
attention becomes a recurrence over a fixed-size state, per head:

    S_t = S_{t−1} + φ(k_t) v_tᵀ,    z_t = z_{t−1} + φ(k_t),
    y_t = φ(q_t)ᵀ S_t / (φ(q_t)ᵀ z_t + ε).

Feature maps: ``elu``, φ(x) = elu(x) + 1 (Katharopoulos et al.); ``taylor``, the second-order
Taylor expansion of exp (Based), φ(x) = [1, x / d_k^¼, (x ⊗ x) / √(2·d_k)], so that
φ(q)·φ(k) = 1 + q·k/√d_k + (q·k)²/(2·d_k). Both make every φ(q)·φ(k) positive (the Taylor
polynomial 1 + a + a²/2 is at least ½), so the denominator is too.

Based adds two things that help recall, both optional here: a short causal depthwise
convolution on the input before the projections, and a sliding-window softmax attention over
the last ``window`` positions (its own q/k/v projections, at the head width) whose output is
summed with the linear attention's. The paper's Based is a hybrid of layers (Taylor linear
attention layers, sliding-window attention layers with rotary positions, gated BaseConv layers);
here the three sit in every block's one mixer, the convolution is not gated and the window branch
has no positions (the short convolution and the causal window order the tokens).
"""
from __future__ import annotations

import math
from typing import Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from architectures.base import BackboneOptions
from architectures.mixer import Mixer, MixerStack, ShortConv
from harness.core.registry import ARCHITECTURES

EPS = 1e-6
#: feature dimension d_k of the Taylor map when ``feature_dim`` is not given
TAYLOR_FEATURE_DIM = 16


class LinearAttentionOptions(BackboneOptions):
    #: φ applied to queries and keys: elu(x) + 1, or the 2nd-order Taylor expansion of exp
    feature_map: Literal["elu", "taylor"] = "elu"
    #: attention heads; the head width (of values and of the window branch) is d_model / n_heads
    n_heads: int = pydantic.Field(default=4, ge=1)
    #: d_k, the width each head projects q and k to before φ (None: head width for elu, 16 for taylor)
    feature_dim: int | None = pydantic.Field(default=None, ge=1)
    #: kernel of the causal depthwise convolution applied to the input first (0: none)
    conv_size: int = pydantic.Field(default=0, ge=0)
    #: softmax attention over the last ``window`` positions, added to the output (0: none)
    window: int = pydantic.Field(default=0, ge=0)
    #: positions per chunk of the parallel form
    chunk: int = pydantic.Field(default=64, ge=1)


class BasedOptions(LinearAttentionOptions):
    feature_map: Literal["elu", "taylor"] = "taylor"
    feature_dim: int | None = pydantic.Field(default=TAYLOR_FEATURE_DIM, ge=1)
    conv_size: int = pydantic.Field(default=3, ge=0)
    window: int = pydantic.Field(default=64, ge=0)


def elu_features(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1


def taylor_features(x: torch.Tensor) -> torch.Tensor:
    """[1, x / d_k^¼, (x ⊗ x) / √(2·d_k)] over the last dimension: 1 + d_k + d_k² features."""
    dk = x.shape[-1]
    outer = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2) / math.sqrt(2 * dk)
    return torch.cat((torch.ones_like(x[..., :1]), x / dk ** 0.25, outer), -1)


class LinearAttentionMixer(Mixer):
    """Short conv (optional) → per-head φ(q), φ(k), v → normalised linear attention
    (+ sliding-window softmax attention) → output projection."""

    def __init__(self, d: int, options: LinearAttentionOptions):
        super().__init__()
        H = self.n_heads = options.n_heads
        if d % H:
            raise ValueError(f"d_model={d} must split into {H} heads")
        self.d, self.head_dim = d, d // H
        taylor = options.feature_map == "taylor"
        self.key_dim = dk = options.feature_dim or (TAYLOR_FEATURE_DIM if taylor else self.head_dim)
        self.features = taylor_features if taylor else elu_features
        #: F, the length of φ(x)
        self.n_features = 1 + dk + dk * dk if taylor else dk
        self.chunk, self.window, self.conv_size = options.chunk, options.window, options.conv_size
        self.conv = ShortConv(d, self.conv_size) if self.conv_size else None
        self.q = nn.Linear(d, H * dk, bias=False)
        self.k = nn.Linear(d, H * dk, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.window_qkv = nn.Linear(d, 3 * d, bias=False) if self.window else None
        self.out = nn.Linear(d, d)

    def _heads(self, h: torch.Tensor):
        """φ(q), φ(k) ``(…, H, F)``, v ``(…, H, d_head)`` and the window branch's q, k, v (or
        None) from inputs ``(…, d)``; the caller moves heads before time."""
        shape = h.shape[:-1]
        q = self.features(self.q(h).view(*shape, self.n_heads, self.key_dim))
        k = self.features(self.k(h).view(*shape, self.n_heads, self.key_dim))
        v = self.v(h).view(*shape, self.n_heads, self.head_dim)
        window = None
        if self.window_qkv is not None:
            window = self.window_qkv(h).view(*shape, 3, self.n_heads, self.head_dim).unbind(-3)
        return q, k, v, window

    def prefill(self, x: torch.Tensor):
        B, T, d = x.shape
        h, conv_buffer = x, None
        if self.conv is not None:
            h, conv_buffer = self.conv.prefill(x)
        q, k, v, window = self._heads(h)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, ·)
        if window is not None:
            wq, wk, wv = (t.transpose(1, 2) for t in window)
        S = x.new_zeros(B, self.n_heads, self.n_features, self.head_dim)
        z = x.new_zeros(B, self.n_heads, self.n_features, 1)
        outputs = []
        for s in range(0, T, self.chunk):
            e = min(s + self.chunk, T)
            qc, kc, vc = q[:, :, s:e], k[:, :, s:e], v[:, :, s:e]
            # within the chunk: the causally masked φ(Q)φ(K)ᵀ; before it: the carried (S, z)
            scores = (qc @ kc.transpose(-1, -2)).tril()
            num = qc @ S + scores @ vc
            den = qc @ z + scores.sum(-1, keepdim=True)
            y = num / (den + EPS)
            S = S + kc.transpose(-1, -2) @ vc
            z = z + kc.sum(2).unsqueeze(-1)
            if window is not None:
                # queries s … e−1 see keys max(0, i − window + 1) … i
                k0 = max(0, s - self.window + 1)
                i = torch.arange(s, e, device=x.device).unsqueeze(1)
                j = torch.arange(k0, e, device=x.device).unsqueeze(0)
                band = (j <= i) & (j > i - self.window)
                y = y + F.scaled_dot_product_attention(wq[:, :, s:e], wk[:, :, k0:e], wv[:, :, k0:e],
                                                       attn_mask=band)
            outputs.append(y)
        y = torch.cat(outputs, 2).transpose(1, 2).reshape(B, T, d)

        state = {"S": S, "z": z.squeeze(-1)}
        if conv_buffer is not None:  # the last conv_size − 1 inputs, zeros before the prefix
            state["conv"] = conv_buffer
        if window is not None:  # the last window − 1 keys and values
            state["keys"] = F.pad(wk, (0, 0, self.window - 1, 0))[:, :, T:]
            state["values"] = F.pad(wv, (0, 0, self.window - 1, 0))[:, :, T:]
            state["seen"] = min(T, self.window - 1)
        return self.out(y), state

    def init_state(self, batch_size: int, device, dtype):
        """S ``(B, H, F, d_head)``, z ``(B, H, F)``; the conv buffer ``(B, conv_size − 1, d)``;
        the window's keys and values ``(B, H, window − 1, d_head)`` with ``seen``, how many of
        them are real (the buffer's last ones)."""
        def zeros(*shape):
            return torch.zeros(batch_size, *shape, device=device, dtype=dtype)

        state = {"S": zeros(self.n_heads, self.n_features, self.head_dim),
                 "z": zeros(self.n_heads, self.n_features)}
        if self.conv is not None:
            state["conv"] = self.conv.init_state(batch_size, device, dtype)
        if self.window:
            state["keys"] = zeros(self.n_heads, self.window - 1, self.head_dim)
            state["values"] = zeros(self.n_heads, self.window - 1, self.head_dim)
            state["seen"] = 0
        return state

    def step(self, x: torch.Tensor, state):
        B = x.shape[0]
        new = {}
        h = x
        if self.conv is not None:
            h, new["conv"] = self.conv.step(x, state["conv"])
        q, k, v, window = self._heads(h)  # (B, H, ·)
        S = state["S"] + k.unsqueeze(-1) * v.unsqueeze(-2)
        z = state["z"] + k
        y = (q.unsqueeze(-2) @ S).squeeze(-2) / ((q * z).sum(-1, keepdim=True) + EPS)
        new["S"], new["z"] = S, z
        if window is not None:
            wq, wk, wv = window
            keys = torch.cat((state["keys"], wk.unsqueeze(2)), 2)  # (B, H, window, d_head)
            values = torch.cat((state["values"], wv.unsqueeze(2)), 2)
            seen = state["seen"]
            real = (torch.arange(self.window, device=x.device) >= self.window - 1 - seen).view(1, -1)
            y = y + F.scaled_dot_product_attention(wq.unsqueeze(2), keys, values, attn_mask=real).squeeze(2)
            new["keys"], new["values"] = keys[:, :, 1:], values[:, :, 1:]
            new["seen"] = min(seen + 1, self.window - 1)
        return self.out(y.reshape(B, self.d)), new

    def state_size(self) -> int:
        size = self.n_heads * self.n_features * (self.head_dim + 1)
        if self.conv is not None:
            size += self.conv.state_size()
        if self.window:
            size += 2 * (self.window - 1) * self.d
        return size

    def receptive_field(self) -> None:
        return None


@ARCHITECTURES.register("linear_attention")
class LinearAttention(MixerStack):
    """Linear attention (Katharopoulos et al. 2020), each mixer followed by a GELU MLP.

    Parallel: chunk by chunk, the causally masked φ(Q)φ(K)ᵀ product inside a chunk plus the
    (S, z) state carried from the chunks before it (a Python loop over chunks only; no T×T
    matrix); the window branch is scaled_dot_product_attention of each chunk's queries over a
    banded mask of its last ``window`` keys. Recurrent: S, z updated per token, plus the short
    convolution's last inputs and the window's last keys and values (a bounded state).
    """

    Options = LinearAttentionOptions
    mlp = True
    test_options = ({}, {"feature_map": "taylor", "feature_dim": 4}, {"chunk": 8},
                    {"conv_size": 3, "window": 5, "chunk": 8})

    @classmethod
    def width_step_for(cls, options: LinearAttentionOptions) -> int:
        return options.n_heads

    def make_mixer(self, d: int, options: LinearAttentionOptions) -> Mixer:
        return LinearAttentionMixer(d, options)


@ARCHITECTURES.register("based")
class Based(LinearAttention):
    """Based (Arora et al. 2024): linear attention with the Taylor feature map (d_k = 16), a
    short causal convolution (3) and a sliding-window softmax attention (64), summed in one
    mixer; computed as ``linear_attention`` is."""

    Options = BasedOptions
    uses_sdpa = True  # the window branch (linear_attention's default has none)
    test_options = ({"feature_dim": 4, "window": 5, "chunk": 8},)
