"""Unusable, missing or empty-for-the-command stores, and empty selections: each an error that
names the culprit (exit 2, ``harness: error: ...`` or a usage message), never a traceback, and
nothing written: the store's files keep their bytes and a missing store is not created."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.metrics import Metric
from harness.report import _invocations, record_invocation
from harness.store import FINISHED, MissingStore, RunStore, StoreError
from harness.sweep import expand
from tests.conftest import DATA_DIR, ROOT, harness


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every name under ``root`` with its bytes (None for a folder)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    """The real command, in its own process (so a traceback would show on its stderr)."""
    env = {**os.environ, "HARNESS_DATA_DIR": str(DATA_DIR), "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def fake_store(root: Path, metrics: list[Metric]) -> RunStore:
    """A store holding one finished cnn/lm run with ``metrics``, without training anything."""
    store = RunStore(root)
    cfg = expand(["cnn"], ["lm"], device="cpu")[0]
    assert store.claim(cfg)
    store.finish(cfg.run_id, FINISHED, metrics, {"train_length": 16})
    return store


@pytest.fixture(scope="module")
def lm_only(tmp_path_factory) -> Path:
    """A store with no length buckets, no agreement and no throughput: nothing any plot draws."""
    root = tmp_path_factory.mktemp("lm_only")
    fake_store(root, [Metric("test", "ppl", 123.0), Metric("dev", "ppl", 130.0)])
    return root


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A folder with a garbage store, a regular file, and a real store with no plottable runs."""
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "runs.sqlite").write_bytes(b"this is not an SQLite database\n" * 40)
    (tmp_path / "afile").write_text("a regular file\n")
    return tmp_path


def assert_clean_error(proc: subprocess.CompletedProcess, *names: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "harness: error:" in proc.stderr, proc.stderr
    for name in names:
        assert name in proc.stderr, (name, proc.stderr)


@pytest.mark.parametrize("args,culprit", [
    (["table", "--results", "garbage"], "garbage/runs.sqlite"),
    (["table", "--results", "afile"], "afile"),
    (["table", "--results", "no/such/dir"], "no/such/dir"),
])
def test_unusable_or_missing_stores_are_errors_not_tracebacks(workdir, args, culprit):
    before = snapshot(workdir)
    assert_clean_error(cli(*args, cwd=workdir), culprit)
    assert snapshot(workdir) == before, "nothing written, nothing created"


@pytest.mark.parametrize("store,extra,culprit", [
    ("garbage", [], "garbage/runs.sqlite"),  # a writer: refused before anything is claimed or recorded
    ("afile", [], "afile"),
    ("afile", ["--dry-run"], "afile"),
    ("afile/sub", [], "afile/sub"),
])
def test_writers_refuse_unusable_stores_too(workdir, capsys, store, extra, culprit):
    before = snapshot(workdir)
    assert harness("run", "--arch", "lstm", "--tasks", "extrapolation", "--device", "cpu", "--no-progress",
                   "--results", workdir / store, *extra) == 2
    err = capsys.readouterr().err
    assert "harness: error:" in err and str(workdir / culprit) in err
    assert snapshot(workdir) == before


def test_a_plot_with_nothing_to_draw_is_an_error_not_a_traceback(lm_only, tmp_path):
    before = snapshot(lm_only)
    assert_clean_error(cli("plot", "extrapolation", "--results", lm_only, cwd=tmp_path),
                       "no length-bucketed results", str(lm_only))
    assert snapshot(lm_only) == before, "no plots folder, the store's bytes unchanged"


@pytest.mark.parametrize("kind,message", [("agreement", "no agreement results"),
                                          ("pareto", "no finished training runs with throughput")])
def test_other_plots_with_nothing_to_draw_say_so(lm_only, capsys, kind, message):
    before = snapshot(lm_only)
    assert harness("plot", kind, "--results", lm_only) == 2
    err = capsys.readouterr().err
    assert message in err and str(lm_only) in err
    assert snapshot(lm_only) == before


@pytest.mark.parametrize("command", [["table"], ["table", "--efficiency"], ["export"], ["export", "--format", "jsonl"],
                                     ["plot", "extrapolation"], ["plot", "pareto"], ["report", "--out", "{tmp}/rep"]])
def test_readers_of_a_missing_store_create_nothing(tmp_path, capsys, command):
    missing = tmp_path / "no" / "store"
    command = [c.replace("{tmp}", str(tmp_path)) for c in command]
    assert harness(*command, "--results", missing) == 2
    err = capsys.readouterr().err
    assert f"no run store at {missing}" in err
    assert snapshot(tmp_path) == {}, "neither the store nor an output was created"


def test_an_existing_folder_without_a_database_is_a_missing_store(tmp_path, capsys):
    assert harness("export", "--results", tmp_path, "--output", tmp_path / "out.csv") == 2
    assert f"no run store at {tmp_path}" in capsys.readouterr().err
    assert snapshot(tmp_path) == {}


def test_readers_leave_a_store_byte_for_byte(lm_only, capsys):
    before = snapshot(lm_only)
    assert harness("table", "--results", lm_only) == 0
    assert harness("export", "--results", lm_only) == 0
    assert "123.0" in capsys.readouterr().out
    assert snapshot(lm_only) == before, "no -wal or -shm left behind, the database's bytes unchanged"


def test_a_dry_run_creates_no_store(tmp_path, capsys):
    missing = tmp_path / "r"
    assert harness("run", "--arch", "lstm", "--tasks", "lm", "--results", missing, "--dry-run") == 0
    assert "1 runs, 0 already finished, 1 to run" in capsys.readouterr().out
    assert not missing.exists()


@pytest.mark.parametrize("args,option", [
    (["--arch", "", "--tasks", "lm"], "--arch"),
    (["--arch", "lstm", "--tasks", ""], "--tasks"),
    (["--arch", " , ", "--tasks", "lm"], "--arch"),
    (["--arch", "lstm", "--tasks", "lm", "--seeds", ""], "--seeds"),
])
def test_empty_selections_are_usage_errors(tmp_path, capsys, args, option):
    with pytest.raises(SystemExit) as exit_:
        harness("run", *args, "--results", tmp_path / "r")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage: harness run" in err and f"argument {option}: expected a comma-separated list" in err
    assert not (tmp_path / "r").exists()


def test_store_errors_from_the_api(tmp_path):
    with pytest.raises(MissingStore, match="no run store at"):
        RunStore(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is not a folder"):
        RunStore(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "runs.sqlite").write_bytes(b"")
    with pytest.raises(StoreError, match="not a run store's database"):
        RunStore(tmp_path / "empty", create=False)
    assert (tmp_path / "empty" / "runs.sqlite").read_bytes() == b""
    absent = RunStore(tmp_path / "absent", create=False, missing_ok=True)
    assert absent.status("0" * 16) is None and absent.runs().empty and absent.metrics().empty
    with pytest.raises(StoreError, match="reading only"):
        absent.claim(expand(["cnn"], ["lm"], device="cpu")[0])
    assert not (tmp_path / "absent").exists()


def test_a_truncated_command_record_is_skipped_with_a_warning(tmp_path, capsys, monkeypatch):
    efficiency = [Metric("run", "params_non_embedding", 1e5), Metric("train", "tokens_per_s", 1e4),
                  Metric("inference", "tokens_per_s", 2e4), Metric("run", "peak_memory_mb", 50.0)]
    store = fake_store(tmp_path / "store", [Metric("test", "ppl", 123.0, 16), Metric("dev", "ppl", 130.0, 16),
                                            *efficiency])
    log = store.root / "invocations.jsonl"
    first = json.dumps({"time": "t", "argv": ["run", "--arch", "cnn", "--tasks", "lm"], "git_sha": "x"})
    log.write_text(first + "\n" + first[:25])  # the second record cut short by a kill mid-write

    writes = []
    real_write = os.write
    monkeypatch.setattr("harness.report.os.write", lambda fd, data: writes.append(data) or real_write(fd, data))
    record_invocation(store, ["sweep", "study.yaml"])
    assert len(writes) == 1, "one record, one write"
    lines = log.read_text().splitlines()
    assert lines[1] == first[:25] and json.loads(lines[2])["argv"] == ["sweep", "study.yaml"]

    with pytest.warns(UserWarning, match=rf"invocations\.jsonl:2: skipped an unreadable command record"):
        entries = _invocations(store)
    assert [e["argv"][0] for e in entries] == ["run", "sweep"]

    with pytest.warns(UserWarning, match="invocations.jsonl:2"):
        assert harness("report", "--results", store.root, "--out", tmp_path / "report") == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "harness run --arch cnn --tasks lm" in md and "harness sweep study.yaml" in md
