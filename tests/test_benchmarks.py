"""The benchmark commands' own arithmetic (the measurements themselves are theirs to print)."""
import contextlib
import importlib.util
import sqlite3

from harness.store import RunStore
from harness.sweep import expand
from tests.conftest import ROOT


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_main_command_breakdown_splits_the_wall_time_at_the_first_start_and_the_last_end(tmp_path):
    main_command = _module("main_command")
    store = RunStore(tmp_path)
    configs = expand(["lstm", "transformer"], ["agreement"], size="tiny", budget="smoke")
    for cfg, status in zip(configs, ("finished", "failed")):
        assert store.claim(cfg)
        store.finish(cfg.run_id, status, [], {}, None if status == "finished" else "boom")
    with contextlib.closing(sqlite3.connect(tmp_path / "runs.sqlite")) as conn, conn:
        for cfg, (start, end) in zip(configs, ((1000.0, 1050.0), (1001.0, 1030.0))):
            conn.execute("UPDATE runs SET started_at = ?, finished_at = ? WHERE run_id = ?", (start, end, cfg.run_id))
    parts = main_command.breakdown(str(tmp_path), started=994.0, ended=1053.5)
    assert parts == {"runs": 2, "finished": 1, "wall_s": 59.5, "startup_s": 6.0, "run_s": 79.0,
                     "span_s": 50.0, "after_s": 3.5}
    assert main_command.describe(parts).startswith("1.0 min (60 s): start-up 6.0 s, first run start to last run "
                                                   "end 50 s, after the last run 3.5 s; 1 of 2 runs finished")
