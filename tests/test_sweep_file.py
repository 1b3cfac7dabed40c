"""Sweep files: validation with clear errors, expansion identical to `harness run`, dry run, resume."""
from pathlib import Path

import pytest

from harness.cli import main
from harness.store import RunStore
from harness.sweep import expand, expand_sweep, load_sweep_file
from tests.conftest import ROOT, TINY_TRAIN


def write(tmp_path, text) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_expansion_counts_and_ids_match_the_command_line(tmp_path):
    path = write(tmp_path, """
archs: [lstm, transformer]
tasks: [lm, extrapolation]
sizes: [tiny, small]
seeds: [0, 1]
baseline: {lr: 0.002}
changes: {weight_decay: [0.0, 0.1], position: [rope, alibi]}
""")
    configs = expand_sweep(load_sweep_file(path), device="cpu")
    # per size and seed: lstm 2 decays × (lm + 3 probes); transformer 2 decays × 2 positions × 4
    assert len(configs) == 2 * 2 * (2 * 4 + 2 * 2 * 4)
    assert len({c.run_id for c in configs}) == len(configs)
    same = expand(["lstm", "transformer"], ["lm", "extrapolation"], size="small", seeds=[1], device="cpu",
                  overrides={"lr": [0.002], "weight_decay": [0.0, 0.1], "position": ["rope", "alibi"]})
    assert {c.run_id for c in same} <= {c.run_id for c in configs}
    assert all(c.train.lr == 0.002 for c in configs)


@pytest.mark.parametrize("text,message", [
    ("archs: [lstm\ntasks: [lm]\n", r"sweep\.yaml:\d+: not valid YAML"),
    ("- lstm\n", "a sweep file is a mapping"),
    ("archs: [lstm]\ntasks: [lm]\nseed: [1]\n", "seed\n  Extra inputs are not permitted"),
    ("archs: [lstm]\ntasks: [lm]\nbaseline: {lr: 0.1}\nchanges: {lr: [0.2]}\n", "in both baseline and changes: lr"),
    ("archs: [lstm]\ntasks: [lm]\nchanges: {lr: []}\n", "changes without values: lr"),
    ("archs: [lstn]\ntasks: [lm]\n", "did you mean 'lstm'"),
    ("archs: [lstm]\ntasks: [lm]\nchanges: {lrr: [0.1]}\n", "unknown setting 'lrr'; did you mean 'lr'"),
])
def test_bad_sweep_files_exit_2_naming_the_problem(tmp_path, capsys, text, message):
    import re

    assert main(["sweep", str(write(tmp_path, text)), "--results", str(tmp_path / "r"), "--dry-run"]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_committed_sweep_files_are_valid_and_dry_run(tmp_path, capsys):
    expected = {  # what the known studies plan
        "positions_extrapolation.yaml": "15 runs, 0 already finished, 15 to run",  # 5 position schemes × 3 probes
        # 5 backbones × 9 task variants (lm, agreement, agreement_lm, 3 extrapolation probes, figqa,
        # wsc273, blimp_agreement) × 3 seeds
        "study_cpu/study.yaml": "135 runs, 0 already finished, 135 to run",
        # 15 backbones × 4 settings × 4 widths × 4 rates; on the CPU 15 × 2 widths × 3 rates
        "mqar_zoology.yaml": "960 runs, 0 already finished, 960 to run",
        "study_synthetic/mqar.yaml": "90 runs, 0 already finished, 90 to run",
        # 6 backbones × 4 depths × 3 groups × 19 lengths × 3 rates; on the CPU 4 × 3 depths × 2 groups
        "word_problem_protocol.yaml": "4104 runs, 0 already finished, 4104 to run",
        "study_state_tracking/word_problem.yaml": "24 runs, 0 already finished, 24 to run",
        "study_synthetic/agreement_nested.yaml": "30 runs, 0 already finished, 30 to run",  # 5 × 2 grammars × 3 seeds
        "study_synthetic/mqar_width.yaml": "90 runs, 0 already finished, 90 to run",  # 15 × 2 widths × 3 rates
        "study_synthetic/chomsky.yaml": "135 runs, 0 already finished, 135 to run",  # 15 × 3 tasks × 3 seeds
        "study_synthetic/mad.yaml": "180 runs, 0 already finished, 180 to run",  # 15 × 6 tasks × 2 rates
        "study_synthetic/mad_transformer_steps.yaml": "3 runs, 0 already finished, 3 to run",
        "study_synthetic/mad_short_conv.yaml": "8 runs, 0 already finished, 8 to run",  # 2 × 2 tasks × 2 kernels
        # 15 backbones × 6 numbers of training automata × 2 rates × 3 seeds; on the CPU 6 × 2 numbers
        "regbench_protocol.yaml": "540 runs, 0 already finished, 540 to run",
        "study_state_tracking/regbench.yaml": "12 runs, 0 already finished, 12 to run",
        # 6 settings (mamba, deltanet × 2 eigenvalue ranges; lstm, transformer) × 3 tasks × 3 rates × 3 seeds;
        # on the CPU 6 settings × 2 tasks
        "eigenvalues_protocol.yaml": "162 runs, 0 already finished, 162 to run",
        "study_state_tracking/parity_eigenvalues.yaml": "12 runs, 0 already finished, 12 to run",
    }
    files = sorted((ROOT / "results").rglob("*.yaml"))  # every study, in its own folder or not
    names = [path.relative_to(ROOT / "results").as_posix() for path in files]
    assert set(expected) <= set(names), names
    for path, name in zip(files, names):
        assert main(["sweep", str(path), "--results", str(tmp_path), "--dry-run", "--device", "cpu"]) == 0, name
        out = capsys.readouterr().out
        if name in expected:
            assert expected[name] in out, name
        if name == "positions_extrapolation.yaml":
            assert "transformer[position=alibi]" in out and "extrapolation/recall" in out


def test_mqar_width_study_reuses_the_learning_rate_studys_width_64_runs():
    """mqar_width.yaml's width-64 half is mqar_lr.yaml's runs at the same rates: same run ids, so the
    learning-rate study's records count as finished and only width 128 trains."""
    width = expand_sweep(load_sweep_file(ROOT / "results/study_synthetic/mqar_width.yaml"), "cpu")
    lr = expand_sweep(load_sweep_file(ROOT / "results/study_state_tracking/mqar_lr.yaml"), "cpu")
    at_64 = {c.run_id for c in width if c.size == "d64"}
    assert len(at_64) == 45 and at_64 <= {c.run_id for c in lr}
    assert {c.train.lr for c in width} == {0.001, 0.003, 0.01}
    assert {c.size for c in width} == {"d64", "d128"}


def test_sweep_runs_then_resumes_without_training(tmp_path, data_dir, capsys):
    train = "\n".join(f"  {k}: {v}" for k, v in TINY_TRAIN.items())
    path = write(tmp_path, f"""
archs: [gru]
tasks: [extrapolation]
seeds: [0]
device: cpu
baseline:
{train}
  seq_len: 8
  n_train: 300
  n_test_per_cell: 4
changes:
  probe: [parity, dyck]
""")
    store = tmp_path / "r"
    args = ["sweep", str(path), "--results", str(store), "--data-dir", str(data_dir), "--no-progress"]
    assert main(args) == 0
    assert "ran: 2 finished" in capsys.readouterr().out
    assert len(RunStore(store).runs()) == 2
    assert main(args + ["--dry-run"]) == 0
    assert "2 runs, 2 already finished, 0 to run" in capsys.readouterr().out
    assert main(args) == 0
    assert "ran: nothing; already recorded: 2" in capsys.readouterr().out
