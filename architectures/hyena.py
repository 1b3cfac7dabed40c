"""Hyena (Poli et al. 2023, "Hyena hierarchy: towards larger convolutional language models").

The operator of order N projects the input to N + 1 streams, mixes each over a few positions with
a causal depthwise short convolution, and splits them into ``v, x_1 … x_N``. Then

    z_0 = v,    z_i = x_i ⊙ (h_i ∗ z_{i-1} + D_i ⊙ z_{i-1})   (i = 1 … N),    y = out_proj(z_N)

where ``∗`` is a causal convolution as long as the sequence and ``D_i`` a per-channel skip. The
long filters ``h_i`` (d channels each) are implicit: a small FFN with sine activations maps the
sinusoidal features of each tap position ``t = 0, 1, …`` to the taps of all N filters, and an
exponential window with a different decay per channel modulates them:

    h_i[t, c] = FFN(pos(t))[i, c] · (1 − e^{−α_c}) · e^{−α_c t},
    pos(t) = (sin ω_k t, cos ω_k t)_{k < K},   ω_k = 10000^{−k/K}.

Frequencies and decays are fixed in units of taps (no normalisation by the sequence length), so a
tap is the same whatever the length, which is what makes decoding equal the forward pass. The
decays ``α_c`` are spread geometrically between ``decay_min`` and ``decay_max`` (slowly decaying,
long-memory channels to fast, local ones, as the paper's fast/slow decay across channels); the
factor ``1 − e^{−α_c}`` gives every channel's window unit total mass (Σ_t of the window is 1), so a
filter's gain does not grow with its memory, and is a per-channel constant the FFN could absorb.
"""
from __future__ import annotations

import math

import pydantic
import torch
from torch import nn

from architectures.base import BackboneOptions
from architectures.mixer import Mixer, MixerStack, ShortConv
from harness.core.registry import ARCHITECTURES

#: the longest period (in taps) of the positional features fed to the filter FFN
MAX_PERIOD = 10000.0


class HyenaOptions(BackboneOptions):
    #: number of gated long convolutions N (the depth of the Hyena recurrence)
    order: int = pydantic.Field(default=2, ge=1)
    #: width of the implicit filter's FFN
    filter_size: int = pydantic.Field(default=32, ge=1)
    #: sinusoidal frequencies K of the tap position fed to the filter FFN (a sine and a cosine each)
    filter_positions: int = pydantic.Field(default=8, ge=1)
    #: kernel of the causal depthwise short convolution after the input projection
    short_conv: int = pydantic.Field(default=3, ge=1)
    #: slowest per-tap decay rate α of the exp(−α·t) filter window (the longest-memory channel)
    decay_min: float = pydantic.Field(default=0.01, gt=0.0)
    #: fastest per-tap decay rate α of the window (the most local channel)
    decay_max: float = pydantic.Field(default=0.6, gt=0.0)

    @pydantic.model_validator(mode="after")
    def _decays_ordered(self):
        if self.decay_min > self.decay_max:
            raise ValueError(f"decay_min={self.decay_min} exceeds decay_max={self.decay_max}")
        return self


class Sin(nn.Module):
    """sin(w ⊙ x) with a learnt frequency w per unit (the paper's filter activation)."""

    def __init__(self, width: int):
        super().__init__()
        self.freq = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * x)


class ImplicitFilter(nn.Module):
    """The taps of the N long filters, ``(N, L, d)``, at positions 0 … L−1 (see the module docstring)."""

    def __init__(self, d: int, options: HyenaOptions):
        super().__init__()
        self.d, self.order = d, options.order
        self.n_freqs = options.filter_positions
        self.decay_min, self.decay_max = options.decay_min, options.decay_max
        width = options.filter_size
        self.ffn = nn.Sequential(
            nn.Linear(2 * self.n_freqs, width), Sin(width),
            nn.Linear(width, width), Sin(width),
            nn.Linear(width, options.order * d, bias=False))

    def forward(self, length: int) -> torch.Tensor:
        device = self.ffn[0].weight.device
        t = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)  # (L, 1)
        freqs = MAX_PERIOD ** (-torch.arange(self.n_freqs, device=device, dtype=torch.float32) / self.n_freqs)
        features = torch.cat((torch.sin(t * freqs), torch.cos(t * freqs)), 1)
        taps = self.ffn(features.to(self.ffn[0].weight.dtype)).float()  # (L, N·d)
        decay = torch.logspace(math.log10(self.decay_min), math.log10(self.decay_max), self.d,
                               device=device, dtype=torch.float32)
        window = -torch.expm1(-decay) * torch.exp(-decay * t)  # (L, d), each column sums to 1 over t ≥ 0
        return (taps.view(length, self.order, self.d) * window.unsqueeze(1)).transpose(0, 1)


class HyenaMixer(Mixer):
    """The order-N Hyena operator (module docstring). State: the short convolution's last
    ``short_conv − 1`` inputs and, per long convolution, every input it has seen (it grows)."""

    def __init__(self, d: int, options: HyenaOptions):
        super().__init__()
        self.order = options.order
        streams = (options.order + 1) * d
        self.in_proj = nn.Linear(d, streams)
        self.short_conv = ShortConv(streams, options.short_conv)
        self.filter = ImplicitFilter(d, options)
        #: D_i, the per-channel skip term of each long convolution
        self.skip = nn.Parameter(torch.randn(options.order, d))
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # training needs no decoding cache: skip prefill's (B, T, N, d) stack of the inputs
        return self.out_proj(self._long_convolutions(self.short_conv(self.in_proj(x))))

    def prefill(self, x: torch.Tensor):
        z, conv = self.short_conv.prefill(self.in_proj(x))
        inputs = []
        y = self._long_convolutions(z, inputs)
        # cache (B, T, N, d): what each long convolution has read
        return self.out_proj(y), {"conv": conv, "cache": torch.stack(inputs, 2)}

    def _long_convolutions(self, z: torch.Tensor, inputs: list | None = None) -> torch.Tensor:
        """z_N from the short-convolved streams ``z`` ``(B, T, (N + 1)·d)``; the input of each long
        convolution, z_0 … z_{N−1}, is appended to ``inputs`` when one is given."""
        T = z.shape[1]
        v, *gates = z.chunk(self.order + 1, -1)
        # causal long convolutions by FFT, zero-padded to 2T so that nothing wraps around
        filters = torch.fft.rfft(self.filter(T), n=2 * T, dim=1)  # (N, T + 1, d)
        for i, gate in enumerate(gates):
            if inputs is not None:
                inputs.append(v)
            conv = torch.fft.irfft(torch.fft.rfft(v.float(), n=2 * T, dim=1) * filters[i], n=2 * T, dim=1)
            v = gate * (conv[:, :T].to(v.dtype) + self.skip[i] * v)
        return v

    def init_state(self, batch_size: int, device, dtype):
        streams = self.short_conv.in_channels
        return {"conv": self.short_conv.init_state(batch_size, device, dtype),
                "cache": torch.zeros(batch_size, 0, self.order, streams // (self.order + 1),
                                     device=device, dtype=dtype)}

    def step(self, x: torch.Tensor, state):
        z, conv = self.short_conv.step(self.in_proj(x), state["conv"])
        v, *gates = z.chunk(self.order + 1, -1)
        cache = state["cache"]
        t = cache.shape[1]
        taps = self.filter(t + 1).flip(1).to(x.dtype)  # (N, t + 1, d), tap t−s facing input s
        inputs = []
        for i, gate in enumerate(gates):
            inputs.append(v)
            seen = torch.cat((cache[:, :, i], v.unsqueeze(1)), 1)  # (B, t + 1, d): inputs 0 … t
            v = gate * ((seen * taps[i]).sum(1) + self.skip[i] * v)
        cache = torch.cat((cache, torch.stack(inputs, 1).unsqueeze(1)), 1)
        return self.out_proj(v), {"conv": conv, "cache": cache}

    def state_size(self) -> None:
        return None  # the cache of past inputs grows with the sequence


@ARCHITECTURES.register("hyena")
class Hyena(MixerStack):
    """Hyena (Poli et al. 2023): gated implicit long convolutions, each block followed by the MLP.

    Parallel form: FFT convolutions (length 2T). Recurrent form: decoding caches every input each
    long convolution has read and computes each new output as a direct O(t) dot product with the
    filter taps 0 … t, so the state grows with the length (``state_size`` None).
    """

    Options = HyenaOptions
    mlp = True
    test_options = ({}, {"order": 1}, {"order": 3, "short_conv": 1})

    def make_mixer(self, d: int, options: HyenaOptions) -> Mixer:
        return HyenaMixer(d, options)
