"""The harness command end to end on real data, and its answers to bad input."""
import json
import math
import subprocess
import sys

import pandas as pd
import pytest
import torch

from architectures.sizing import build_backbone
from harness.config import RunConfig
from harness.core.registry import TASKS
from harness.store import RunStore
from tests.conftest import DATA_DIR, TINY_SETS, TINY_TRAIN, harness
from tests.test_bench import assert_git_sha


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("runs")
    rc = harness("run", "--arch", "lstm,transformer", "--tasks", "lm", "--results", root,
                 "--data-dir", data_dir, "--device", "cpu", "--no-progress", *TINY_SETS)
    assert rc == 0
    return root


def test_smoke_run_records_every_number(smoke_store):
    runs = RunStore(smoke_store).runs()
    assert sorted(runs.arch) == ["lstm", "transformer"] and (runs.status == "finished").all()
    m = RunStore(smoke_store).metrics()
    for arch in ("lstm", "transformer"):
        mine = m[m.arch == arch]
        ppl = mine.query("split == 'test' and metric == 'ppl' and length == 16").value
        assert len(ppl) == 1 and 1 < ppl.iloc[0] < 33278
        value = {}
        for split, metric in [("train", "tokens_per_s"), ("inference", "tokens_per_s"),
                              ("run", "peak_memory_mb"), ("run", "wall_time_s"),
                              ("run", "params_non_embedding")]:
            values = mine[(mine.split == split) & (mine.metric == metric)].value
            assert len(values) == 1, (arch, split, metric)
            value[split, metric] = values.iloc[0]
        # every step is timed (no warm-up under 10 steps) and so are five forward passes of one
        # training batch, at least three of them as long as their median: all inside the run
        steps, batch = TINY_TRAIN["steps"], TINY_TRAIN["batch_size"] * TINY_TRAIN["seq_len"]
        timed = steps * batch / value["train", "tokens_per_s"] + 3 * batch / value["inference", "tokens_per_s"]
        assert 0 < timed < value["run", "wall_time_s"], (arch, value)
        # the resident set of a process with torch and WikiText-2 loaded, in MB (not kB, not bytes)
        assert 100 < value["run", "peak_memory_mb"] < 64 * 1024, (arch, value)
        cfg = RunConfig.model_validate_json(runs[runs.arch == arch].config.iloc[0])
        backbone = build_backbone(cfg.arch, cfg.size, cfg.arch_options)
        assert value["run", "params_non_embedding"] == backbone.num_parameters() > 0, arch
    info = json.loads(runs["info"].iloc[0])
    assert_git_sha(info["env"]["git_sha"])
    assert info["env"]["torch_version"] == torch.__version__
    assert info["env"]["device_name"].endswith(" threads)"), info["env"]
    assert info["memory_kind"].startswith("peak_rss") and info["batch_shape"] == [4, 16]
    for run_id in runs.run_id:
        folder = RunStore(smoke_store).run_dir(run_id)
        assert (folder / "best.pt").is_file() and (folder / "config.json").is_file()


def test_second_run_trains_nothing(smoke_store, data_dir, capsys):
    rc = harness("run", "--arch", "lstm,transformer", "--tasks", "lm", "--results", smoke_store,
                 "--data-dir", data_dir, "--device", "cpu", "--no-progress", *TINY_SETS)
    out = capsys.readouterr().out
    assert rc == 0
    assert "ran: nothing; already recorded: 2" in out
    assert "lstm" in out and "transformer" in out


@pytest.mark.parametrize("fmt,marker", [("md", "| lstm"), ("latex", r"\begin{tabular}"), ("csv", "lm: test ppl mean")])
def test_table_formats(smoke_store, capsys, fmt, marker):
    assert harness("table", "--results", smoke_store, "--format", fmt) == 0
    out = capsys.readouterr().out
    assert marker in out and "transformer" in out


def test_export_is_long_format_readable_by_pandas(smoke_store, tmp_path):
    target = tmp_path / "all.csv"
    assert harness("export", "--results", smoke_store, "--output", target) == 0
    frame = pd.read_csv(target)
    assert list(frame.columns) == ["run_id", "arch", "label", "task", "size", "seed", "status",
                                   "split", "metric", "length", "value"]
    lengths = set(frame[(frame.metric == "ppl") & (frame.split == "test")].length)
    assert lengths == {16, 32, 64}  # L, 2L, 4L


def test_trained_model_reloads_from_its_checkpoint(smoke_store, lm_task):
    from harness.runner import load_trained

    store = RunStore(smoke_store)
    row = store.metrics().query("arch == 'lstm' and split == 'test' and metric == 'ppl' and length == 16").iloc[0]
    cfg, model = load_trained(store, row.run_id, DATA_DIR)
    again = lm_task.evaluate(model, "test", cfg.train, cfg.train.final_eval_tokens)
    assert next(m.value for m in again if m.name == "ppl" and m.length == 16) == pytest.approx(row.value, rel=1e-6)


def test_seeds_are_averaged_in_the_table(tmp_path, data_dir, capsys):
    rc = harness("run", "--arch", "cnn", "--tasks", "lm", "--seeds", "0,1", "--results", tmp_path,
                 "--data-dir", data_dir, "--device", "cpu", "--no-progress", *TINY_SETS, "--set", "steps=3")
    assert rc == 0
    out = capsys.readouterr().out
    assert "seeds per cell: 2–2" in out and "±" in next(line for line in out.splitlines() if line.startswith("cnn"))
    table = (tmp_path / "tables" / "results.md").read_text()  # the full table, named on the screen
    assert str(tmp_path / "tables" / "results.md") in out
    row = next(line for line in table.splitlines() if line.startswith("| cnn"))
    assert row.count("±") >= 4  # ppl, ppl, throughput, throughput, memory: mean ± std over 2 seeds
    assert "seeds per cell: 2–2" in table


@pytest.mark.parametrize("args,message", [
    (["--arch", "lstn", "--tasks", "lm"], "unknown architecture 'lstn'; did you mean 'lstm' or"),
    (["--arch", "lstm", "--tasks", "lmm"], "unknown task 'lmm'; did you mean 'lm'"),
    (["--arch", "lstm", "--tasks", "lm", "--size", "smal"], "unknown size preset 'smal'; did you mean 'small'?"),
    (["--arch", "lstm", "--tasks", "lm", "--budget", "smoek"], "did you mean 'smoke'?"),
    (["--arch", "transformer", "--tasks", "lm", "--set", "positon=rope"], "unknown setting 'positon'; did you mean 'position'"),
    (["--arch", "lstm", "--tasks", "lm", "--set", "lr=-1"], "lr"),
    (["--arch", "transformer", "--tasks", "lm", "--set", "position=rotary"], "position"),
    (["--arch", "lstm", "--tasks", "lm", "--set", "bidirectional=true"], "causal backbone"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, data_dir, capsys, args, message):
    assert harness("run", *args, "--results", tmp_path, "--data-dir", data_dir, "--no-progress") == 2
    assert message in capsys.readouterr().err
    assert RunStore(tmp_path).runs().empty


def test_missing_dataset_says_what_where_and_how(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    empty = tmp_path / "nothing-here"
    rc = harness("run", "--arch", "lstm", "--tasks", "lm", "--results", tmp_path / "r", "--data-dir", empty)
    err = capsys.readouterr().err
    assert rc == 2
    assert "dataset 'wikitext2' not found" in err and str(empty / "wikitext2") in err
    assert "--data-dir" in err and "HARNESS_DATA_DIR" in err
    assert not (tmp_path / "r").exists(), "a rejected command writes nothing, not even its invocation"


@pytest.mark.parametrize("launcher", ["local", "local-workers", "ray"])
def test_a_missing_dataset_stops_every_launcher_before_it_claims_a_run(tmp_path, monkeypatch, launcher):
    from harness.core.data import MissingDataset
    from harness.launchers import Launch, run_local, run_ray
    from harness.sweep import expand

    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    store = RunStore(tmp_path / "r")
    configs = expand(["gru"], ["agreement_lm"])
    launch = Launch(data_dir=str(tmp_path / "nothing-here"), workers=2 if launcher == "local-workers" else None)
    with pytest.raises(MissingDataset, match="wikitext2"):
        (run_ray if launcher == "ray" else run_local)(configs, store, launch)
    assert store.runs().empty and all(store.status(c.run_id) is None for c in configs)


def test_all_tasks_and_set_expansion_in_a_dry_run(tmp_path, capsys):
    rc = harness("run", "--arch", "transformer,lstm", "--tasks", "all", "--results", tmp_path, "--dry-run",
                 "--set", "position=none,sinusoidal,learned,rope,alibi", "--seeds", "0,1")
    out = capsys.readouterr().out
    per_task = 5 * 2 + 2  # five position schemes for the transformer, the LSTM once; two seeds
    names = [t for t in TASKS.names() if TASKS.get(t).in_all]
    variants = sum(math.prod(len(v) for v in TASKS.get(t).sweep_axes.values()) for t in names)
    extra = {TASKS.get(t).upstream for t in names} - {None} - set(names)  # upstream runs added
    assert rc == 0 and f"{per_task * (variants + len(extra))} runs, 0 already finished" in out


def test_list_and_console_entry_point():
    out = subprocess.run([sys.executable, "-m", "harness", "list"], capture_output=True, text=True, check=True).stdout
    for name in ("rnn", "lstm", "gru", "cnn", "transformer", "lm", "tiny", "small", "base"):
        assert name in out
    assert "budgets: smoke, study, full" in out, "lm's budgets"
    assert any(line.split()[:1] == ["hf:<model>"] and "reference" in line for line in out.splitlines())


def test_sigterm_mid_run_leaves_nothing_half_written(tmp_path, data_dir):
    import signal
    import time

    cmd = [sys.executable, "-m", "harness", "run", "--arch", "gru", "--tasks", "lm", "--results", str(tmp_path),
           "--data-dir", str(data_dir), "--device", "cpu", "--no-progress", *TINY_SETS, "--set", "steps=100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = RunStore(tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline:
        with store._connect() as conn:
            if conn.execute("SELECT count(*) FROM runs WHERE status='running'").fetchone()[0]:
                break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the run never started")
    time.sleep(1.0)  # well inside training
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    with store._connect() as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM metrics").fetchone()[0] == 0


def test_a_closed_pipe_ends_the_command_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "harness", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before the command writes (like `| head`)
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_planning_a_sweep_and_ranking_one_seed_load_neither_scikit_learn_nor_scipy_stats():
    """They take a second or more each to import: only a probe (scikit-learn) and a t-test
    between seeds (scipy.stats) load them."""
    code = ("import sys; from harness.core.registry import selected_tasks; from harness.stats import rank_column; "
            "selected_tasks(['all']); assert rank_column({'a': [1.0], 'b': [2.0]}, 'higher') == {'b': 'best'}; "
            "print(sorted(m for m in ('sklearn', 'scipy.stats') if m in sys.modules)); "
            "rank_column({'a': [1.0, 1.1], 'b': [2.0, 2.2]}, 'higher'); print('scipy.stats' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:2] == ["[]", "True"], done.stdout
