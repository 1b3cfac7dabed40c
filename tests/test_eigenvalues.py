"""The ``eigenvalues`` option of the mixers with an input-dependent transition gate (Grazzi et al.
2025, "Unlocking state-tracking in linear RNNs through negative eigenvalues"): ``positive`` (the
default, each family as published) keeps transitions in [0, 1], ``signed`` stretches them to
[−1, 1]. Checked: the range, that ``transitions`` reports what the recurrent step applies, that the
parallel forms equal the recurrent one (outputs, final state, gradients) with strongly negative
transitions at lengths that are not powers of two, and that the default changed nothing."""
import json

import pandas as pd
import pydantic
import pytest
import torch

from harness.core.registry import ARCHITECTURES
from harness.rows import row_labels
from harness.sweep import expand

D, LAYERS = 16, 2
#: (family, options) with an ``eigenvalues`` option
FAMILIES = [("mamba", {}), ("mamba2", {}), ("deltanet", {}), ("deltanet", {"gated": True}), ("mingru", {}),
            ("minlstm", {})]
IDS = ["mamba", "mamba2", "deltanet", "gated_deltanet", "mingru", "minlstm"]


def build(name, options, d=D):
    torch.manual_seed(0)
    cls = ARCHITECTURES.get(name)
    return cls(d, LAYERS, cls.Options(**options)).eval()


def push_negative(model):
    """Parameters that put most transitions near −1 when signed (near 0 when positive): a large
    step Δ for Mamba and Mamba-2, β → 2 (α → 1 when gated) for DeltaNet, z → 1 for minGRU,
    f → 0 and i → 1 for minLSTM."""
    with torch.no_grad():
        for block in model.blocks:
            m = block.mixer
            if hasattr(m, "dt_proj"):  # Mamba: Δ = softplus(dt_proj(·)) around 2
                m.dt_proj.bias.fill_(2.0)
            elif hasattr(m, "dt_bias"):  # Mamba-2
                m.dt_bias.fill_(2.0)
            elif hasattr(m, "n_gates"):  # minGRU: (k_z, k_h); minLSTM: (k_f, k_i, k_h)
                gates = m.in_proj.bias.view(m.n_gates, m.hidden)
                gates[0].fill_(6.0 if m.n_gates == 2 else -6.0)
                if m.n_gates == 3:
                    gates[1].fill_(6.0)
            else:  # DeltaNet: β = 2σ(≈ 6) ≈ 1.995
                m.beta_proj.bias.fill_(6.0)
                if m.gated:
                    m.decay_proj.bias.fill_(-8.0)  # softplus ≈ 3e-4: α close to 1
    return model


@pytest.mark.parametrize("name", ["mamba", "mamba2", "deltanet", "mingru", "minlstm"])
def test_option_is_spelt_positive_or_signed_and_defaults_to_positive(name):
    Options = ARCHITECTURES.get(name).Options
    assert Options().eigenvalues == "positive"
    assert Options(eigenvalues="signed").eigenvalues == "signed"
    with pytest.raises(pydantic.ValidationError):
        Options(eigenvalues="[-1,1]")


@pytest.mark.parametrize("name,options", FAMILIES, ids=IDS)
@pytest.mark.parametrize("eigenvalues", ["positive", "signed"])
def test_transitions_stay_in_their_range(name, options, eigenvalues):
    """Sampled over random inputs at several scales: within [0, 1] or [−1, 1]; negative ones occur
    only when signed (at initialisation already, and with the negative-pushing parameters).
    (minLSTM's step computes f/(f + i), which is 0/0 once both sigmoids underflow, at
    pre-activations below about −100: it is sampled at smaller scales.)"""
    scales = (0.1, 1.0, 10.0) if name == "minlstm" else (0.1, 1.0, 10.0, 100.0)
    for model in (build(name, {**options, "eigenvalues": eigenvalues}),
                  push_negative(build(name, {**options, "eigenvalues": eigenvalues}))):
        torch.manual_seed(3)
        with torch.no_grad():
            values = torch.cat([block.mixer.transitions(torch.randn(4, 23, D) * scale).flatten()
                                for block in model.blocks for scale in scales])
        assert torch.isfinite(values).all()
        assert values.max() <= 1.0
        if eigenvalues == "positive":
            assert values.min() >= 0.0
        else:
            assert values.min() >= -1.0
            assert values.min() < -0.1 and (values < 0).float().mean() > 0.01


@pytest.mark.parametrize("name,options", FAMILIES, ids=IDS)
@pytest.mark.parametrize("eigenvalues", ["positive", "signed"])
def test_transitions_are_what_the_recurrent_step_applies(name, options, eigenvalues):
    """The step is affine in the state: step(state = E) − step(state = 0) is the transition applied
    to E. Diagonal families: E of ones gives the diagonal; DeltaNet: E = I gives the matrix
    α(I − βkkᵀ), whose eigenvalues are α(1 − β) and α."""
    mixer = build(name, {**options, "eigenvalues": eigenvalues}).blocks[0].mixer
    torch.manual_seed(4)
    x = torch.randn(3, D) * 3
    with torch.no_grad():
        reported = mixer.transitions(x.unsqueeze(1))[:, 0]  # the first position: empty conv buffer
        zero = mixer.init_state(3, x.device, x.dtype)
        if name == "deltanet":
            eye = torch.eye(mixer.head_dim).expand_as(zero["S"])
            applied = mixer.step(x, {**zero, "S": eye})[1]["S"] - mixer.step(x, zero)[1]["S"]
            eigen = torch.linalg.eigvalsh((applied + applied.transpose(-1, -2)) / 2)  # (B, H, d_h)
            torch.testing.assert_close(applied, applied.transpose(-1, -2), atol=1e-6, rtol=0)
            along_k = (eigen - reported.unsqueeze(-1)).abs().min(-1).values
            assert along_k.max() < 1e-5  # α(1 − β) is an eigenvalue of the applied transition
        elif name in ("mingru", "minlstm"):
            applied = mixer.step(x, torch.ones_like(zero))[1] - mixer.step(x, zero)[1]
            torch.testing.assert_close(applied, reported, atol=1e-6, rtol=1e-6)
        else:
            conv, h = zero
            applied = mixer.step(x, (conv, torch.ones_like(h)))[1][1] - mixer.step(x, zero)[1][1]
            torch.testing.assert_close(applied, reported.expand_as(applied) if name == "mamba"
                                       else reported[..., None, None].expand_as(applied), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("chunk", [None, 8])
@pytest.mark.parametrize("length", [37, 100])
@pytest.mark.parametrize("name,options", FAMILIES, ids=IDS)
def test_parallel_equals_recurrent_with_negative_transitions(name, options, length, chunk):
    """With most transitions near −1 (states flip sign every step and barely decay), at lengths
    that are not powers of two and end inside a chunk: the parallel form's outputs and final
    states equal the recurrent form's.

    Errors do not decay away when |transition| ≈ 1, so both forms drift further from the exact
    result than with positive transitions; DeltaNet's WY form at its default chunk of 64 drifts
    most (its triangular solve, entries β·kᵀk up to 2: against a float64 recurrence, about 1e-4
    at chunk 64, 2e-5 at chunk 8, 1e-5 for the float32 recurrence), hence its looser tolerance."""
    opts = {**options, "eigenvalues": "signed", **({"chunk": chunk} if chunk else {})}
    model = push_negative(build(name, opts))
    torch.manual_seed(5)
    x = torch.randn(2, length, D)
    with torch.no_grad():
        values = model.blocks[0].mixer.transitions(model.blocks[0].norm1(x))
        assert (values < -0.9).float().mean() > 0.3, "the test should exercise strongly negative transitions"
        parallel = model(x, None)
        prefilled, final = model.prefill(x)
        state = model.init_state(2, x.device, x.dtype)
        steps = []
        for t in range(length):
            y, state = model.step(x[:, t], state)
            steps.append(y)
    tol = 5e-4 if name == "deltanet" and chunk is None else 1e-4
    torch.testing.assert_close(torch.stack(steps, 1), parallel, atol=tol, rtol=tol)
    torch.testing.assert_close(prefilled, parallel)
    for a, b in zip(_tensors(final), _tensors(state)):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


@pytest.mark.parametrize("name,options", FAMILIES, ids=IDS)
def test_gradients_of_the_parallel_form_equal_the_recurrent_ones_when_signed(name, options):
    """The scan's hand-written backward (Mamba, Mamba-2, signed minGRU/minLSTM) and the WY form's
    (DeltaNet) with negative transitions give the gradients autograd finds through the recurrent
    steps."""
    model = push_negative(build(name, {**options, "eigenvalues": "signed", "chunk": 8}))
    torch.manual_seed(6)
    x = torch.randn(2, 21, D)
    weights = torch.randn(2, 21, D)

    def grads(outputs):
        model.zero_grad()
        (outputs * weights).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    parallel = grads(model(x, None))
    state, steps = model.init_state(2, x.device, x.dtype), []
    for t in range(x.shape[1]):
        y, state = model.step(x[:, t], state)
        steps.append(y)
    recurrent = grads(torch.stack(steps, 1))
    assert parallel.keys() == recurrent.keys()
    for n in parallel:  # gradients reach hundreds: compare against each one's largest entry
        scale = recurrent[n].abs().max().item()
        assert (parallel[n] - recurrent[n]).abs().max() <= 2e-4 * scale + 1e-6, n


#: non-embedding parameters at width 16, 2 layers, before the option existed
PARAMETERS = {"mamba": 6816, "mamba2": 4972, "deltanet": 7024, "gated_deltanet": 7680, "mingru": 6048,
              "minlstm": 6592}


@pytest.mark.parametrize("name,options", FAMILIES, ids=IDS)
def test_the_default_is_unchanged(name, options):
    """The default and an explicit "positive" build the same parameters from the same seed (the
    option draws nothing) and compute the same outputs bit for bit; "signed" has the same
    parameters, initialised alike, and changes the outputs."""
    implicit, explicit = build(name, options), build(name, {**options, "eigenvalues": "positive"})
    signed = build(name, {**options, "eigenvalues": "signed"})
    assert implicit.num_parameters() == signed.num_parameters() == PARAMETERS[IDS[FAMILIES.index((name, options))]]
    for other in (explicit, signed):
        a, b = implicit.state_dict(), other.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(7)
    x = torch.randn(2, 19, D)
    mask = torch.ones(2, 19, dtype=torch.bool)
    mask[1, 12:] = False
    with torch.no_grad():
        assert torch.equal(implicit(x, mask), explicit(x, mask))
        assert not torch.allclose(implicit(x, mask), signed(x, mask))


#: run ids computed before the option existed (chomsky/parity_check, tiny, smoke, seed 0)
FROZEN_IDS = {"mamba": "9bf4e54f3d12b6e1", "mamba2": "53e6a0614ca47620", "deltanet": "eb41e6b25bdda12c",
              "gated_deltanet": "9817af6ea6713510", "mingru": "b610482242f38220", "minlstm": "ba7e73e096b2f368"}


@pytest.mark.parametrize("name,options", FAMILIES, ids=IDS)
def test_run_ids_are_unchanged_and_signed_runs_are_new(name, options):
    """The option enters a run's stored config and id only when set to "signed": default runs keep
    their ids (an explicit "positive" is the same run); signed runs get their own id and label."""
    overrides = {"name": ["parity_check"], **{k: [v] for k, v in options.items()}}
    default, = expand([name], ["chomsky"], overrides=overrides)
    positive, signed = expand([name], ["chomsky"], overrides={**overrides, "eigenvalues": ["positive", "signed"]})
    assert default.run_id == positive.run_id == FROZEN_IDS[IDS[FAMILIES.index((name, options))]]
    assert "eigenvalues" not in default.arch_options
    assert signed.run_id != default.run_id and signed.arch_options["eigenvalues"] == "signed"
    assert "eigenvalues=signed" in signed.label and "eigenvalues" not in default.label
    # table rows: the default run reads as eigenvalues=positive beside a signed one
    runs = pd.DataFrame({"run_id": [c.run_id for c in (default, signed)],
                         "config": [c.model_dump_json() for c in (default, signed)],
                         "label": [c.label for c in (default, signed)]})
    labels = row_labels(runs)
    assert "eigenvalues=positive" in labels[default.run_id] and "eigenvalues=signed" in labels[signed.run_id]
    assert json.loads(default.model_dump_json())["arch_options"] == default.arch_options


def _tensors(state):
    if isinstance(state, torch.Tensor):
        return [state]
    items = state.values() if isinstance(state, dict) else state if isinstance(state, (list, tuple)) else []
    return [t for item in items for t in _tensors(item)]
