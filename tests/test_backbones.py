"""Every registered backbone, in every direction it supports: shape, padding invariance,
causality (or its absence), and the receptive field it reports."""
import copy

import pytest
import torch

from architectures.mixer import MixerStack, reverse_real
from harness.core.registry import ARCHITECTURES

D, LAYERS = 16, 2


def variants():
    for name in ARCHITECTURES.names():
        cls = ARCHITECTURES.get(name)
        for bidirectional in ([False, True] if cls.supports_bidirectional else [False]):
            for opts in cls.test_options:
                label = ",".join([name, "bi" if bidirectional else "causal",
                                  *(f"{k}={v}" for k, v in opts.items())])
                yield pytest.param(name, {"bidirectional": bidirectional, **opts}, id=label)


def build(name, options):
    torch.manual_seed(0)
    cls = ARCHITECTURES.get(name)
    return cls(D, LAYERS, cls.Options(**options)).eval()


@pytest.mark.parametrize("name,options", list(variants()))
def test_shape_and_finite(name, options):
    model = build(name, options)
    x = torch.randn(3, 9, D)
    mask = torch.tensor([[True] * 9, [True] * 5 + [False] * 4, [True] + [False] * 8])
    y = model(x, mask)
    assert y.shape == (3, 9, D)
    assert torch.isfinite(y[mask]).all()


@pytest.mark.parametrize("name,options", list(variants()))
def test_padding_does_not_change_real_positions(name, options):
    model = build(name, options)
    torch.manual_seed(1)
    x = torch.randn(2, 7, D)
    alone = model(x, torch.ones(2, 7, dtype=torch.bool))
    padded = torch.cat([x, torch.randn(2, 5, D) * 10], dim=1)  # loud padding, must be ignored
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[:, :7] = True
    together = model(padded, mask)
    torch.testing.assert_close(together[:, :7], alone, atol=1e-5, rtol=1e-4)
    # a shorter neighbour in the same batch does not matter either
    mixed = torch.stack([padded[0], torch.cat([x[1, :3], torch.randn(9, D)])])
    mixed_mask = mask.clone()
    mixed_mask[1, 3:] = False
    out = model(mixed, mixed_mask)
    torch.testing.assert_close(out[0, :7], alone[0], atol=1e-5, rtol=1e-4)
    short = model(x[1:, :3], torch.ones(1, 3, dtype=torch.bool))
    torch.testing.assert_close(out[1, :3], short[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name,options", list(variants()))
def test_causality(name, options):
    model = build(name, options)
    torch.manual_seed(2)
    x = torch.randn(2, 10, D)
    mask = torch.ones(2, 10, dtype=torch.bool)
    t = 4
    changed = x.clone()
    changed[:, t + 1:] = torch.randn(2, 10 - t - 1, D)
    a, b = model(x, mask), model(changed, mask)
    if options["bidirectional"]:
        assert not torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-5), "bidirectional must see the future"
    else:
        torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], atol=1e-6, rtol=1e-5)
        assert not torch.allclose(a[:, t + 1:], b[:, t + 1:], atol=1e-5)


@pytest.mark.parametrize("name,options", list(variants()))
def test_layer_states_are_each_layer_and_end_in_the_output(name, options):
    """What the probes read: one state per layer, the last the output; in a causal backbone no
    layer's state at a position depends on later inputs, and the layers differ from each other."""
    model = build(name, options)
    torch.manual_seed(3)
    x = torch.randn(2, 8, D)
    mask = torch.tensor([[True] * 8, [True] * 5 + [False] * 3])
    layers = model.layer_states(x, mask)
    assert len(layers) == LAYERS
    assert all(h.shape[:2] == (2, 8) for h in layers)
    torch.testing.assert_close(layers[-1][mask], model(x, mask)[mask])
    assert not torch.allclose(layers[0][mask], layers[-1][mask], atol=1e-4), "the first layer is not the last"
    if hasattr(model, "blocks"):  # the first layer is what a one-block stack without its final norm gives
        first = copy.deepcopy(model)
        first.blocks = torch.nn.ModuleList(first.blocks[:1])
        first.norm = torch.nn.Identity()
        torch.testing.assert_close(layers[0][mask], first(x, mask)[mask])
    if not options["bidirectional"]:
        changed = x.clone()
        changed[:, 4:] = torch.randn(2, 4, D)
        for a, b in zip(layers, model.layer_states(changed, mask)):
            torch.testing.assert_close(a[:, :4], b[:, :4], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kernel,growth", [(3, 2), (2, 1), (5, 3)])
def test_cnn_receptive_field_is_exact(kernel, growth):
    model = build("cnn", {"kernel_size": kernel, "dilation_growth": growth})
    rf = model.receptive_field()
    assert rf == 1 + (kernel - 1) * sum(growth ** i for i in range(LAYERS))
    T = rf + 4
    x = torch.randn(1, T, D)
    mask = torch.ones(1, T, dtype=torch.bool)
    base = model(x, mask)[0, -1]
    inside, outside = x.clone(), x.clone()
    inside[0, T - rf] += torch.randn(D)  # the oldest position it can see
    outside[0, T - rf - 1] += torch.randn(D)  # one further back
    assert not torch.allclose(model(inside, mask)[0, -1], base)
    torch.testing.assert_close(model(outside, mask)[0, -1], base)


def test_learned_positions_refuse_longer_sequences():
    model = build("transformer", {"position": "learned", "max_positions": 8})
    with pytest.raises(ValueError, match="max_positions=8"):
        model(torch.randn(1, 9, D), torch.ones(1, 9, dtype=torch.bool))


def test_alibi_slopes_follow_press_et_al():
    from architectures.transformer import alibi_slopes

    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2 ** -(i + 1) for i in range(8)]))
    assert len(alibi_slopes(6)) == 6 and (alibi_slopes(6) > 0).all()


def test_recurrent_state_size():
    lstm = build("lstm", {"bidirectional": True})
    assert lstm.state_size_per_token() == 2 * (D // 2) * LAYERS * 2
    assert build("gru", {}).state_size_per_token() == D * LAYERS
    assert build("transformer", {}).state_size_per_token() is None


MIXERS = [n for n in ARCHITECTURES.names() if issubclass(ARCHITECTURES.get(n), MixerStack)]


@pytest.mark.parametrize("name", MIXERS)
def test_mixers_keep_float32_under_bfloat16_autocast(name):
    """The scans and state products run in float32 whatever autocast asks for: the decoding state
    comes out float32, and the outputs are those of a float32 run to bfloat16 precision."""
    model = build(name, {})
    x = torch.randn(2, 9, D)
    with torch.no_grad():
        exact = model(x, None)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x, None)
            _, state = model.prefill(x)
    floats = [t for t in _tensors(state) if t.is_floating_point() or t.is_complex()]
    assert floats and all(t.dtype in (torch.float32, torch.complex64) for t in floats)
    torch.testing.assert_close(y.float(), exact, atol=0.1, rtol=0.05)


def _tensors(state):
    if isinstance(state, torch.Tensor):
        return [state]
    items = state.values() if isinstance(state, dict) else state if isinstance(state, (list, tuple)) else []
    return [t for item in items for t in _tensors(item)]


def test_reverse_real_reverses_each_row_and_leaves_padding():
    x = torch.arange(2 * 5, dtype=torch.float32).view(2, 5, 1)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out = reverse_real(x, mask)[..., 0]
    assert out.tolist() == [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]]
    torch.testing.assert_close(reverse_real(reverse_real(x, mask), mask), x)
