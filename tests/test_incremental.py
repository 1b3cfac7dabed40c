"""Incremental decoding: for every causal backbone, stepping one position at a time (from the
empty state or after a prefilled prefix) gives exactly what the full forward pass gives."""
import pytest
import torch

from architectures.base import select_state
from tests.test_backbones import D, build, variants

CAUSAL = [p for p in variants() if not p.values[1]["bidirectional"]]
BIDIRECTIONAL = [p for p in variants() if p.values[1]["bidirectional"]]
T = 11


def full_forward(model, x):
    return model(x, torch.ones(x.shape[:2], dtype=torch.bool))


@pytest.mark.parametrize("length", [1, T, 70])
@pytest.mark.parametrize("name,options", CAUSAL)
def test_stepping_from_empty_state_equals_forward(name, options, length):
    """The recurrent form (one position at a time) equals the parallel form (the forward pass:
    scan, FFT convolution, chunked or masked product) in float32, at lengths that are not powers
    of two and that end inside a chunk."""
    model = build(name, options)
    x = torch.randn(3, length, D)
    with torch.no_grad():
        expected = full_forward(model, x)
        state = model.init_state(3, x.device, x.dtype)
        steps = []
        for t in range(length):
            y, state = model.step(x[:, t], state)
            steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,options", CAUSAL)
def test_prefill_then_steps_equals_forward(name, options):
    model = build(name, options)
    x = torch.randn(2, T, D)
    with torch.no_grad():
        expected = full_forward(model, x)
        head, state = model.prefill(x[:, :7])
        torch.testing.assert_close(head, expected[:, :7], atol=1e-5, rtol=1e-5)
        for t in range(7, T):
            y, state = model.step(x[:, t], state)
            torch.testing.assert_close(y, expected[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,options", CAUSAL)
def test_reordered_state_follows_its_rows(name, options):
    """After select_state, row i continues the sequence of the row it was taken from."""
    model = build(name, options)
    x = torch.randn(3, T, D)
    order = torch.tensor([2, 0, 0])
    with torch.no_grad():
        expected = full_forward(model, x[order])
        _, state = model.prefill(x[:, :5])
        state = select_state(state, order)
        y, _ = model.step(x[order, 5], state)
    torch.testing.assert_close(y, expected[:, 5], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,options", BIDIRECTIONAL)
def test_bidirectional_backbones_refuse_to_step(name, options):
    model = build(name, options)
    with pytest.raises(ValueError, match="causal"):
        model.init_state(1, "cpu", torch.float32)
    with pytest.raises(ValueError, match="causal"):
        model.prefill(torch.randn(1, 3, D))


@pytest.mark.parametrize("name,options", list(variants()))
def test_no_mask_means_no_padding(name, options):
    model = build(name, options)
    x = torch.randn(2, T, D)
    with torch.no_grad():
        torch.testing.assert_close(model(x, None), full_forward(model, x))
