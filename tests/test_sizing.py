import pytest

from architectures.sizing import MATCHED, PRESETS, TOLERANCE, build_backbone, count_parameters, parse_options
from harness.core.registry import ARCHITECTURES, UnknownName


def cases():
    for name in ARCHITECTURES.names():
        for size in MATCHED:
            for bidirectional in ([False, True] if ARCHITECTURES.get(name).supports_bidirectional else [False]):
                yield pytest.param(name, size, bidirectional, id=f"{name}-{size}-{'bi' if bidirectional else 'causal'}")


@pytest.mark.parametrize("name,size,bidirectional", list(cases()))
def test_every_preset_lands_within_tolerance(name, size, bidirectional):
    cls, options = parse_options(name, {"bidirectional": bidirectional})
    preset = PRESETS[size]
    d, options = cls.sized(preset.target_params, preset.n_layers, options)
    count = count_parameters(cls, d, preset.n_layers, options)
    assert abs(count / preset.target_params - 1) <= TOLERANCE, (d, count)


def test_built_backbone_reports_its_exact_count():
    backbone = build_backbone("transformer", "tiny", {"position": "learned"})
    table = backbone.position_table.weight.numel()
    assert backbone.num_parameters() == sum(p.numel() for p in backbone.parameters()) - table
    assert abs(backbone.num_parameters() / PRESETS["tiny"].target_params - 1) <= TOLERANCE


def test_same_preset_means_same_budget_across_families():
    counts = [build_backbone(a, "tiny").num_parameters() for a in ARCHITECTURES.names()]
    assert max(counts) / min(counts) <= (1 + TOLERANCE) / (1 - TOLERANCE)


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_width_presets_give_every_backbone_the_same_width(name):
    backbone = build_backbone(name, "d64")
    assert backbone.d_model == 64 and backbone.n_layers == 2
    assert build_backbone(name, "d128").num_parameters() > backbone.num_parameters()


def test_any_width_and_depth_by_name():
    backbone = build_backbone("lstm", "d32x3")
    assert (backbone.d_model, backbone.n_layers) == (32, 3)
    with pytest.raises(UnknownName, match=r"unknown size preset 'd32y3' \(known: .*d<width>x<layers>"):
        build_backbone("lstm", "d32y3")


def test_a_width_the_family_cannot_take_is_refused():
    with pytest.raises(ValueError, match="size d64: transformer with these options needs a width that is "
                                         "a multiple of 6; 64 is not"):
        build_backbone("transformer", "d64", {"n_heads": 3})
    assert "d64" not in MATCHED and "tiny" in MATCHED


def test_unknown_preset_and_bad_option():
    with pytest.raises(UnknownName, match="did you mean 'small'"):
        build_backbone("lstm", "smal")
    with pytest.raises(ValueError, match="kernel_size"):
        build_backbone("cnn", "tiny", {"kernel_size": 0})
    with pytest.raises(ValueError, match="position"):
        build_backbone("transformer", "tiny", {"position": "rotary"})


def test_one_command_runs_several_sizes(tmp_path, capsys):
    from tests.conftest import harness

    assert harness("run", "--arch", "lstm", "--tasks", "extrapolation", "--set", "probe=parity",
                   "--size", "d32x1,d32x2,tiny", "--results", tmp_path, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "3 runs, 0 already finished, 3 to run" in out and "d32x2" in out
