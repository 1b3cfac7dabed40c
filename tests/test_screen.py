"""What `harness run` shows: the plan before it starts (runs to do and done, tasks × backbones ×
seeds, an estimate from the store's own finished runs or "no estimate yet"), the libraries' bars,
log lines and warnings silenced unless -v, a summary a terminal can show at the end (one headline
metric per task, backbones as rows, ≤ 120 columns) with the full tables written to files; the
report's HTML escapes what the store holds; parameter counts are given per task.

The launcher is replaced by one that records made-up finished runs (and makes the noise a library
would), so no model trains here."""
import logging
import os
import re
import warnings

import pytest

from harness.config import RunConfig
from harness.core.metrics import Metric
from harness.core.registry import TASKS
from harness.core.train_config import TrainConfig
from harness.store import FINISHED, RunStore
from harness.sweep import SweepSummary
from tests.conftest import TINY_TRAIN, harness

WIDTH = 120


def _record(store: RunStore, cfg: RunConfig, params: float = 1e5, wall: float = 30.0) -> None:
    """A finished run with a value for each of its task's table metrics."""
    cls = TASKS.get(cfg.task)
    length = cfg.train.seq_len if cls.table_at_train_length else None
    metrics = [Metric(split, name, 0.5 + 0.01 * cfg.seed, length) for split, name in cls.table_metrics]
    metrics += [Metric("run", "params_non_embedding", params), Metric("train", "tokens_per_s", 1000.0),
                Metric("inference", "tokens_per_s", 5000.0), Metric("run", "peak_memory_mb", 300.0),
                Metric("run", "wall_time_s", wall)]
    info = {"train_length": cfg.train.seq_len, "dtype": "fp32", "task_version": cls.version,
            "batch_shape": [cfg.train.batch_size, cfg.train.seq_len],
            "env": {"device_name": "cpu", "torch_version": "x", "python_version": "3", "git_sha": "abc"}}
    store.finish(cfg.run_id, FINISHED, metrics, info)


@pytest.fixture
def fake_launcher(monkeypatch):
    """The local launcher replaced: every run claimed is recorded as finished, after the noise
    third-party libraries make (a log line, a progress bar, a warning); what it saw is kept."""
    from harness.launchers import LAUNCHERS

    seen = {}

    def launch(configs, store, launch):
        import tqdm

        logging.getLogger("lm_eval.evaluator").warning("LIBRARY-LOG")
        for _ in tqdm.tqdm(range(3), desc="LIBRARY-BAR"):
            pass
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn("LIBRARY-WARNING")
        seen.update(warnings=len(caught), training_bar=launch.progress, tqdm_env=os.environ.get("TQDM_DISABLE"),
                    hf_env=os.environ.get("HF_DATASETS_DISABLE_PROGRESS_BARS"))
        summary = SweepSummary()
        for cfg in configs:
            if store.claim(cfg, retry_failed=launch.retry_failed):
                _record(store, cfg)
                summary.add(FINISHED)
            else:
                summary.skipped += 1
        return summary

    monkeypatch.setitem(LAUNCHERS, "local", launch)
    monkeypatch.setattr("harness.sweep.check_datasets", lambda configs, data_dir=None: None)
    return seen


def _summary(out: str) -> list[str]:
    """The lines between "ran: ..." and "full tables"."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ran: "))
    end = next(i for i, line in enumerate(lines) if line.startswith("full tables"))
    return [line for line in lines[start + 1:end] if line.strip()]


def test_the_main_command_plans_stays_quiet_and_ends_in_a_terminal_sized_summary(
        tmp_path, fake_launcher, capsys, caplog):
    before = os.environ.get("TQDM_DISABLE")
    rc = harness("run", "--arch", "lstm,transformer", "--tasks", "all", "--budget", "smoke", "--results", tmp_path,
                 "--device", "cpu")
    out, err = capsys.readouterr()
    assert rc == 0, err
    runs = RunStore(tmp_path).runs()
    tasks = sorted(set(runs.task))
    n = len(runs)
    # the plan, before anything runs
    assert out.startswith(f"plan: {n} runs, 0 already finished, {n} to run\n"), out[:300]
    assert re.search(r"\d+ tasks × 2 backbones × 1 seed \(0\), size tiny", out)
    assert "estimate: no estimate yet" in out
    # silence: no library bar, log line or warning reached the screen (or the log)
    assert "LIBRARY-BAR" not in out + err and "LIBRARY-LOG" not in out + err
    assert "LIBRARY-LOG" not in caplog.text and fake_launcher["warnings"] == 0
    assert fake_launcher["tqdm_env"] == "1" and fake_launcher["hf_env"] == "1", "workers inherit the quiet"
    assert os.environ.get("TQDM_DISABLE") == before, "the environment is restored afterwards"
    # the summary: backbones as rows, one headline column per task, no line over 120 characters
    summary = _summary(out)
    assert summary and max(map(len, summary)) <= WIDTH, max(summary, key=len)
    rows = [line for line in summary if line.startswith(("lstm", "transformer"))]
    assert len(rows) == 2 * len([line for line in summary if line.startswith("----")])  # 2 rows per block
    headers = " ".join(summary)
    for task in tasks:
        headline = TASKS.get(task).table_metrics[0]
        assert f"{headline[0]} {headline[1]}" in headers, (task, headline)
    # the full tables, written and named on the screen
    folder = tmp_path / "tables"
    for name in ("results", "efficiency", "task_lm", "task_extrapolation__parity"):
        for suffix in ("md", "tex", "csv"):
            assert (folder / f"{name}.{suffix}").is_file(), (name, suffix)
    for path in (folder / "results.md", folder / "efficiency.md", folder / "task_<task>.md"):
        assert str(path) in out, path
    words = " ".join(out.split())  # wrapped to the screen's width
    assert "<task>: agreement, agreement_lm," in words and "extrapolation__parity" in words
    assert "| lstm" in (folder / "results.md").read_text()


def test_the_plan_estimates_from_finished_runs_of_the_same_task(tmp_path, fake_launcher, capsys):
    assert harness("run", "--arch", "gru", "--tasks", "lm", "--results", tmp_path, "--device", "cpu") == 0
    capsys.readouterr()
    assert harness("run", "--arch", "gru,cnn", "--tasks", "lm,agreement", "--results", tmp_path, "--device", "cpu",
                   "--dry-run") == 0
    out = capsys.readouterr().out
    assert out.startswith("4 runs, 1 already finished, 3 to run")
    # cnn lm: timed by gru lm's 30 s (same task, size, budget); agreement has no finished run yet
    assert "estimate: about 30 s for 1 of the 3 runs to run" in out
    assert "no estimate yet for agreement" in out


def test_verbose_lets_the_libraries_speak(tmp_path, fake_launcher, capsys, caplog):
    caplog.set_level(logging.WARNING)
    assert harness("run", "--arch", "gru", "--tasks", "lm", "--results", tmp_path, "--device", "cpu", "-v") == 0
    out, err = capsys.readouterr()
    assert "LIBRARY-BAR" in err and "LIBRARY-LOG" in caplog.text
    assert fake_launcher["warnings"] == 1 and fake_launcher["tqdm_env"] is None


def test_params_are_given_per_task_never_averaged_across_tasks(tmp_path):
    from harness.tables import make_table

    store = RunStore(tmp_path)
    train = TrainConfig(**TINY_TRAIN)
    for arch in ("gru", "lstm"):
        for task, params in (("lm", 1e5), ("mt", 3e5)):  # mt's encoder–decoder is bigger
            cfg = RunConfig(arch=arch, task=task, train=train,
                            arch_options={"bidirectional": True} if task == "mt" else {})
            assert store.claim(cfg)
            _record(store, cfg, params=params)
    overall = make_table(store)
    header = overall.splitlines()[0]
    assert "params" not in header and "0.20M" not in overall, "no count that matches no model"
    assert "params: per task" in overall
    for task, shown in (("lm", "0.10M"), ("mt", "0.30M")):
        table = make_table(store, task=task)
        header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
        assert header[:3] == ["arch", "size", "params"], header
        assert all(line.split("|")[3].strip() == shown for line in table.splitlines()[2:4]), table
    efficiency = make_table(store, efficiency=True)
    head, first = efficiency.splitlines()[0], efficiency.splitlines()[2]
    assert "lm: params" in head and "mt: params" in head
    assert "0.10M" in first and "0.30M" in first


def test_the_tables_of_every_format_made_at_once_are_those_made_one_by_one(tmp_path):
    """write_tables reads and ranks a table once for its three files: each text is what
    make_table gives for that format alone (seeds to rank, a failed run to note)."""
    from harness.tables import make_table, make_tables

    store = RunStore(tmp_path)
    train = TrainConfig(**TINY_TRAIN)
    for arch in ("gru", "lstm"):
        for seed in (0, 1, 2):
            cfg = RunConfig(arch=arch, task="lm", seed=seed, train=train)
            assert store.claim(cfg)
            _record(store, cfg, params=1e5 * (1 + seed))
    failed = RunConfig(arch="rnn", task="lm", train=train)
    assert store.claim(failed)
    store.finish(failed.run_id, "diverged", [], {}, "loss became nan")
    for selection in ({}, {"task": "lm"}, {"efficiency": True}, {"stat": "ci95"}):
        together = make_tables(store, **selection)
        assert together == {fmt: make_table(store, fmt, **selection) for fmt in ("md", "latex", "csv")}
        assert "1 diverged" in together["md"] and "\\textbf" in together["latex"], together["latex"]
    lstm = next(row for row in together["csv"].splitlines() if row.startswith("lstm,tiny,")).split(",")
    assert "0.51" in lstm, "the mean of seeds 0-2 (0.50, 0.51, 0.52)"


def test_the_html_report_escapes_what_the_store_holds(tmp_path):
    from harness.report import write_report

    root = tmp_path / "<script>alert(1)</script>"
    store = RunStore(root)
    train = TrainConfig(**TINY_TRAIN)
    lm = RunConfig(arch="gru", task="lm", train=train)
    assert store.claim(lm)
    _record(store, lm)
    for i, path in enumerate(("<img src=x onerror=alert(1)>.jsonl", "plain.jsonl")):
        cfg = RunConfig(arch="gru", task="minimal_pairs", task_options={"path": path}, train=train, seed=i)
        assert store.claim(cfg)
        _record(store, cfg)
    broken = RunConfig(arch="lstm", task="lm", train=train)
    assert store.claim(broken)
    store.finish(broken.run_id, "failed", [], {}, "boom\n<script>alert(2)</script> [click](javascript:alert(3))")
    write_report(store, tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text()
    body = page[page.index("<body>"):]
    assert "<script" not in page and "<img src=x" not in body, "raw HTML from the store is text"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body, "the store name is shown, escaped"
    assert "&lt;img src=x onerror=alert(1)&gt;" in body, "a config value in a row label is shown, escaped"
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in body, "an error message is shown, escaped"
    assert not re.search(r"""(href|src)=["']?\s*javascript""", page, re.I), "no javascript: link"
    assert "<title>harness report: script&gt;</title>" in page
    assert "<table>" in body, "the Markdown is still rendered"


def test_the_progress_line_counts_runs_and_times_the_rest_by_the_store_then_the_pace(tmp_path):
    from harness.screen import Progress, run_name
    from harness.sweep import expand

    store = RunStore(tmp_path)
    gru_lm, gru_agreement, cnn_lm, cnn_agreement = expand(["gru", "cnn"], ["lm", "agreement"])
    assert (gru_lm.arch, gru_lm.task, cnn_agreement.arch, cnn_agreement.task) == ("gru", "lm", "cnn", "agreement")
    now = [100.0]
    progress = Progress([gru_lm, gru_agreement, cnn_lm, cnn_agreement], store, clock=lambda: now[0])
    store.claim(gru_lm)
    _record(store, gru_lm, wall=30.0)
    now[0] = 120.0
    # cnn lm is timed by gru lm's 30 s; the two agreement runs at this sweep's pace in training
    # work: lm's 400 steps of 32×64 tokens took 20 s, so agreement's 600 of 64×8 (3/8 of that
    # work, at the same size) take 7.5 s each, not 20 as a run-by-run pace would have it
    assert progress.line("gru lm", gru_lm.run_id, "finished in 20 s") == \
        "[1/4] gru lm: finished in 20 s · 20 s elapsed, about 45 s left"
    now[0] = 130.0
    store.claim(gru_agreement)
    store.finish(gru_agreement.run_id, "failed", [], {}, "recorded before this sweep")
    assert progress.skipped(gru_agreement) == f"[2/4] {run_name(gru_agreement)}: failed, skipped · 30 s elapsed, " \
        "about 41 s left"  # 30 + 3/8 of 30 s: a skipped run adds no work done
    store.claim(cnn_lm)
    _record(store, cnn_lm, wall=50.0)
    now[0] = 180.0
    # the lm runs' median (40 s) no longer matters: the only run left is an agreement run, at
    # 3/8 of one lm run's work, and two took 80 s
    assert progress.line("cnn lm", cnn_lm.run_id, "finished") == \
        "[3/4] cnn lm: finished · 80 s elapsed, about 15 s left"
    assert progress.line("cnn agreement", cnn_agreement.run_id, "finished") == \
        "[4/4] cnn agreement: finished · 80 s elapsed"


def test_workers_share_the_stored_times_of_the_runs_left(tmp_path):
    from harness.screen import Progress
    from harness.sweep import expand

    store = RunStore(tmp_path)
    gru_lm, cnn_lm, rnn_lm = expand(["gru", "cnn", "rnn"], ["lm"])
    progress = Progress([gru_lm, cnn_lm, rnn_lm], store, clock=lambda: 0.0, workers=2)
    store.claim(gru_lm)
    _record(store, gru_lm, wall=30.0)
    # two lm runs left at gru lm's 30 s each, two workers: about 30 s, not 60
    assert progress.line("gru lm", gru_lm.run_id, "finished") == "[1/3] gru lm: finished · 0 s elapsed, about 30 s left"


def test_runs_that_train_nothing_are_timed_by_those_that_have_finished(tmp_path):
    from harness.screen import Progress
    from harness.sweep import expand

    store = RunStore(tmp_path)
    lm, figqa, wsc = expand(["gru"], ["figqa", "wsc273"])
    agreement, = expand(["gru"], ["agreement"])
    now = [0.0]
    progress = Progress([lm, figqa, wsc, agreement], store, clock=lambda: now[0])
    store.claim(lm)
    _record(store, lm, wall=20.0)
    now[0] = 20.0
    # agreement at lm's pace in training work (3/8 of it: 7.5 s); the two scores, which train
    # nothing, are not timed before one of them has finished
    assert progress.line("gru lm", lm.run_id, "finished") == "[1/4] gru lm: finished · 20 s elapsed, about 8 s left"
    store.claim(figqa)
    _record(store, figqa, wall=6.0)
    now[0] = 26.0
    # wsc273 at figqa's 6 s; agreement at 3/8 of the 26 s that one lm run's work took so far
    assert progress.line("gru figqa", figqa.run_id, "finished") == \
        "[2/4] gru figqa: finished · 26 s elapsed, about 16 s left"


def test_runs_that_trained_nothing_are_paced_per_run(tmp_path):
    from harness.screen import Progress
    from harness.sweep import expand

    store = RunStore(tmp_path)
    lm, figqa, wsc = expand(["gru"], ["figqa", "wsc273"])
    now = [0.0]
    progress = Progress([figqa, wsc], store, clock=lambda: now[0])
    now[0] = 6.0  # a zero-shot score has no training work to pace the rest by
    assert progress.line("gru figqa", figqa.run_id, "finished") == "[1/2] gru figqa: finished · 6 s elapsed, about 6 s left"


def test_a_sweep_that_has_run_nothing_yet_gives_no_pace_to_time_by(tmp_path):
    from harness.screen import Progress
    from harness.sweep import expand

    configs = expand(["gru"], ["lm", "agreement"])
    progress = Progress(configs, RunStore(tmp_path), clock=lambda: 0.0)
    assert progress.line("gru lm", configs[0].run_id, "finished, skipped", executed=False) == \
        "[1/2] gru lm: finished, skipped · 0 s elapsed"


def test_the_training_bar_is_drawn_on_a_terminal_only(tmp_path, fake_launcher, capsys, monkeypatch):
    assert harness("run", "--arch", "gru", "--tasks", "lm", "--results", tmp_path / "a", "--device", "cpu") == 0
    assert fake_launcher["training_bar"] is False, "a log (not a terminal) gets one line per run"
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert harness("run", "--arch", "gru", "--tasks", "lm", "--results", tmp_path / "b", "--device", "cpu") == 0
    assert fake_launcher["training_bar"] is True
    assert harness("run", "--arch", "gru", "--tasks", "lm", "--results", tmp_path / "c", "--device", "cpu",
                   "--no-progress") == 0
    assert fake_launcher["training_bar"] is False


def test_a_run_line_names_the_task_with_its_sweep_axes():
    from harness.screen import run_name
    from harness.sweep import expand

    names = [run_name(cfg) for cfg in expand(["gru"], ["extrapolation"])]
    assert sorted(n.split()[1] for n in names) == ["extrapolation/dyck", "extrapolation/parity", "extrapolation/recall"]
