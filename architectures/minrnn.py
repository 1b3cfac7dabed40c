"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs all we needed?").

Both are gated linear recurrences ``h_t = a_t·h_{t-1} + b_t`` (elementwise, ``h_0 = 0``) whose
gates depend on the current input only, never on ``h_{t-1}``, so the whole sequence can be
computed at once by a scan:

    minGRU:   z = σ(k_z),  h̃ = g(k_h),  a = 1 − z,  b = z·h̃
    minLSTM:  f = σ(k_f),  i = σ(k_i),  h̃ = g(k_h),  a = f/(f+i),  b = i/(f+i)·h̃

with ``g(x) = x + 0.5`` for ``x ≥ 0`` and ``σ(x)`` otherwise (always positive, so ``b > 0`` and
the scan can run in log space). The parallel form is the paper's log-space scan
``h_t = exp(A_t + logcumsumexp(log b − A)_t)``, ``A = cumsum(log a)``, run chunk by chunk so that
float32 never has to cancel cumulative sums longer than one chunk.

With ``eigenvalues="signed"`` (Grazzi et al. 2025's extension of diagonal linear RNNs) the
transition is 2a − 1 ∈ (−1, 1) (minGRU: 1 − 2z; minLSTM: (f − i)/(f + i)); the log-space scan
needs a > 0 (log |2a − 1| is −∞, its gradient infinite, where it crosses zero), so the parallel
form is then the direct-multiplication scan ``architectures.mamba.linear_scan``, chunk by chunk.
"""
from __future__ import annotations

from typing import ClassVar

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from architectures.base import BackboneOptions
from architectures.mixer import Eigenvalues, Mixer, MixerStack
from harness.core.registry import ARCHITECTURES


class MinRNNOptions(BackboneOptions):
    #: hidden width of the recurrence, as a multiple of d_model
    expand: int = pydantic.Field(default=1, ge=1)
    #: positions per chunk of the parallel log-space scan (bounds float32 error at long lengths)
    chunk: int = pydantic.Field(default=64, ge=1)
    #: transition range: ``positive`` a ∈ (0, 1) (the paper's); ``signed`` 2a − 1 ∈ (−1, 1)
    eigenvalues: Eigenvalues = "positive"

    id_optional: ClassVar[tuple[str, ...]] = ("eigenvalues",)


def g(x: torch.Tensor) -> torch.Tensor:
    """The paper's positive candidate activation: x + 0.5 for x ≥ 0, σ(x) below."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: torch.Tensor) -> torch.Tensor:
    """log g(x), computed without forming g: log(x + 0.5) for x ≥ 0, −softplus(−x) below."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


def scan_work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Scans run in at least float32 (bf16 under autocast would lose the state)."""
    return torch.promote_types(dtype, torch.float32)


def log_space_scan(log_a: torch.Tensor, log_b: torch.Tensor, h: torch.Tensor, chunk: int) -> torch.Tensor:
    """All states of ``h_t = a_t·h_{t-1} + b_t`` over ``(B, T, D)``, starting from ``h`` ``(B, D)``.

    Per chunk: ``A = cumsum(log a)``, ``h_t = exp(A_t + logcumsumexp(log b − A)_t) + exp(A_t)·h_start``.
    The carried state enters linearly because it may be zero (or, in general, any sign).
    """
    states = []
    for start in range(0, log_a.shape[1], chunk):
        A = log_a[:, start:start + chunk].cumsum(1)
        inputs = torch.exp(A + torch.logcumsumexp(log_b[:, start:start + chunk] - A, dim=1))
        chunk_states = inputs + torch.exp(A) * h.unsqueeze(1)
        states.append(chunk_states)
        h = chunk_states[:, -1]
    return torch.cat(states, 1)


class MinRNNMixer(Mixer):
    """Input projection to the gate pre-activations, the linear recurrence, output projection."""

    #: pre-activations the input projection produces per hidden unit
    n_gates: int

    def __init__(self, d: int, options: MinRNNOptions):
        super().__init__()
        self.hidden = options.expand * d
        self.chunk = options.chunk
        self.eigenvalues = options.eigenvalues
        self.in_proj = nn.Linear(d, self.n_gates * self.hidden)
        self.out_proj = nn.Linear(self.hidden, d)

    def log_coefficients(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        """(log a, log b) from the pre-activations, computed stably with softplus."""
        raise NotImplementedError

    def coefficients(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        """(a, b) from the pre-activations, in linear space."""
        raise NotImplementedError

    def _preactivations(self, x: torch.Tensor) -> torch.Tensor:
        k = self.in_proj(x)
        return k.to(scan_work_dtype(k.dtype))

    def transitions(self, x: torch.Tensor) -> torch.Tensor:
        """The diagonal transitions ``a`` (``2a − 1`` when signed) the recurrence applies to ``x``
        (B, T, d): ``(B, T, hidden)``."""
        a, _ = self.coefficients(self._preactivations(x))
        return 2 * a - 1 if self.eigenvalues == "signed" else a

    def prefill(self, x: torch.Tensor):
        if self.eigenvalues == "signed":  # log space needs a > 0: multiply the transitions directly
            from architectures.mamba import linear_scan

            a, b = self.coefficients(self._preactivations(x))
            a, h, states = 2 * a - 1, b.new_zeros(x.shape[0], self.hidden), []
            for start in range(0, x.shape[1], self.chunk):
                states.append(linear_scan(a[:, start:start + self.chunk], b[:, start:start + self.chunk], h))
                h = states[-1][:, -1]
            h = torch.cat(states, 1)
            return self.out_proj(h.to(x.dtype)), h[:, -1]
        log_a, log_b = self.log_coefficients(self._preactivations(x))
        h0 = log_a.new_zeros(x.shape[0], self.hidden)
        h = log_space_scan(log_a, log_b, h0, self.chunk)
        return self.out_proj(h.to(x.dtype)), h[:, -1]

    def init_state(self, batch_size: int, device, dtype):
        return torch.zeros(batch_size, self.hidden, device=device, dtype=scan_work_dtype(dtype))

    def step(self, x: torch.Tensor, h: torch.Tensor):
        a, b = self.coefficients(self._preactivations(x))
        if self.eigenvalues == "signed":
            a = 2 * a - 1
        h = a * h + b
        return self.out_proj(h.to(x.dtype)), h

    def state_size(self) -> int:
        return self.hidden


class MinGRUMixer(MinRNNMixer):
    """``h_t = (1 − z_t)·h_{t−1} + z_t·h̃_t`` with ``z = σ(k_z)``, ``h̃ = g(k_h)``."""

    n_gates = 2

    def log_coefficients(self, k):
        k_z, k_h = k.chunk(2, dim=-1)
        # log(1 − z) = −softplus(k_z), log z = −softplus(−k_z)
        return -F.softplus(k_z), -F.softplus(-k_z) + log_g(k_h)

    def coefficients(self, k):
        k_z, k_h = k.chunk(2, dim=-1)
        return torch.sigmoid(-k_z), torch.sigmoid(k_z) * g(k_h)  # 1 − σ(k) = σ(−k)


class MinLSTMMixer(MinRNNMixer):
    """``h_t = f'_t·h_{t−1} + i'_t·h̃_t`` with ``f' = f/(f+i)``, ``i' = i/(f+i)``, ``f = σ(k_f)``,
    ``i = σ(k_i)``, ``h̃ = g(k_h)``."""

    n_gates = 3

    def log_coefficients(self, k):
        k_f, k_i, k_h = k.chunk(3, dim=-1)
        # diff = log i − log f, so log f' = −log(1 + i/f) = −softplus(diff), log i' = −softplus(−diff)
        diff = F.softplus(-k_f) - F.softplus(-k_i)
        return -F.softplus(diff), -F.softplus(-diff) + log_g(k_h)

    def coefficients(self, k):
        k_f, k_i, k_h = k.chunk(3, dim=-1)
        f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
        return f / (f + i), i / (f + i) * g(k_h)


@ARCHITECTURES.register("mingru")
class MinGRU(MixerStack):
    """minGRU (Feng et al. 2024): a GRU whose gates read only the input. Parallel form: a chunked
    log-space scan; recurrent form: ``h = (1 − z)·h + z·h̃``. Each block adds a GELU MLP.
    ``eigenvalues="signed"``: ``h = (1 − 2z)·h + z·h̃``, parallel form a direct scan."""

    Options = MinRNNOptions
    mlp = True
    test_options = ({}, {"expand": 2}, {"chunk": 8}, {"eigenvalues": "signed", "chunk": 8})

    def make_mixer(self, d: int, options: MinRNNOptions) -> Mixer:
        return MinGRUMixer(d, options)


@ARCHITECTURES.register("minlstm")
class MinLSTM(MixerStack):
    """minLSTM (Feng et al. 2024): an LSTM with input-only, normalised forget/input gates and no
    output gate. Parallel form: a chunked log-space scan; recurrent form:
    ``h = f'·h + i'·h̃``. Each block adds a GELU MLP. ``eigenvalues="signed"``:
    ``h = (2f' − 1)·h + i'·h̃``, parallel form a direct scan."""

    Options = MinRNNOptions
    mlp = True
    test_options = ({}, {"expand": 2}, {"chunk": 8}, {"eigenvalues": "signed", "chunk": 8})

    def make_mixer(self, d: int, options: MinRNNOptions) -> Mixer:
        return MinLSTMMixer(d, options)
