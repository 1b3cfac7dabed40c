"""Every metric a task reports has a spec (direction, role, unit), and tables read the direction
from it: every registered task runs end to end on a miniature copy of its data and each metric it
stores has a spec; a run storing an undeclared metric fails, naming task and metric; the ``mt``
table bolds the fastest decoder (lowest ms per token) and the best BLEU; a metric with no
direction is never bold."""
import gzip
import json
import shutil

import pytest

from harness.config import RunConfig
from harness.core.metrics import RUN_METRICS, Metric, MetricSpec, find_spec, specs
from harness.core.registry import ARCHITECTURES, TASKS
from harness.core.train_config import TrainConfig
from harness.store import FINISHED, RunStore
from harness.stats import rank_column
from harness.tables import make_table
from tests.conftest import TINY_TRAIN

#: the first lines of each file, for the datasets whose full size makes a run slow; every other
#: dataset is read from the shared folder (HARNESS_DATA_DIR)
MINI = {
    "wikitext2": {"train.txt.gz": 3000, "valid.txt.gz": 200, "test.txt.gz": 200},
    "colorlessgreen": {"linzen_testset/subj_agr_filtered.text": 60, "linzen_testset/subj_agr_filtered.gold": 60,
                       "agreement_English/generated.text": 60, "agreement_English/generated.gold": 60},
    "figqa": {"dev.csv": 41, "train_s.csv": 201},
    "conll2003": {"eng.train.gz": 1500, "eng.testa.gz": 300, "eng.testb.gz": 300},
    "multi30k": {f"raw/{split}.{lang}.gz": n for split, n in (("train", 300), ("val", 20), ("test_2016_flickr", 20))
                 for lang in ("en", "de")},
    "marvin_linzen_2018": {"marvin_linzen_2018.jsonl.gz": 400},
}
SUITE = {"limit": 2}
#: a tiny training budget with one evaluation during training
BUDGET = {**TINY_TRAIN, "steps": 2, "warmup_steps": 1, "eval_every": 2}
#: settings that keep each task's run small
CHEAP = {
    "agreement": {"n_train": 200, "n_valid": 40, "n_test_per_cell": 2, "test_distance_multiple": 1},
    "extrapolation": {"n_train": 200, "n_valid": 40, "n_test_per_cell": 2, "length_multiples": [1, 2]},
    "chomsky": {"n_train": 200, "n_valid": 20, "n_test_per_cell": 2, "test_lengths": [41, 50]},
    "word_problem": {"group": "S3", "n_train": 200, "n_valid": 20, "n_test_per_cell": 2, "test_lengths": [4, 20]},
    "mad": {"n_train": 64, "n_valid": 16, "n_test_per_cell": 16},
    "mqar": {"n_train": 200, "n_valid": 20, "n_test_per_cell": 2, "vocab_size": 64,
             "train_settings": [[16, 2]], "test_settings": [[16, 2], [32, 4]]},
    "regbench": {"n_train_automata": 32, "n_valid": 8, "n_test_per_cell": 8},
    "mt": {"vocab_size": 300, "beam": 2, "dev_sentences": 5, "max_len_a": 0, "max_len_b": 3},
    "figqa_ft": {"train_file": "train_s"},
    "probe_number": {"n_train": 200, "n_valid": 40, "n_test_per_cell": 2, "test_distance_multiple": 1,
                     "max_distance": 10, "sentences_per_cell": 2},
    "probe_number_lm": {"max_distance": 10, "sentences_per_cell": 2},
    "probe_pos": {"n_sentences": 20},
    "figqa": SUITE, "wsc273": SUITE, "blimp_agreement": SUITE, "blimp": SUITE,
    "marvin_linzen": {**SUITE, "per_condition": 1}, "minimal_pairs": SUITE,
}


def _head(source, target, lines: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    zipped = source.suffix == ".gz"
    with (gzip.open(source, "rt", encoding="utf-8") if zipped else open(source, encoding="utf-8")) as f:
        text = "".join(line for _, line in zip(range(lines), f))
    with (gzip.open(target, "wt", encoding="utf-8") if zipped else open(target, "w", encoding="utf-8")) as f:
        f.write(text)


@pytest.fixture(scope="module")
def mini_data(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("mini_data")
    for name, files in MINI.items():
        for path, lines in files.items():
            _head(data_dir / name / path, root / name / path, lines)
    # BLiMP's agreement paradigms only, so `blimp` (every paradigm in the folder) stays small
    from tasks.lm_eval.suites import BLIMP_AGREEMENT

    (root / "blimp").mkdir()
    shutil.copy(data_dir / "blimp" / "SOURCE.md", root / "blimp" / "SOURCE.md")
    for paradigm in (p for group in BLIMP_AGREEMENT.values() for p in group):
        _head(data_dir / "blimp" / "data" / f"{paradigm}.jsonl.gz", root / "blimp" / "data" / f"{paradigm}.jsonl.gz", 10)
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"sentence_good": g, "sentence_bad": b}) + "\n" for g, b in
                             [("the dog runs .", "the dog run ."), ("the dogs run .", "the dogs runs .")]))
    return root


@pytest.fixture(scope="module")
def every_task(mini_data, tmp_path_factory):
    """A store with one tiny run of every registered task (and the lm runs they start from)."""
    return _tiny_sweep(["gru"], TASKS.names(), mini_data, tmp_path_factory.mktemp("every_task"))


def _tiny_sweep(archs: list[str], tasks: list[str], mini_data, folder):
    import torch

    from harness.sweep import expand, run_sweep

    extra = {"minimal_pairs": {"path": str(mini_data / "pairs.jsonl")}}
    configs = {}
    for task in tasks:
        settings = {**BUDGET, **CHEAP.get(task, {}), **extra.get(task, {})}
        for cfg in expand(archs, [task], overrides={k: [v] for k, v in settings.items()}):
            configs[cfg.run_id] = cfg
    store = RunStore(folder)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only waits, and on a shared CPU it spins
    try:
        run_sweep(list(configs.values()), store, data_dir=mini_data, progress=False, log=lambda *a, **k: None)
    finally:
        torch.set_num_threads(threads)
    return store


@pytest.mark.parametrize("name", TASKS.names())
def test_every_metric_a_run_stores_has_a_spec(every_task, name):
    runs = every_task.runs()
    mine = runs[runs.task == name]
    assert len(mine), f"no run of {name}"
    failed = mine[mine.status != FINISHED]
    assert failed.empty, f"{name}: {failed.error.iloc[0] if len(failed) else ''}"
    metrics = every_task.metrics()
    stored = metrics[metrics.task == name]
    cls = TASKS.get(name)
    assert set(stored.metric) >= {m for _, m in cls.table_metrics}, "the table's metrics are stored"
    for metric in sorted(set(stored.metric)):
        spec = cls.spec(metric)
        assert spec.role in ("score", "efficiency", "per_length", "info"), (name, metric)


@pytest.mark.parametrize("name", TASKS.names())
def test_what_tables_and_the_protocol_read_has_a_spec(name):
    cls = TASKS.get(name)
    for _, metric in cls.table_metrics:
        cls.spec(metric)
    if cls.length_metric:
        assert cls.spec(cls.length_metric).better is not None, "per-length figures need a direction"
    if cls.kind != "zero_shot":
        assert cls.spec(cls.dev_metric).better is not None, "the dev metric picks checkpoints: it needs a direction"
        assert cls.dev_lower_is_better() == (cls.spec(cls.dev_metric).better == "lower")


def test_exact_names_win_over_patterns_and_unknown_names_are_named():
    ner, agreement_lm = TASKS.get("ner"), TASKS.get("agreement_lm")
    assert ner.spec("f1_PER").name == "f1_*" and ner.spec("f1_PER").better == "higher"
    assert ner.spec("f1_by_length").role == "per_length", "the exact name, not f1_*"
    assert agreement_lm.spec("accuracy_attractors_3").better == "higher"
    assert ner.spec("tokens_per_s") is RUN_METRICS["tokens_per_s"], "the engine's own metrics"
    table = specs(MetricSpec("a_*", "higher"), MetricSpec("a_b*", "lower"))
    assert find_spec("a_bc", table).name == "a_b*", "the most specific pattern"
    assert find_spec("x", table) is None
    with pytest.raises(KeyError, match="task 'ner' declares no spec for metric 'bogus'"):
        ner.spec("bogus")
    with pytest.raises(ValueError, match="which way is better"):
        MetricSpec("bleu", None, "score")


def test_a_run_storing_an_undeclared_metric_fails_naming_task_and_metric(tmp_path, monkeypatch):
    from harness import runner

    monkeypatch.setitem(runner.BY_KIND, "trained", lambda cfg, task, run: [Metric("test", "bogus", 1.0)])
    cfg = RunConfig(arch="gru", task="agreement", train=TrainConfig(**TINY_TRAIN))
    store = RunStore(tmp_path)
    assert store.claim(cfg)
    assert runner.execute(cfg, store, progress=False) == "failed"
    record = store.record(cfg.run_id)
    assert "task 'agreement' stores metric 'bogus' (split 'test') but declares no spec" in record["error"]
    assert [m["metric"] for m in record["metrics"]] == ["wall_time_s"], "nothing undeclared is stored"


#: (arch, seed) → test BLEU, ms per generated token, sentences/s: lstm decodes fastest, gru translates best
FAKE_MT = {("lstm", 0): (20.0, 2.0, 80.0), ("lstm", 1): (20.5, 2.1, 78.0),
           ("gru", 0): (25.0, 5.0, 30.0), ("gru", 1): (25.4, 5.2, 31.0)}


def _finished(store: RunStore, cfg: RunConfig, metrics: list[Metric]) -> None:
    """Record a finished run without running it."""
    assert store.claim(cfg)
    efficiency = [Metric("run", "params_non_embedding", 1e5), Metric("train", "tokens_per_s", 1000.0 + cfg.seed),
                  Metric("inference", "tokens_per_s", 5000.0), Metric("run", "peak_memory_mb", 300.0 + cfg.seed)]
    info = {"train_length": cfg.train.seq_len, "dtype": "fp32", "batch_shape": [cfg.train.batch_size, cfg.train.seq_len],
            "task_version": "1", "env": {"device_name": "cpu", "torch_version": "x", "git_sha": "abc"}}
    store.finish(cfg.run_id, FINISHED, metrics + efficiency, info)


@pytest.fixture
def mt_store(tmp_path):
    store = RunStore(tmp_path)
    train = TrainConfig(**TINY_TRAIN)  # final_eval_tokens set: mt ignores it, and says nothing of it
    for (arch, seed), (bleu, ms, sentences) in FAKE_MT.items():
        cfg = RunConfig(arch=arch, task="mt", seed=seed, arch_options={"bidirectional": True}, train=train)
        _finished(store, cfg, [Metric("test", "bleu", bleu), Metric("test", "chrf", 2 * bleu),
                               Metric("valid", "bleu", bleu - 1), Metric("test", "ms_per_token", ms),
                               Metric("test", "sentences_per_s", sentences)])
    return store


def _cells(table: str) -> dict[str, dict[str, str]]:
    """Markdown table → {row arch: {column: cell}}."""
    lines = [line for line in table.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    return {row[0]: dict(zip(header, row)) for row in rows}


def test_the_mt_table_bolds_the_fastest_decoder_and_the_best_bleu(mt_store):
    cells = _cells(make_table(mt_store, task="mt"))
    assert cells["lstm"]["mt: test ms_per_token"].startswith("**2.05"), "fewest ms per token"
    assert not cells["gru"]["mt: test ms_per_token"].startswith("**")
    assert cells["lstm"]["mt: test sentences_per_s"].startswith("**79.00"), "most sentences per second"
    assert cells["gru"]["mt: test bleu"].startswith("**25.20") and not cells["lstm"]["mt: test bleu"].startswith("**")
    assert cells["lstm"]["mt: peak MB"].startswith("**"), "least memory"
    tex = make_table(mt_store, "latex", task="mt")
    assert "\\textbf{2.05 $\\pm$ 0.07}" in tex


def test_a_metric_with_no_direction_is_never_bold(mt_store, monkeypatch):
    cls = TASKS.get("mt")
    monkeypatch.setattr(cls, "metric_specs", {**cls.metric_specs, "bleu": MetricSpec("bleu", None, "info")})
    cells = _cells(make_table(mt_store, task="mt"))
    assert not any(row[c].startswith("**") or row[c].endswith("†") for row in cells.values()
                   for c in ("mt: test bleu", "mt: valid bleu"))
    assert cells["lstm"]["mt: test ms_per_token"].startswith("**"), "the other columns still rank"
    assert rank_column({0: [1.0, 1.1], 1: [2.0, 2.1]}, None) == {}


def test_the_caption_states_dtype_batch_shape_and_partial_splits(mt_store):
    table = make_table(mt_store, task="mt")
    assert "batch shape (sequences×length): mt 4×16" in table and "dtype: fp32" in table
    assert "scored on their first" not in table, "mt scores whole splits whatever final_eval_tokens says"
    train = TrainConfig(**{**TINY_TRAIN, "final_eval_tokens": 32768})
    _finished(mt_store, RunConfig(arch="gru", task="lm", train=train),
              [Metric(split, "ppl", 100.0, train.seq_len) for split in ("valid", "test")])
    table = make_table(mt_store)
    assert "lm: valid/test scored on their first 32,768 tokens" in table
    assert "batch shape (sequences×length): lm 4×16; mt 4×16" in table


def test_the_caption_states_the_part_a_zero_shot_suite_scored(tmp_path):
    store = RunStore(tmp_path)
    lm = RunConfig(arch="gru", task="lm", train=TrainConfig(**{**TINY_TRAIN, "final_eval_tokens": None}))
    _finished(store, lm, [Metric(split, "ppl", 100.0, lm.train.seq_len) for split in ("valid", "test")])
    ml = RunConfig(arch="gru", task="marvin_linzen", task_options={"per_condition": 20}, train=lm.train,
                   upstream=lm.run_id)
    _finished(store, ml, [Metric("ml_simple_agrmt_sentence", "accuracy", 0.5)])
    table = make_table(store)
    assert "marvin_linzen: scored on the first 20 pairs of each condition" in table
    assert "scored on their first" not in table, "lm scored whole splits"


def test_the_checkpoint_goes_the_way_the_dev_metric_spec_says(monkeypatch):
    lm = TASKS.get("lm")
    assert lm.dev_lower_is_better()
    monkeypatch.setattr(lm, "metric_specs", {**lm.metric_specs, "ppl": MetricSpec("ppl", "higher")})
    assert not lm.dev_lower_is_better()


#: one task of each kind: trained causally (and the upstream of the next three), scored zero-shot
#: by the harness and through lm-eval, fine-tuned, tagged bidirectionally, translated by an
#: encoder–decoder
KINDS = ["lm", "agreement_lm", "figqa", "figqa_ft", "ner", "mt"]


@pytest.fixture(scope="module")
def every_backbone(mini_data, tmp_path_factory):
    """A store with one tiny run of every registered backbone on a task of each kind."""
    return _tiny_sweep(ARCHITECTURES.names(), KINDS, mini_data, tmp_path_factory.mktemp("every_backbone"))


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_every_backbone_runs_a_task_of_each_kind(every_backbone, arch):
    runs = every_backbone.runs()
    mine = runs[runs.arch == arch]
    assert set(mine.task) == set(KINDS)
    failed = mine[mine.status != FINISHED]
    assert failed.empty, f"{arch} on {failed.task.iloc[0] if len(failed) else ''}: " \
                         f"{failed.error.iloc[0] if len(failed) else ''}"
    metrics = every_backbone.metrics()
    scores = metrics[(metrics.arch == arch) & metrics.metric.isin([m for t in KINDS for _, m in TASKS.get(t).table_metrics])]
    assert scores.value.notna().all() and set(scores.task) == set(KINDS)
