"""Plot labels come from the metric specs, not from metric names: the length and Pareto figures
label their y axes "<metric> (<unit>)" and the Pareto title names each metric with the direction
its spec gives; bench panels read their units from the bench columns."""
import dataclasses

import pytest

import harness.plots as plots
from harness.config import RunConfig
from harness.core.metrics import Metric
from harness.core.registry import TASKS
from harness.core.train_config import TrainConfig
from harness.render import BENCH_COLUMNS
from harness.store import FINISHED, RunStore
from tests.conftest import TINY_TRAIN

TRAIN = TrainConfig(**TINY_TRAIN)
L = TRAIN.seq_len


def _finished(store: RunStore, cfg: RunConfig, metrics: list[Metric]) -> None:
    """Record a finished run without running it."""
    assert store.claim(cfg)
    efficiency = [Metric("run", "params_non_embedding", 1e5), Metric("train", "tokens_per_s", 1000.0 * (cfg.seed + 1)),
                  Metric("inference", "tokens_per_s", 5000.0), Metric("run", "peak_memory_mb", 300.0)]
    info = {"train_length": L, "dtype": "fp32", "batch_shape": [TRAIN.batch_size, L], "task_version": "1",
            "env": {"device_name": "cpu", "torch_version": "x", "git_sha": "abc"}}
    store.finish(cfg.run_id, FINISHED, metrics + efficiency, info)


@pytest.fixture
def store(tmp_path):
    store = RunStore(tmp_path)
    for arch in ("gru", "lstm"):
        for seed in (0, 1):
            ppl = {L: 200.0 + seed, 2 * L: 300.0, 4 * L: 500.0}
            _finished(store, RunConfig(arch=arch, task="lm", seed=seed, train=TRAIN),
                      [Metric(split, "ppl", v, n) for split in ("valid", "test") for n, v in ppl.items()])
            accuracy = {L: 0.9, 2 * L: 0.7 - 0.1 * seed}
            _finished(store, RunConfig(arch=arch, task="extrapolation", seed=seed, task_options={"probe": "parity"},
                                       train=TRAIN),
                      [Metric("test", "accuracy", 0.8), Metric("valid", "accuracy", 0.85)]
                      + [Metric("test", "accuracy", v, n) for n, v in accuracy.items()])
    return store


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions would save, kept open instead."""
    made = []
    monkeypatch.setattr(plots, "_save", lambda fig, out_dir, name: made.append(fig) or [])
    yield made
    for fig in made:
        plots.plt.close(fig)


def test_length_figure_labels_its_y_axes_from_the_specs(store, figures, tmp_path):
    plots.plot_extrapolation(store, tmp_path)
    axes = {ax.get_title(): ax.get_ylabel() for ax in figures[0].axes}
    assert axes == {"extrapolation/parity": "test accuracy (fraction)", "lm": "test ppl (perplexity)"}
    assert plots.metric_label("lm", "ppl", "test") == "test ppl (perplexity)"
    assert plots.metric_label("extrapolation/parity", "accuracy") == "accuracy (fraction)"


def test_pareto_figure_names_each_metric_and_its_direction(store, figures, tmp_path):
    plots.plot_pareto(store, tmp_path)
    fig = figures[0]
    title = fig.get_suptitle()
    assert title.startswith("test accuracy (higher is better), test ppl (lower is better) against training speed")
    assert "accuracy against speed" not in title
    axes = {ax.get_title(): (ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes if ax.get_title()}
    assert axes == {"extrapolation/parity: higher is better": ("training speed (tokens/s)", "test accuracy (fraction)"),
                    "lm: lower is better": ("training speed (tokens/s)", "test ppl (perplexity)")}
    panels = [(task, headline) for task, headline, _ in plots._pareto_panels(store)]
    assert panels == [("extrapolation/parity", "test accuracy"), ("lm", "test ppl")]
    assert plots.pareto_labels(panels) == (title, {
        "extrapolation/parity": {"title": "extrapolation/parity: higher is better", "x": "training speed (tokens/s)",
                                 "y": "test accuracy (fraction)"},
        "lm": {"title": "lm: lower is better", "x": "training speed (tokens/s)", "y": "test ppl (perplexity)"}})


def test_labels_follow_the_spec_not_the_name(store, figures, tmp_path, monkeypatch):
    cls = TASKS.get("lm")
    spec = dataclasses.replace(cls.metric_specs["ppl"], unit="exp(nats)", better="higher")
    monkeypatch.setattr(cls, "metric_specs", {**cls.metric_specs, "ppl": spec})
    plots.plot_extrapolation(store, tmp_path)
    assert {ax.get_title(): ax.get_ylabel() for ax in figures[0].axes}["lm"] == "test ppl (exp(nats))"
    title, labels = plots.pareto_labels([("lm", "test ppl")])
    assert title.startswith("test ppl (higher is better) against training speed")
    assert labels["lm"]["y"] == "test ppl (exp(nats))"


def test_bench_panels_read_their_units_from_the_bench_columns(monkeypatch):
    assert plots.bench_labels("train_peak_mb") == {"title": "training peak memory", "x": "sequence length (tokens)",
                                                   "y": "MB"}
    assert plots.bench_labels("decode_tokens_per_s")["y"] == "tokens/s"
    assert all(plots.bench_labels(key)["y"] == BENCH_COLUMNS[key][2] for key in plots.BENCH_PANELS)
    heading, show, _ = BENCH_COLUMNS["train_peak_mb"]
    monkeypatch.setitem(BENCH_COLUMNS, "train_peak_mb", (heading, show, "GiB"))
    assert plots.bench_labels("train_peak_mb")["y"] == "GiB", "the unit, not the key's _mb suffix"


def test_no_two_rows_of_a_figure_are_drawn_alike_past_the_palette(tmp_path, figures):
    """25 rows outrun tab20's colours: a reused colour is drawn with another line style, the same in
    every panel (the second holds a few of the rows) and in the legend."""
    store = RunStore(tmp_path)
    for arch in ("gru", "lstm", "rnn", "cnn", "transformer"):
        for lr in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2):
            train = TrainConfig(**{**TINY_TRAIN, "lr": lr})
            _finished(store, RunConfig(arch=arch, task="extrapolation", task_options={"probe": "parity"}, train=train),
                      [Metric("test", "accuracy", 0.8), Metric("valid", "accuracy", 0.85),
                       Metric("test", "accuracy", 0.7, L), Metric("test", "accuracy", 0.6, 2 * L)])
            if arch in ("cnn", "transformer") and lr in (1e-3, 1e-2):  # first and last in the label order
                _finished(store, RunConfig(arch=arch, task="lm", train=train),
                          [Metric(split, "ppl", 300.0, n) for split in ("valid", "test") for n in (L, 2 * L)])
    plots.plot_extrapolation(store, tmp_path)

    def drawn(title):
        (ax,) = [ax for ax in figures[0].axes if ax.get_title() == title]
        return {line.get_label(): (line.get_color(), line.get_linestyle()) for line in ax.get_lines()
                if not line.get_label().startswith("_")}

    parity, lm = drawn("extrapolation/parity"), drawn("lm")
    assert len(parity) == 25 and len(set(parity.values())) == 25
    assert len({colour for colour, _ in parity.values()}) == 20
    assert len(lm) == 4 and lm == {label: parity[label] for label in lm}
    assert {style for _, style in lm.values()} == {"-", "--"}, "the lm rows span the palette's wrap"
    legend = {handle.get_label(): (handle.get_color(), handle.get_linestyle())
              for handle in figures[0].legends[0].legend_handles}
    assert legend == parity


def test_length_figure_draws_each_size_as_its_own_line(tmp_path, monkeypatch):
    """Two sizes of one backbone are two lines (labelled with the size), not one line whose band
    spans them as if they were seeds."""
    import matplotlib.pyplot as plt

    store = RunStore(tmp_path)
    for size, accuracy in (("d64", 0.2), ("d128", 0.8)):
        _finished(store, RunConfig(arch="gru", task="extrapolation", size=size, task_options={"probe": "parity"},
                                   train=TRAIN),
                  [Metric("test", "accuracy", accuracy, n) for n in (L, 2 * L)])
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, out_dir, name: figures.append(fig) or [])
    plots.plot_extrapolation(store, tmp_path / "out")
    lines = {line.get_label(): list(line.get_ydata()) for line in figures[0].axes[0].get_lines()
             if not line.get_label().startswith("_")}
    plt.close(figures[0])
    assert lines == {"gru (d128)": [0.8, 0.8], "gru (d64)": [0.2, 0.2]}


def test_best_lr_length_figure_draws_each_row_at_its_best_dev_rate(tmp_path, monkeypatch):
    """Protocol best-lr: one line per backbone, at the rate whose valid accuracy is best (here the
    rate whose test accuracy is worse for the LSTM, so the pick cannot come from the test split),
    labelled without the rate; protocol all draws every rate."""
    import matplotlib.pyplot as plt

    store = RunStore(tmp_path)
    for arch, lr, dev, test in (("gru", 1e-3, 0.6, 0.2), ("gru", 3e-3, 0.9, 0.8),
                                ("lstm", 1e-3, 0.7, 0.3), ("lstm", 3e-3, 0.5, 0.9)):
        _finished(store, RunConfig(arch=arch, task="extrapolation", task_options={"probe": "parity"},
                                   train=TRAIN.model_copy(update={"lr": lr})),
                  [Metric("valid", "accuracy", dev), Metric("test", "accuracy", test)]
                  + [Metric("test", "accuracy", test, n) for n in (L, 2 * L)])
    # a zero-shot suite in the same store has no dev score of its own: the figure's best-lr must not ask for one
    _finished(store, RunConfig(arch="gru", task="figqa", train=TRAIN), [Metric("test", "accuracy", 0.5)])

    def lines(protocol):
        figures = []
        monkeypatch.setattr(plots, "_save", lambda fig, out_dir, name: figures.append(fig) or [])
        plots.plot_extrapolation(store, tmp_path / "out", protocol=protocol)
        drawn = {line.get_label(): list(line.get_ydata()) for line in figures[0].axes[0].get_lines()
                 if not line.get_label().startswith("_")}
        title = figures[0].get_suptitle()
        plt.close(figures[0])
        return drawn, title

    best, title = lines("best-lr")
    assert best == {"gru": [0.8, 0.8], "lstm": [0.3, 0.3]}
    assert "best learning rate" in title
    every, _ = lines("all")
    assert len(every) == 4 and all("lr=" in label for label in every)


def test_plot_protocol_is_refused_where_a_figure_has_none(tmp_path, capsys):
    from harness.cli import main

    RunStore(tmp_path)
    assert main(["plot", "lr", "--results", str(tmp_path), "--protocol", "best-lr"]) == 2
    assert "--protocol applies to the extrapolation and agreement figures" in capsys.readouterr().err
    assert main(["plot", "extrapolation", "--results", str(tmp_path), "--protocol", "bestlr"]) == 2
    assert "did you mean 'best-lr'" in capsys.readouterr().err


def test_best_lr_agreement_figure_draws_each_row_at_its_best_dev_rate(tmp_path, figures):
    store = RunStore(tmp_path)
    for lr, dev, test in ((1e-3, 0.9, 0.3), (3e-3, 0.6, 0.7)):
        _finished(store, RunConfig(arch="gru", task="agreement", train=TRAIN.model_copy(update={"lr": lr})),
                  [Metric("valid", "accuracy", dev), Metric("test", "accuracy", test)]
                  + [Metric("test", "accuracy_attractors_1", test, n) for n in (4, 16)])
    plots.plot_agreement(store, tmp_path / "out", protocol="best-lr")
    drawn = {line.get_label(): list(line.get_ydata()) for line in figures[0].axes[0].get_lines()
             if not line.get_label().startswith("_")}
    assert drawn == {"gru": [0.3, 0.3]}
