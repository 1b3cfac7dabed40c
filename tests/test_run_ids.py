"""Run ids never change: the ids below were computed before the contract layer, task kinds and
metric specs existed, and every committed study's store is keyed by them. The deliberate changes,
both to mt's smoke budget, whose runs no committed store held: 600 steps of 64 sentence pairs -> 400
of 64 -> 400 of 32."""
from pathlib import Path

import pytest

from harness.core.registry import ARCHITECTURES, TASKS
from harness.sweep import expand, expand_sweep, load_sweep_file
from tests.conftest import ROOT

FIXTURES = Path(__file__).parent / "fixtures"


def _rows() -> set[str]:
    rows = set()
    tasks = [t for t in TASKS.names() if t != "minimal_pairs" and not t.startswith("plugin_")]
    for budget in ("smoke", "full"):
        for size in ("tiny", "small"):
            for cfg in expand(ARCHITECTURES.names(), tasks, size=size, seeds=[0, 1], budget=budget):
                rows.add(f"{cfg.run_id} {budget} {cfg.arch} {cfg.task_label} {cfg.size} {cfg.seed}")
    for cfg in expand(["lstm", "transformer"], ["minimal_pairs"], overrides={"path": ["/data/pairs.jsonl"]}):
        rows.add(f"{cfg.run_id} smoke {cfg.arch} {cfg.task_label} {cfg.size} {cfg.seed} path=/data/pairs.jsonl")
    for cfg in expand(["transformer"], ["lm", "extrapolation"],
                      overrides={"position": ["none", "rope", "alibi"], "lr": [3e-3]}):
        rows.add(f"{cfg.run_id} smoke {cfg.arch} {cfg.task_label} {cfg.size} {cfg.seed} "
                 f"position={cfg.arch_options['position']} lr=0.003")
    for cfg in expand(["lstm", "gru"], ["ner", "mt"], overrides={"bidirectional": [False]}):
        rows.add(f"{cfg.run_id} smoke {cfg.arch} {cfg.task_label} {cfg.size} {cfg.seed} bidirectional=false")
    return rows


def test_run_ids_of_every_built_in_task_and_backbone_are_unchanged():
    frozen = set((FIXTURES / "run_ids.txt").read_text().splitlines())
    now = _rows()
    # a task or backbone added since the ids were frozen brings new ids; none may change
    assert frozen - now == set()


@pytest.mark.parametrize("sweep", ["positions_extrapolation", "study_cpu_study"])
def test_committed_sweep_files_expand_to_their_frozen_run_ids(sweep):
    path = {"positions_extrapolation": ROOT / "results" / "positions_extrapolation.yaml",
            "study_cpu_study": ROOT / "results" / "study_cpu" / "study.yaml"}[sweep]
    configs = expand_sweep(load_sweep_file(path), "cpu")
    rows = {f"{c.run_id} {c.arch} {c.task_label} {c.size} {c.seed}" for c in configs}
    assert rows == set((FIXTURES / f"run_ids_{sweep}.txt").read_text().splitlines())


#: each committed study's sweep file, its store, and how many of its runs the store holds finished
#: (all of them unless the study's README says the sweep was stopped)
COMMITTED_STORES = [
    ("study_mixers/study.yaml", "study_mixers/store", 225),
    ("study_probes/probes.yaml", "study_probes/store", 120),
    ("study_probes/probes_mixers.yaml", "study_probes/store", 150),
    ("study_probes/probes_positions.yaml", "study_probes/store", 30),
    ("study_state_tracking/mqar_lr.yaml", "study_state_tracking/store", 75),
    ("study_state_tracking/mqar_lr_seed1.yaml", "study_state_tracking/store", 20),
    ("study_state_tracking/parity_eigenvalues.yaml", "study_state_tracking/store", 12),
    ("study_state_tracking/regbench.yaml", "study_state_tracking/store", 12),
    ("study_state_tracking/word_problem.yaml", "study_state_tracking/store", 24),
    ("study_synthetic/mqar_width.yaml", "study_synthetic/store", 90),
    ("study_synthetic/chomsky.yaml", "study_synthetic/store", 135),
    ("study_synthetic/mad.yaml", "study_synthetic/store", 180),
    ("study_synthetic/mad_transformer_steps.yaml", "study_synthetic/store", 3),
    ("study_synthetic/mad_short_conv.yaml", "study_synthetic/store", 8),
    ("study_synthetic/agreement_nested.yaml", "study_synthetic/store", 30),
    ("study_synthetic/mqar.yaml", "study_synthetic/store_vocab8192", 26),  # stopped: nothing learned
    ("study_lm_cpu/lr_grid.yaml", "study_lm_cpu/store", 4),  # stage 1 of its plan, four runs so far
]


@pytest.mark.parametrize("sweep,store,finished", COMMITTED_STORES, ids=[s for s, _, _ in COMMITTED_STORES])
def test_committed_stores_hold_their_sweep_files_runs(sweep, store, finished):
    """A committed study stays valid only while its sweep file still expands to the run ids its
    store is keyed by: a changed id would make `harness sweep` retrain every run."""
    import contextlib
    import sqlite3

    planned = {c.run_id for c in expand_sweep(load_sweep_file(ROOT / "results" / sweep), "cpu")}
    # immutable: read the committed file without writing a journal beside it
    path = (ROOT / "results" / store / "runs.sqlite").as_uri() + "?immutable=1"
    with contextlib.closing(sqlite3.connect(path, uri=True)) as db:
        done = {r for (r,) in db.execute("SELECT run_id FROM runs WHERE status = 'finished'")}
    assert len(planned & done) == finished
