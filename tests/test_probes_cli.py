"""Agreement, extrapolation and zero-shot agreement through the harness command, and the plots."""
import json

import pytest

from harness.store import RunStore
from harness.sweep import expand, run_sweep
from tests.conftest import TINY_SETS, harness

SMALL_DATA = ["--set=n_train=400", "--set=n_valid=100", "--set=n_test_per_cell=4"]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("probes")
    rc = harness("run", "--arch", "lstm,cnn", "--tasks", "agreement,extrapolation,agreement_lm",
                 "--results", root, "--data-dir", data_dir, "--device", "cpu", "--no-progress",
                 *TINY_SETS, *SMALL_DATA, "--set", "seq_len=8")
    assert rc == 0
    return root


def test_every_probe_and_the_upstream_lm_ran(store_dir):
    runs = RunStore(store_dir).runs()
    assert (runs.status == "finished").all()
    tasks = sorted(json.loads(c)["task"] + "/" + str(json.loads(c)["task_options"].get("probe", ""))
                   for c in runs[runs.arch == "lstm"].config)
    assert tasks == ["agreement/", "agreement_lm/", "extrapolation/dyck", "extrapolation/parity",
                     "extrapolation/recall", "lm/"]
    for arch in ("lstm", "cnn"):
        mine = runs[runs.arch == arch]
        lm_id = mine[mine.task == "lm"].run_id.iloc[0]
        assert json.loads(mine[mine.task == "agreement_lm"].config.iloc[0])["upstream"] == lm_id


def test_rerun_trains_nothing(store_dir, data_dir, capsys):
    rc = harness("run", "--arch", "lstm,cnn", "--tasks", "agreement,extrapolation,agreement_lm",
                 "--results", store_dir, "--data-dir", data_dir, "--device", "cpu", "--no-progress",
                 *TINY_SETS, *SMALL_DATA, "--set", "seq_len=8")
    assert rc == 0 and "ran: nothing; already recorded: 12" in capsys.readouterr().out


def test_results_are_stored_per_length_and_cell(store_dir, data_dir):
    m = RunStore(store_dir).metrics()
    agreement = m[(m.arch == "lstm") & (m.task == "agreement") & (m.split == "test")]
    cells = agreement[agreement.metric == "accuracy_attractors_2"]
    assert set(cells.length.dropna()) == set(range(7, 65))  # 2 attractors need distance ≥ 7; test to 8 × 8
    assert cells.length.isna().sum() == 1  # and the cell's accuracy over all distances
    probes = m[(m.task == "extrapolation") & (m.split == "test") & (m.metric == "accuracy")]
    assert set(probes.length.dropna()) == {8, 16, 32, 64}
    zero_shot = m[(m.task == "agreement_lm") & (m.arch == "lstm")].set_index(["split", "metric"]).value
    assert zero_shot[("linzen", "items")] == round(zero_shot[("linzen", "coverage")] * 7489) > 5000
    # the stored zero-shot accuracy is the trained lm run's, scored again from its checkpoint
    from harness.config import RunConfig
    from harness.runner import load_upstream, make_task

    runs = RunStore(store_dir).runs()
    cfg = RunConfig.model_validate_json(runs[(runs.task == "agreement_lm") & (runs.arch == "lstm")].config.iloc[0])
    again = make_task(cfg, data_dir).evaluate_upstream(load_upstream(RunStore(store_dir), cfg, data_dir), "linzen")
    again = {m.name: m.value for m in again}
    assert zero_shot[("linzen", "accuracy")] == pytest.approx(again["accuracy"])
    assert zero_shot[("linzen", "accuracy_attractors_1")] == pytest.approx(again["accuracy_attractors_1"])
    assert {"accuracy_original", "accuracy_nonce"} <= set(m[m.split == "gulordava"].metric)


def test_cnn_reports_its_receptive_field(store_dir):
    runs = RunStore(store_dir).runs()
    cnn = runs[(runs.arch == "cnn") & (runs.task == "agreement")]
    assert json.loads(cnn["info"].iloc[0])["backbone"]["receptive_field"] == 7


@pytest.mark.parametrize("kind", ["extrapolation", "agreement"])
def test_plots_are_written_as_png_and_pdf(store_dir, tmp_path, kind, capsys, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert harness("plot", kind, "--results", store_dir, "--output", tmp_path, "--wandb") == 0
    png, pdf = tmp_path / f"{kind}.png", tmp_path / f"{kind}.pdf"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20000
    assert pdf.read_bytes()[:5] == b"%PDF-"
    logged = list(tmp_path.glob("wandb/offline-run-*/files/media/images/*.png"))
    assert logged, "the figure is logged to W&B as an image"


def test_plot_without_results_says_so(tmp_path, capsys):
    RunStore(tmp_path)  # an empty store (a folder without one is a missing store: another error)
    assert harness("plot", "agreement", "--results", tmp_path) == 2
    assert "no agreement results" in capsys.readouterr().err
    assert harness("plot", "agreemnt", "--results", tmp_path) == 2
    assert "did you mean 'agreement'" in capsys.readouterr().err


def test_zero_shot_run_of_a_diverged_lm_is_recorded_as_failed(tmp_path, data_dir):
    configs = expand(["gru"], ["agreement_lm"])
    assert [c.task for c in configs] == ["lm", "agreement_lm"]
    store = RunStore(tmp_path)
    store.claim(configs[0])
    store.finish(configs[0].run_id, "diverged", [], {}, "loss became nan at step 3")
    summary = run_sweep(configs, store, data_dir=data_dir, progress=False, log=lambda *a, **k: None)
    assert summary.skipped == 1 and summary.ran == {"failed": 1}
    assert f"run {configs[0].run_id} is diverged" in store.runs().set_index("task").error["agreement_lm"]


def test_length_table_has_one_column_per_length(store_dir, capsys):
    assert harness("table", "--results", store_dir, "--task", "extrapolation/parity", "--by", "length") == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")] == ["label", "size", "8", "16", "32", "64"]
    assert "| lstm" in out and "| cnn" in out
    assert harness("table", "--results", store_dir, "--task", "agreement", "--by", "length",
                   "--metric", "accuracy_attractors_3", "--format", "csv") == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == "label,size,length,mean,std,count"
    assert {int(r.split(",")[2]) for r in rows[1:] if r} == set(range(10, 65))  # 3 attractors: distance ≥ 10
    assert harness("table", "--results", store_dir, "--by", "length") == 2
    assert "--by length needs --task" in capsys.readouterr().err


def test_seed_spread_is_drawn_as_a_band():
    import matplotlib.pyplot as plt
    import pandas as pd

    from harness.plots import _colours, _lines

    rows = [("a", seed, length, 0.5 + 0.1 * seed) for seed in (0, 1) for length in (8, 16, 32)]
    rows += [("b", 0, length, 0.9) for length in (8, 16, 32)]
    data = pd.DataFrame(rows, columns=["label", "seed", "length", "value"])
    fig, ax = plt.subplots()
    _lines(ax, data, _colours(data.label))
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b"]
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([0.55] * 3)  # mean over seeds
    assert len(ax.collections) == 1, "a band for the label with two seeds, none for one seed"
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(0.5) and band.max() == pytest.approx(0.6)
    plt.close(fig)
