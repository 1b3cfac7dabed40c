"""Paper output: table cells are the mean and std of the exported numbers; LaTeX is well formed
and byte-stable; significance marks follow a case whose answer is known; the report links every
table and figure it writes."""
import io
import re

import pandas as pd
import pytest

from harness.plots import plot_pareto
from harness.report import write_report
from harness.store import RunStore
from harness.stats import rank_column
from harness.tables import export, make_table
from tests.conftest import TINY_SETS, TINY_TRAIN, harness


@pytest.fixture(scope="module")
def study(tmp_path_factory, small_data):
    root = tmp_path_factory.mktemp("study")
    assert harness("run", "--arch", "gru,cnn", "--tasks", "lm,agreement_lm", "--seeds", "0,1,2", "--device", "cpu",
                   "--results", root, "--data-dir", small_data, "--no-progress", *TINY_SETS) == 0
    return RunStore(root)


def test_table_cells_are_mean_and_std_of_the_exported_numbers(study):
    wide = pd.read_csv(io.StringIO(make_table(study, "csv")))
    long = pd.read_csv(io.StringIO(export(study)))
    ppl = long[(long.task == "lm") & (long.split == "test") & (long.metric == "ppl")
               & (long.length == TINY_TRAIN["seq_len"])]
    accuracy = long[(long.task == "agreement_lm") & (long.split == "linzen") & (long.metric == "accuracy")
                    & long.length.isna()]
    for arch in ("gru", "cnn"):
        row = wide[wide.arch == arch].iloc[0]
        for frame, column in ((ppl, "lm: test ppl"), (accuracy, "agreement_lm: linzen accuracy")):
            values = frame[frame.arch == arch].value
            assert len(values) == 3
            assert row[f"{column} mean"] == pytest.approx(values.mean(), rel=1e-12)
            assert row[f"{column} std"] == pytest.approx(values.std(), rel=1e-12)


def test_confidence_interval_is_the_t_interval(study):
    from scipy import stats

    from harness.render import number as _number

    long = pd.read_csv(io.StringIO(export(study)))
    values = long[(long.task == "lm") & (long.split == "test") & (long.metric == "ppl")
                  & (long.length == TINY_TRAIN["seq_len"]) & (long.arch == "gru")].value
    half = stats.t.ppf(0.975, 2) * values.std() / 3 ** 0.5
    table = make_table(study, "md", stat="ci95")
    row = next(line for line in table.splitlines() if line.startswith("| gru "))
    assert f"{_number(values.mean())} ± {_number(half)}" in row
    assert "95% confidence interval" in table


def test_latex_is_well_formed_and_byte_stable(study):
    tex = make_table(study, "latex")
    assert tex == make_table(study, "latex")
    assert tex.count("{") == tex.count("}")
    for rule in ("\\toprule", "\\midrule", "\\bottomrule", "\\begin{tabular}", "\\end{table}"):
        assert tex.count(rule) == 1, rule
    assert re.search(r"(?<!\\)[_%#]", tex) is None, "special characters are escaped"
    assert "agreement\\_lm" in tex
    assert "\\textbf{" in tex and "$\\pm$" in tex
    header = tex.splitlines()[tex.splitlines().index("\\toprule") + 1]
    columns = header.count("&") + 1
    rows = [line for line in tex.splitlines() if line.endswith("\\\\")]
    assert all(line.count(" & ") + 1 == columns for line in rows), "every row has every column"


def test_captions_state_budget_seeds_test_versions_and_scoring(study):
    table = make_table(study, "md")
    assert "seeds per cell: 3–3" in table
    assert f"lm {TINY_TRAIN['steps']} steps of {TINY_TRAIN['batch_size']}×{TINY_TRAIN['seq_len']}" in table
    assert "Welch's t-test" in table
    assert "task versions: agreement_lm 1; lm 1" in table
    assert "scoring: agreement_lm P(correct verb form) > P(wrong form)" in table
    assert table.count("**") >= 2, "the best of each column is bold"


def test_significance_marks_on_a_known_case():
    samples = {0: [0.90, 0.91, 0.89], 1: [0.60, 0.62, 0.61], 2: [0.88, 0.90, 0.89]}
    # 2 is 0.01 below the best with spreads of 0.01 (p ≈ 0.29); 1 is 0.29 below (p < 0.001)
    assert rank_column(samples, "higher") == {0: "best", 2: "tie"}
    assert rank_column({0: [10.0, 11.0, 12.0], 1: [20.0, 21.0, 22.0], 2: [10.5, 11.5, 12.5]}, "lower") == \
        {0: "best", 2: "tie"}
    assert rank_column({0: [1.0], 1: [0.5]}, "higher") == {0: "best"}, "one seed: best only, no test"
    assert rank_column(samples, None) == {}


def test_efficiency_table_covers_the_tasks_that_train(study):
    table = make_table(study, "md", efficiency=True)
    assert "lm: train tok/s" in table and "lm: peak MB" in table
    assert "agreement_lm" not in table.split("\n\n")[0], "zero-shot runs have no training throughput"


def test_pareto_plot_is_written(study, tmp_path):
    paths = plot_pareto(study, tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_report_links_every_table_and_figure_it_writes(study, tmp_path):
    pytest.importorskip("wandb")
    out = tmp_path / "report"
    md = write_report(study, out, wandb=True).read_text()
    links = re.findall(r"\]\(([^)]+)\)", md)
    assert links and all((out / link).is_file() for link in links), "every link resolves"
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.parent.name in ("tables", "figures")}
    assert written <= set(links), f"not linked: {sorted(written - set(links))}"
    assert any(link.endswith("pareto.png") for link in links)
    assert "harness run --arch gru,cnn --tasks lm,agreement_lm" in md, "the reproducing command"
    html = (out / "report.html").read_text()
    assert "<table>" in html and "pareto.png" in html
    assert list((out / "wandb").glob("offline-run-*")), "tables and figures logged to W&B (offline)"
