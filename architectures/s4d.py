"""S4D: the diagonal structured state space model (Gu, Gupta, Goel & Ré 2022, "On the
parameterization and initialization of diagonal state space models").

Every channel ``h`` of the ``H = d_model`` channels runs its own linear time-invariant SSM with
``N/2`` complex modes (``N`` real numbers of state) and input matrix ``B = 1``:

    A = −exp(log_A_real) + i·A_imag            (S4D-Lin init: −1/2 + iπn)
    Ā = exp(dt·A),   B̄ = (exp(dt·A) − 1)/A     (zero-order hold)
    s_t = Ā·s_{t−1} + B̄·u_t,   y_t = 2·Re(Σ_n C_n·s_t,n) + D·u_t

Unrolled, ``y = K * u + D·u`` with the kernel ``K_l = 2·Re(Σ_n C_n·B̄_n·Ā_n^l)``: the parallel form
is that causal convolution done by FFT, the recurrent form steps ``s``. The SSM's output goes
through GELU and a position-wise ``Linear(d, 2d)`` + GLU, the block's channel mixing.
"""
from __future__ import annotations

import math

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from architectures.mixer import Mixer, MixerStack, StepSizeOptions, initial_log_step_sizes
from harness.core.registry import ARCHITECTURES
from harness.core.train_config import exempt_from_weight_decay


class S4DOptions(StepSizeOptions):
    #: real numbers of state per channel (N/2 complex modes); must be even
    state_size: int = pydantic.Field(default=64, ge=2, multiple_of=2)


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype the SSM runs in: at least complex64 (half precision has no complex FFT)."""
    return torch.complex128 if dtype == torch.float64 else torch.complex64


class S4DMixer(Mixer):
    """H independent diagonal SSMs (one per channel, input matrix B = 1), then GELU and GLU."""

    def __init__(self, d: int, options: S4DOptions):
        super().__init__()
        self.channels, self.modes = d, options.state_size // 2
        H, M = self.channels, self.modes
        self.log_dt = nn.Parameter(initial_log_step_sizes(H, options))
        self.log_A_real = nn.Parameter(torch.full((H, M), math.log(0.5)))
        self.A_imag = nn.Parameter(math.pi * torch.arange(M, dtype=torch.float32).expand(H, M).clone())
        exempt_from_weight_decay(self.log_A_real, self.A_imag)
        #: C as (real, imaginary) pairs, a unit-variance complex normal
        self.C = nn.Parameter(torch.randn(H, M, 2) * math.sqrt(0.5))
        self.D = nn.Parameter(torch.randn(H))
        self.output = nn.Linear(d, 2 * d)

    def discretise(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """dt·A, B̄ and C, each complex ``(H, N/2)``."""
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        dtA = torch.exp(self.log_dt).unsqueeze(-1) * A
        B_bar = torch.expm1(dtA) / A
        return dtA, B_bar, torch.view_as_complex(self.C)

    def mix_channels(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """GELU, then the position-wise Linear(d, 2d) + GLU."""
        return F.glu(self.output(F.gelu(y).to(dtype)), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convolve(x, with_state=False)[0]

    def prefill(self, x: torch.Tensor):
        return self.convolve(x, with_state=True)

    def convolve(self, x: torch.Tensor, with_state: bool):
        """Parallel form over ``(B, T, H)``: outputs, and (if asked) the state after the last position."""
        T = x.shape[1]
        dtA, B_bar, C = self.discretise()
        u = x.transpose(1, 2).to(dtA.real.dtype)  # (B, H, T)
        # powers[h, n, j] = Ā^j = exp(Re(dt·A)·j)·e^{i·Im(dt·A)·j}: accurate at any j,
        # unlike repeated multiplication (and cheaper than a complex exp)
        j = torch.arange(T, device=x.device, dtype=u.dtype)
        powers = torch.polar(torch.exp(dtA.real.unsqueeze(-1) * j), dtA.imag.unsqueeze(-1) * j)
        K = 2 * torch.einsum("hn,hnj->hj", C * B_bar, powers).real  # (H, T)
        # causal convolution: zero-padding to 2T keeps the circular FFT from wrapping around
        y = torch.fft.irfft(torch.fft.rfft(u, n=2 * T) * torch.fft.rfft(K, n=2 * T), n=2 * T)[..., :T]
        y = y + self.D.unsqueeze(-1) * u
        state = None
        if with_state:  # s_T = B̄ · Σ_l Ā^{T−1−l}·u_l = B̄ · Σ_j Ā^j·u_{T−1−j}
            state = B_bar * torch.einsum("bhj,hnj->bhn", u.flip(-1).to(powers.dtype), powers)
        return self.mix_channels(y.transpose(1, 2), x.dtype), state

    def init_state(self, batch_size: int, device, dtype):
        return torch.zeros(batch_size, self.channels, self.modes, device=device, dtype=complex_dtype(dtype))

    def step(self, x: torch.Tensor, state: torch.Tensor):
        dtA, B_bar, C = self.discretise()
        u = x.to(dtA.real.dtype)
        state = torch.exp(dtA) * state + B_bar * u.unsqueeze(-1)
        y = 2 * (C * state).sum(-1).real + self.D * u
        return self.mix_channels(y, x.dtype), state

    def state_size(self) -> int:
        return self.channels * 2 * self.modes


@ARCHITECTURES.register("s4d")
class S4D(MixerStack):
    """Diagonal S4 (Gu, Gupta, Goel & Ré 2022) with S4D-Lin initialisation. Parallel form: the
    SSM's convolution kernel applied by FFT; recurrent form: the diagonal complex state stepped
    one position at a time. The block's GELU + GLU output layer does the channel mixing (no MLP)."""

    Options = S4DOptions
    mlp = False
    test_options = ({}, {"state_size": 8})

    def make_mixer(self, d: int, options: S4DOptions) -> Mixer:
        return S4DMixer(d, options)
