"""`harness table --view lr` (learning-rate robustness, Okpekpe & Orvieto 2025), `harness plot lr`
and `harness table --view depth` (depth to solve, Merrill et al. 2024) on stores of made-up runs
whose numbers are worked out by hand; the views' option checks and names."""
import math

import pytest

from harness.config import RunConfig
from harness.core.metrics import Metric
from harness.core.train_config import TrainConfig
from harness.store import FINISHED, RunStore
from harness.tables import depth_table, length_table, lr_table, make_table
from tests.conftest import TINY_TRAIN, harness

L = TINY_TRAIN["seq_len"]
ENV = {"device_name": "cpu", "torch_version": "x", "python_version": "3", "git_sha": "abc"}
RATES = (1e-4, 1e-3, 1e-2)

#: mqar test accuracy by (arch, size, lr): one value per seed (None: that seed diverged)
MQAR = {
    # means 0.91, 0.95, 0.90: best 0.95 at 1e-3; 0.90 sits exactly 0.05 below it, inside: 3/3
    ("transformer", "tiny", 1e-4): (0.90, 0.92), ("transformer", "tiny", 1e-3): (0.94, 0.96),
    ("transformer", "tiny", 1e-2): (0.89, 0.91),
    # 0.31, 0.81, 0.79 (one seed diverged; the other is inside): 2/3
    ("gru", "tiny", 1e-4): (0.30, 0.32), ("gru", "tiny", 1e-3): (0.80, 0.82), ("gru", "tiny", 1e-2): (None, 0.79),
    # 0.51, and every run at 1e-3 diverged (outside): 1/2
    ("lstm", "tiny", 1e-4): (0.50, 0.52), ("lstm", "tiny", 1e-3): (None, None),
    # another size is another row: one rate, 1/1
    ("transformer", "d64", 1e-3): (0.60, 0.62),
}
#: lm (valid, test) perplexity at the training length by lr, seed 0 (seed 1: both + 2): test means
#: 101, 105, 107, the best (lower) 101 at 1e-4; 5% of it is 5.05, so 105 is inside, 107 not: 2/3;
#: by valid (means 91, 81, 96) the best rate is 1e-3
LM = {1e-4: (90.0, 100.0), 1e-3: (80.0, 104.0), 1e-2: (95.0, 106.0)}


def _info(**extra):
    return {"train_length": L, "dtype": "fp32", "task_version": "1", "env": ENV, **extra}


def _add(store, arch, task, lr, seed, metrics, size="tiny", options=None, status=FINISHED, info=None):
    cfg = RunConfig(arch=arch, task=task, size=size, seed=seed, task_options=options or {},
                    train=TrainConfig(**{**TINY_TRAIN, "lr": lr}))
    assert store.claim(cfg)
    store.finish(cfg.run_id, status, metrics if status == FINISHED else [], info or _info())


@pytest.fixture(scope="module")
def lr_store(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("lr_view"))
    for (arch, size, lr), values in MQAR.items():
        for seed, value in enumerate(values):
            if value is None:
                _add(store, arch, "mqar", lr, seed, [], size=size, status="diverged")
            else:
                _add(store, arch, "mqar", lr, seed, [Metric("test", "accuracy", value),
                                                    Metric("valid", "accuracy", value - 0.1),
                                                    Metric("test", "accuracy", 0.0, 64)], size=size)
    for lr, (valid, test) in LM.items():
        for seed in (0, 1):
            _add(store, "transformer", "lm", lr, seed,
                 [Metric("valid", "ppl", valid + 2 * seed, L), Metric("test", "ppl", test + 2 * seed, L),
                  Metric("test", "ppl", 999.0, 2 * L)])  # not at the training length: not read
    for seed in (0, 1):  # one rate only: no lr table unless asked for
        _add(store, "gru", "extrapolation", 1e-3, seed, [Metric("test", "accuracy", 0.7 + 0.1 * seed)],
             options={"probe": "parity"})
    return store


def _rows(text: str) -> dict[tuple[str, str], list[str]]:
    """(arch, size) → the cells of a Markdown table's row."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("arch", ""):
            out[(cells[0], cells[1])] = cells[2:]
    return out


def test_lr_cells_summary_and_caption(lr_store):
    text = lr_table(lr_store)
    mqar, lm = text.split("\n\nmqar: learning-rate robustness")[0], text.split("\n\nlm: ")[0]
    assert "| arch        | size   | lr 0.0001" in text.splitlines()[0]
    header = [c.strip() for c in text.splitlines()[0].strip("|").split("|")]
    assert header == ["arch", "size", "lr 0.0001", "lr 0.001", "lr 0.01", "within 5% of best", "best lr"]
    # tables are sorted by task label: lm first (ppl, lower is better), then mqar
    assert text.index("lm: learning-rate robustness") < text.index("mqar: learning-rate robustness")
    assert "extrapolation" not in text.split("; budget")[0], "one rate only: no table"
    rows = _rows(lm)
    assert rows[("transformer", "tiny")] == ["**101.0 ± 1.41**", "105.0 ± 1.41", "107.0 ± 1.41", "2/3", "0.0001"]
    rows = _rows(text.split("lm: learning-rate robustness")[1])
    assert rows[("transformer", "tiny")] == ["0.91 ± 0.01", "**0.95 ± 0.01**", "0.90 ± 0.01", "3/3", "0.001"]
    assert rows[("gru", "tiny")] == ["0.31 ± 0.01", "**0.81 ± 0.01**", "0.79 [1 diverged]", "2/3", "0.001"]
    assert rows[("lstm", "tiny")] == ["**0.51 ± 0.01**", "2 diverged", "—", "1/2", "0.0001"]
    assert rows[("transformer", "d64")] == ["—", "**0.61 ± 0.01**", "—", "1/1", "0.001"]
    assert ("lm: learning-rate robustness (Okpekpe & Orvieto 2025): test ppl at the training length "
            "(lower is better, perplexity; the task's first table metric) at each learning rate (columns), "
            "mean ± std over seeds (seeds per cell: 2–2)") in text
    assert "have a mean within 5% (relative to the best: the metric is no fraction) of the row's best mean" in text
    assert ("mqar: learning-rate robustness (Okpekpe & Orvieto 2025): test accuracy (higher is better, "
            "fraction; the task's first table metric) at each learning rate (columns), mean ± std over seeds "
            "(seeds per cell: 1–2); bold: the row's best rate; within 0.05 of best: how many of the row's "
            "learning rates (every rate it has a run at; one whose runs all failed counts as outside) have a "
            "mean within 0.05 (absolute: the metric is a fraction) of the row's best mean") in text
    assert "best lr: the rate with the best mean (ties: the lower rate)" in text
    assert "device: cpu; torch x; git abc" in text and "Welch" not in text
    assert mqar and lm


def test_lr_direction_and_choice_of_score(lr_store):
    # by the dev metric (valid ppl, lower is better): means 91, 81, 96; best 81 at 1e-3; 5% of 81
    # is 4.05: 91 and 96 are outside
    valid = _rows(lr_table(lr_store, task="lm", split="valid"))
    assert valid[("transformer", "tiny")] == ["91.00 ± 1.41", "**81.00 ± 1.41**", "96.00 ± 1.41", "1/3", "0.001"]
    assert "valid ppl at the training length (lower is better, perplexity; the task's dev metric)" in \
        lr_table(lr_store, task="lm", split="valid")
    # a task with one rate is shown when named
    parity = lr_table(lr_store, task="extrapolation")
    assert _rows(parity)[("gru", "tiny")] == ["**0.75 ± 0.07**", "1/1", "0.001"]
    assert parity.split("\n")[0].split("|")[1:-1] == [" arch   ", " size   ", " lr 0.001        ",
                                                     " within 0.05 of best   ", " best lr   "]
    other = _rows(lr_table(lr_store, task="mqar", metric="accuracy", split="valid"))
    assert other[("transformer", "tiny")][:2] == ["0.81 ± 0.01", "**0.85 ± 0.01**"]
    # a chosen metric leaves out the tasks that never stored it (lm has no accuracy)
    chosen = lr_table(lr_store, metric="accuracy")
    assert "mqar: learning-rate robustness" in chosen and "lm: " not in chosen
    assert "test accuracy (higher is better, fraction; the task's first table metric)" in chosen


def test_depth_reads_a_lower_is_better_metric_the_other_way(lr_store):
    # lm ppl per length: 100 at 16 (seed 0, the best of 1e-4) ≤ 103; 999 at 32; tiny has no recorded
    # backbone here, so its preset's 2 layers; 1 layer was not tried: ≤2
    text = depth_table(lr_store, task="lm", metric="ppl", threshold=103)
    assert _rows(text) == {("transformer", "tiny"): ["≤2", ">2"]}
    assert "test ppl ≤ 103 (lower is better, perplexity)" in text and "the lowest test ppl" in text


def test_lr_formats(lr_store):
    csv = lr_table(lr_store, "csv").splitlines()
    header = csv[0].split(",")
    assert header == ["task", "arch", "size", "lr 0.0001 mean", "lr 0.0001 std", "lr 0.001 mean", "lr 0.001 std",
                      "lr 0.01 mean", "lr 0.01 std", "within 5% of best", "within 0.05 of best", "best lr"]
    rows = {tuple(line.split(",")[:3]): dict(zip(header, line.split(","))) for line in csv[1:]}
    t = rows[("mqar", "transformer", "tiny")]
    assert float(t["lr 0.001 mean"]) == pytest.approx(0.95)
    assert float(t["lr 0.001 std"]) == pytest.approx(0.02 / math.sqrt(2))
    assert float(t["within 0.05 of best"]) == 1.0 and float(t["best lr"]) == 1e-3 and t["within 5% of best"] == ""
    assert float(rows[("mqar", "gru", "tiny")]["within 0.05 of best"]) == pytest.approx(2 / 3)
    assert rows[("mqar", "gru", "tiny")]["lr 0.01 std"] == "", "one seed: no std"
    assert rows[("mqar", "lstm", "tiny")]["lr 0.001 mean"] == ""
    assert float(rows[("lm", "transformer", "tiny")]["within 5% of best"]) == pytest.approx(2 / 3)
    assert float(rows[("lm", "transformer", "tiny")]["best lr"]) == 1e-4
    latex = lr_table(lr_store, "latex")
    assert latex.count(r"\begin{table}") == 2 and r"\textbf{0.95 $\pm$ 0.01}" in latex
    assert r"within 5\% of best" in latex and "Okpekpe" in latex
    ci = lr_table(lr_store, task="mqar", stat="ci95")
    # two seeds: the t quantile 12.71 × 0.0141 / √2 = 0.127
    assert "0.95 ± 0.13" in ci and "95% confidence interval (t distribution)" in ci


def test_lr_plot_is_written(lr_store, tmp_path, capsys):
    out = tmp_path / "plots"
    assert harness("plot", "lr", "--results", lr_store.root, "--output", out) == 0
    assert {p.name for p in out.iterdir()} == {"lr.png", "lr.pdf"}
    assert all(p.stat().st_size > 1000 for p in out.iterdir())
    assert capsys.readouterr().out.split() == [str(out / "lr.png"), str(out / "lr.pdf")]


def test_lr_plot_without_a_sweep_says_so(tmp_path, capsys):
    store = RunStore(tmp_path / "one")
    _add(store, "gru", "mqar", 1e-3, 0, [Metric("test", "accuracy", 0.5)])
    assert harness("plot", "lr", "--results", store.root, "--output", tmp_path / "p") == 2
    assert "no task with finished runs at several learning rates" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
    assert lr_table(store).startswith("no task has runs at several learning rates yet")


#: test sequence accuracy by (arch, width, depth, lr, seed, length) where not 0.2; lengths 41 and 100
SEQ = {
    # d128, length 41: depth 2 reaches it at one (lr, seed) only: the best run counts → 2;
    # length 100: depth 3 (at lr 1e-2, seed 1), depth 4 too → 3
    ("transformer", 128, 1, 1e-3, 0, 41): 0.5,
    ("transformer", 128, 2, 1e-3, 0, 41): 0.995, ("transformer", 128, 2, 1e-2, 1, 41): 0.9,
    ("transformer", 128, 3, 1e-3, 0, 41): 0.999, ("transformer", 128, 4, 1e-3, 0, 41): 1.0,
    ("transformer", 128, 3, 1e-2, 1, 100): 0.992, ("transformer", 128, 4, 1e-3, 1, 100): 0.999,
    ("transformer", 128, 2, 1e-3, 0, 100): 0.98,
    # d128: one layer at exactly the threshold (≥ holds) for 41; nothing reaches 100: >4
    ("lstm", 128, 1, 1e-2, 0, 41): 0.99, ("lstm", 128, 4, 1e-2, 0, 100): 0.97,
    # d256, depths 2 and 3 only: 2 reaches 41 (1 untried: ≤2); 3 reaches 100 (2 tried, short)
    ("lstm", 256, 2, 1e-3, 1, 41): 1.0, ("lstm", 256, 3, 1e-2, 0, 100): 0.995, ("lstm", 256, 2, 1e-3, 0, 100): 0.9,
}
DEPTHS = {("transformer", 128): (1, 2, 3, 4), ("lstm", 128): (1, 2, 3, 4), ("lstm", 256): (2, 3)}


@pytest.fixture(scope="module")
def depth_store(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("depth_view"))
    options = {"name": "parity_check", "test_lengths": "41 100"}
    for (arch, width), depths in DEPTHS.items():
        for depth in depths:
            for lr in (1e-3, 1e-2):
                for seed in (0, 1):
                    metrics = []
                    for n in (41, 100):
                        value = SEQ.get((arch, width, depth, lr, seed, n), 0.2)
                        metrics += [Metric("test", "sequence_accuracy", value, n),
                                    Metric("test", "accuracy", 1.0, n)]
                    _add(store, arch, "chomsky", lr, seed, metrics + [Metric("test", "score", 1.0)],
                         size=f"d{width}x{depth}", options=options,
                         info=_info(backbone={"n_layers": depth, "d_model": width}))
    # a run that diverged is no run that solved anything
    _add(store, "lstm", "chomsky", 1e-1, 0, [], size="d128x1", options=options, status="diverged")
    return store


def test_depth_cells(depth_store):
    text = depth_table(depth_store, metric="sequence_accuracy")
    assert text.splitlines()[0].split("|")[1:-1] == [" arch        ", " width   ", " 41   ", " 100   "]
    rows = _rows(text)
    assert rows == {("lstm", "d128"): ["1", ">4"], ("lstm", "d256"): ["≤2", "3"],
                    ("transformer", "d128"): ["2", "3"]}
    assert ("chomsky/parity_check: depth to solve (Merrill et al. 2024): the fewest layers whose best run "
            "reaches test sequence_accuracy ≥ 0.99 (higher is better, fraction) at each test length (columns); "
            "best run: the highest test sequence_accuracy at that length over every learning rate and seed of "
            "that depth (chosen on the test set itself") in text
    assert "a backbone at two widths is two rows" in text
    assert "depths tried: lstm d128: 1, 2, 3, 4; lstm d256: 2, 3; transformer d128: 1, 2, 3, 4" in text
    assert "learning rates: 0.001, 0.01; runs per depth: 4–4; finished runs only" in text
    # the default metric is the task's per-length one (token accuracy: 1.0 everywhere)
    default = depth_table(depth_store)
    assert _rows(default)[("lstm", "d256")] == ["≤2", "≤2"] and "test accuracy ≥ 0.99" in default
    lower = _rows(depth_table(depth_store, threshold=0.5, metric="sequence_accuracy"))
    assert lower[("transformer", "d128")] == ["1", "2"] and lower[("lstm", "d128")] == ["1", "4"]


def test_depth_formats(depth_store):
    csv = depth_table(depth_store, "csv", metric="sequence_accuracy").splitlines()
    assert csv[0] == "task,arch,width,length,min_depth,depths,cell"
    assert "chomsky/parity_check,lstm,d128,100,,1 2 3 4,>4" in csv
    assert "chomsky/parity_check,lstm,d256,41,2,2 3,≤2" in csv
    assert "chomsky/parity_check,transformer,d128,100,3,1 2 3 4,3" in csv
    latex = depth_table(depth_store, "latex", metric="sequence_accuracy")
    assert r"\begin{table}" in latex and r"$>$4" not in latex and ">4" in latex and r"$\geq$ 0.99" in latex


def _err(capsys, *argv) -> str:
    assert harness(*argv) == 2
    return capsys.readouterr().err


def test_views_answer_names_and_reject_options(lr_store, depth_store, capsys):
    lr, depth = ["--results", lr_store.root], ["--results", depth_store.root]
    assert "unknown view 'lrr'; did you mean 'lr'?" in _err(capsys, "table", "--view", "lrr", *lr)
    assert "did you mean 'depth'?" in _err(capsys, "table", "--view", "dept", *lr)
    assert "did you mean 'lr'?" in _err(capsys, "plot", "lrr", *lr)
    assert "unknown task 'mqr'; did you mean 'mqar'?" in _err(capsys, "table", "--view", "lr", "--task", "mqr", *lr)
    assert "did you mean 'accuracy'?" in _err(capsys, "table", "--view", "lr", "--task", "mqar",
                                              "--metric", "acuracy", *lr)
    assert "did you mean 'sequence_accuracy'" in _err(capsys, "table", "--view", "depth", "--metric",
                                                       "sequence_acuracy", *depth)
    for argv, said in ((["--view", "lr", "--threshold", "0.9"], "--view lr is a table of its own"),
                       (["--view", "lr", "--protocol", "best-lr"], "--view lr is a table of its own"),
                       (["--view", "lr", "--by", "length", "--task", "mqar"], "--view lr is a table of its own"),
                       (["--view", "depth", "--stat", "ci95"], "--view depth is a table of its own"),
                       (["--view", "depth", "--efficiency"], "--view depth is a table of its own"),
                       (["--view", "mad", "--threshold", "0.9"], "--view mad is a table of its own"),
                       (["--threshold", "0.9"], "--threshold goes with --view depth")):
        assert said in _err(capsys, "table", *argv, *lr), argv
    assert harness("table", "--view", "depth", "--threshold", "0.5", "--metric", "sequence_accuracy",
                   "--format", "csv", *depth) == 0
    assert "lstm,d128,41,1," in capsys.readouterr().out
    assert harness("table", "--view", "lr", "--task", "lm", *lr) == 0
    assert "| transformer | tiny   | **101.0 ± 1.41** |" in capsys.readouterr().out


def test_table_help_documents_the_views(capsys):
    with pytest.raises(SystemExit):
        harness("table", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "lr: learning-rate robustness (Okpekpe & Orvieto 2025)" in text
    assert "depth: depth to solve (Merrill et al. 2024)" in text
    assert "--threshold THRESHOLD with --view depth" in text


def test_a_task_option_left_unset_adds_nothing_to_the_row_label(tmp_path):
    from harness.rows import row_labels

    store = RunStore(tmp_path)
    for options in ({}, {"grammar": "nested"}):
        _add(store, "gru", "agreement", 1e-3, 0, [Metric("test", "accuracy", 0.5)], options=options)
    assert sorted(row_labels(store.runs()).values()) == ["gru", "gru[task.grammar=nested]"]


def test_by_length_keeps_sizes_apart_and_takes_the_best_rate_of_each(tmp_path, capsys):
    """Runs of two sizes are two rows, never pooled as if they were seeds; with --protocol best-lr
    each size keeps the rate of its best dev score (d64: 1e-3, d128: 1e-2)."""
    store = RunStore(tmp_path)
    # (size, lr): (valid accuracy, test accuracy at length 64, at length 128)
    runs = {("d64", 1e-3): (0.9, 0.8, 0.6), ("d64", 1e-2): (0.5, 0.3, 0.1),
            ("d128", 1e-3): (0.4, 0.2, 0.1), ("d128", 1e-2): (0.95, 1.0, 0.7)}
    for (size, lr), (valid, at_64, at_128) in runs.items():
        _add(store, "transformer", "mqar", lr, 0, [Metric("valid", "accuracy", valid),
                                                   Metric("test", "accuracy", at_64, 64),
                                                   Metric("test", "accuracy", at_128, 128)], size=size)
    every = _rows(length_table(store, "mqar"))
    assert every[("transformer[lr=0.001]", "d64")] == ["0.80", "0.60"]
    assert every[("transformer[lr=0.001]", "d128")] == ["0.20", "0.10"]
    text = length_table(store, "mqar", protocol="best-lr")
    best = {key: cells for key, cells in _rows(text).items() if key[0] != "label"}
    assert best == {("transformer", "d128"): ["1.00", "0.70"], ("transformer", "d64"): ["0.80", "0.60"]}
    assert "transformer (d128): 0.01; transformer (d64): 0.001" in text
    assert harness("table", "--results", str(tmp_path), "--task", "mqar", "--by", "length", "--protocol", "best-lr",
                   "--format", "csv") == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == "label,size,length,mean,std,count"
    assert "transformer,d128,64,1.0,,1" in rows
    assert "(transformer mqar (d128): 0.01; transformer mqar (d64): 0.001)" in make_table(store, protocol="best-lr")
