"""The residual stack the sequence-mixer families share, so that each family file holds only its mixer.

A ``Mixer`` maps ``(B, T, d)`` to ``(B, T, d)`` causally and has two forms that must agree:
the parallel form (``forward`` / ``prefill``: a scan, an FFT convolution, a chunked or masked
product) used for training, and the recurrent form (``init_state`` / ``step``) used for decoding.
The stack wraps each mixer in a pre-LayerNorm residual block, optionally followed by a GELU MLP,
and ends in a LayerNorm.

Bidirectional mode gives every block a second mixer that reads each sequence backwards: the real
tokens of each row are reversed in place (padding stays on the right), so neither direction ever
reads padding, and the two directions' outputs are summed. Mixers run in float32 even under
bfloat16 autocast (see ``float32``); their decoding states are float32.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from architectures.base import Backbone, BackboneOptions


class StepSizeOptions(BackboneOptions):
    """Options of the families that discretise a continuous-time system with a learnt step Δ."""

    #: smallest initial step size Δ (drawn log-uniformly between dt_min and dt_max)
    dt_min: float = pydantic.Field(default=0.001, gt=0.0)
    #: largest initial step size Δ
    dt_max: float = pydantic.Field(default=0.1, gt=0.0)

    @pydantic.model_validator(mode="after")
    def _dt_range(self):
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min ({self.dt_min}) must not exceed dt_max ({self.dt_max})")
        return self


#: the range of the eigenvalues of a mixer's state transition (Grazzi et al. 2025, "Unlocking
#: state-tracking in linear RNNs through negative eigenvalues"): ``positive``, the family's own
#: [0, 1]; ``signed``, the same gate stretched to [−1, 1] (a diagonal transition a becomes 2a − 1,
#: the delta rule's β ∈ (0, 1) becomes 2β ∈ (0, 2)). Only with negative eigenvalues can a linear
#: recurrence flip its state's sign per token, which parity needs.
Eigenvalues = Literal["positive", "signed"]


def diagonal_transition(log_a: torch.Tensor, eigenvalues: Eigenvalues) -> torch.Tensor:
    """A diagonal transition from ``log_a`` ≤ 0: exp(log_a) ∈ [0, 1] (``positive``) or
    2·exp(log_a) − 1 ∈ [−1, 1] (``signed``, as Grazzi et al. 2025 extend Mamba's)."""
    if eigenvalues == "signed":
        return 2 * torch.exp(log_a) - 1
    return torch.exp(log_a)


def initial_log_step_sizes(n: int, options: StepSizeOptions) -> torch.Tensor:
    """log Δ for ``n`` channels or heads, uniform in [log dt_min, log dt_max]."""
    log_min, log_max = math.log(options.dt_min), math.log(options.dt_max)
    return torch.rand(n) * (log_max - log_min) + log_min


def inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    """The bias b with softplus(b) = x (x > 0)."""
    return x + torch.log(-torch.expm1(-x))


class Mixer(nn.Module):
    """One causal sequence mixer of width ``d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prefill(x)[0]

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:  # pragma: no cover
        """Parallel form: outputs for ``(B, T, d)`` and the recurrent state after the last position."""
        raise NotImplementedError

    def init_state(self, batch_size: int, device, dtype) -> Any:  # pragma: no cover
        raise NotImplementedError

    def step(self, x: torch.Tensor, state) -> tuple[torch.Tensor, Any]:  # pragma: no cover
        """Recurrent form: one position ``(B, d)``; its output ``(B, d)`` and the next state."""
        raise NotImplementedError

    def state_size(self) -> int | None:
        """Numbers its decoding state holds (None: grows with the sequence)."""
        return None

    def receptive_field(self) -> int | None:
        """Positions one output can see, itself included (None: unbounded)."""
        return None


class ShortConv(nn.Conv1d):
    """Causal depthwise convolution over a few positions, on ``(B, T, channels)``; its decoding
    state is the last ``kernel − 1`` inputs (zeros before the first)."""

    def __init__(self, channels: int, kernel: int, bias: bool = True):
        super().__init__(channels, channels, kernel, groups=channels, bias=bias)
        self.context = kernel - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x.transpose(1, 2), (self.context, 0))).transpose(1, 2)

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs and the buffer after ``x``."""
        buffer = F.pad(x, (0, 0, self.context, 0))[:, x.shape[1]:].clone()  # not a view of the padded input
        return self(x), buffer

    def init_state(self, batch_size: int, device, dtype) -> torch.Tensor:
        return torch.zeros(batch_size, self.context, self.in_channels, device=device, dtype=dtype)

    def step(self, x: torch.Tensor, buffer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One position ``(B, channels)``."""
        window = torch.cat((buffer, x.unsqueeze(1)), 1)  # (B, kernel, channels), oldest first
        y = (window * self.weight[:, 0].T).sum(1)
        return y if self.bias is None else y + self.bias, window[:, 1:]

    def state_size(self) -> int:
        return self.context * self.in_channels


def reverse_real(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Each row's real tokens in reverse order, padding left where it is (its own inverse)."""
    if mask is None:
        return x.flip(1)
    T = x.shape[1]
    lengths = mask.sum(1, keepdim=True)
    t = torch.arange(T, device=x.device).unsqueeze(0)
    index = torch.where(t < lengths, lengths - 1 - t, t)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class MixerBlock(nn.Module):
    def __init__(self, forward_mixer: Mixer, backward_mixer: Mixer | None, d: int, mlp: bool,
                 dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.mixer = forward_mixer
        self.backward_mixer = backward_mixer
        self.mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)) \
            if mlp else None
        self.dropout = nn.Dropout(dropout)

    def _finish(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(y)
        return x if self.mlp is None else x + self.dropout(self.mlp(x))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.norm1(x)
        if mask is not None:  # padding reads as zeros: nothing it holds can reach a gradient
            h = h * mask.unsqueeze(-1).to(h.dtype)
        with float32(h) as h32:
            y = self.mixer(h32)
            if self.backward_mixer is not None:
                y = y + reverse_real(self.backward_mixer(reverse_real(h32, mask)), mask)
        return self._finish(x, y.to(x.dtype))

    def prefill(self, x: torch.Tensor):
        h = self.norm1(x)
        with float32(h) as h32:
            y, state = self.mixer.prefill(h32)
        return self._finish(x, y.to(x.dtype)), state

    def step(self, x: torch.Tensor, state):
        h = self.norm1(x)
        with float32(h) as h32:
            y, state = self.mixer.step(h32, state)
        return self._finish(x, y.to(x.dtype)), state


@contextlib.contextmanager
def float32(h: torch.Tensor):
    """``h`` in float32 with autocast off: the pure-PyTorch scans, products with carried states
    and FFTs lose the state in bfloat16, so mixers always run in float32 (the MLPs, outside,
    still autocast)."""
    if h.device.type not in ("cpu", "cuda"):  # e.g. the meta device FLOPs are counted on
        yield h.float()
        return
    with torch.autocast(h.device.type, enabled=False):
        yield h.float()


class MixerStack(Backbone):
    """Base of the mixer families: subclasses set ``Options`` and implement ``make_mixer``."""

    Options = BackboneOptions
    #: a GELU MLP (4·d) follows every mixer; families whose block has its own expansion turn it off
    mlp: bool = True
    #: chunked forms cost a chunk's square per chunk: short lengths do not predict long ones
    flops_polynomial_in_length = False

    def __init__(self, d_model: int, n_layers: int, options: BackboneOptions):
        super().__init__(d_model, n_layers, options)
        bidirectional = options.bidirectional
        self.blocks = nn.ModuleList(
            MixerBlock(self.make_mixer(d_model, options), self.make_mixer(d_model, options) if bidirectional else None,
                       d_model, self.mlp, options.dropout)
            for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def make_mixer(self, d: int, options) -> Mixer:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is not None and bool(mask.all()):
            mask = None
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    # Incremental state: one entry per block, whatever its mixer carries (batch in dimension 0).
    def init_state(self, batch_size: int, device, dtype):
        self.require_causal()
        return [block.mixer.init_state(batch_size, device, dtype) for block in self.blocks]

    def step(self, x: torch.Tensor, state):
        states = []
        for block, s in zip(self.blocks, state):
            x, s = block.step(x, s)
            states.append(s)
        return self.norm(x), states

    def prefill(self, x: torch.Tensor):
        self.require_causal()
        states = []
        for block in self.blocks:
            x, s = block.prefill(x)
            states.append(s)
        return self.norm(x), states

    def state_size_per_token(self) -> int | None:
        sizes = [block.mixer.state_size() for block in self.blocks]
        if any(s is None for s in sizes):
            return None
        return sum(sizes) * (2 if self.options.bidirectional else 1)

    def receptive_field(self) -> int | None:
        fields = [block.mixer.receptive_field() for block in self.blocks]
        if any(f is None for f in fields):
            return None
        if self.options.bidirectional:
            return 1 + 2 * sum(f - 1 for f in fields)
        return 1 + sum(f - 1 for f in fields)
