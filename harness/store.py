"""The run store: SQLite (WAL) for configs, statuses and metrics, plus one folder per run.

A run's metrics and its final status are written in one transaction, so a reader never sees a
half-finished run. Several processes may write at once; each claims a run atomically before it
trains it.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sqlite3
import time
from pathlib import Path

import pandas as pd

from harness.config import RunConfig
from harness.core.metrics import Metric

FINISHED = "finished"
RUNNING = "running"
#: terminal statuses of runs that did not finish; kept, shown in tables, retried on request
FAILED_STATUSES = ("failed", "diverged", "oom")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    arch TEXT NOT NULL, task TEXT NOT NULL, size TEXT NOT NULL, seed INTEGER NOT NULL,
    label TEXT NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    info TEXT,
    error TEXT,
    host TEXT, pid INTEGER,
    started_at REAL, finished_at REAL
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    split TEXT NOT NULL, metric TEXT NOT NULL, length INTEGER, value REAL
);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics(run_id);
"""

_RUN_ID = re.compile(r"^[0-9a-f]{16}$")


def left_to_run(status: str | None, retry_failed: bool = False) -> bool:
    """Whether a sweep runs a config whose recorded status is ``status`` (None: not recorded):
    not when finished, nor when it failed, diverged or ran out of memory, unless retrying those."""
    return status != FINISHED and (retry_failed or status not in FAILED_STATUSES)


class StoreError(ValueError):
    """The run store cannot be used as asked: missing, not a folder, or not a run store's
    database. The message names the path."""


class MissingStore(StoreError):
    """No run store at the path (a reader asked for one, so nothing was created)."""


class RunStore:
    def __init__(self, root: str | Path, create: bool = True, missing_ok: bool = False):
        """Open the store at ``root``. ``create``: make the folder and the database when they are
        missing (writers); otherwise a missing store raises :class:`MissingStore` and nothing is
        written, or, with ``missing_ok``, reads as an empty store that refuses writes (a dry run).
        A path that is a file, or a database that is not a run store's, raises :class:`StoreError`."""
        self.root = Path(root)
        self.path = self.root / "runs.sqlite"
        self._absent = False
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"run store {self.root} is not a folder (a run store is a folder holding "
                             f"{self.path.name})")
        if self.path.exists() and not self.path.is_file():
            raise StoreError(f"run store database {self.path} is not a file")
        if not self.path.exists():
            if not create:
                if missing_ok:
                    self._absent = True
                    return
                raise MissingStore(f"no run store at {self.root} (no {self.path.name} there); "
                                   "`harness run --results DIR` records one")
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StoreError(f"cannot create run store {self.root}: {err.strerror or err}") from None
        try:
            if create:
                self._create_schema()
            else:  # read only: look before anything (journal mode included) is written
                with contextlib.closing(sqlite3.connect(self.path, timeout=60)) as conn:
                    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if not {"runs", "metrics"} <= tables:
                    raise StoreError(f"{self.path} is not a run store's database (no runs and metrics tables)")
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path} is not a run store's database: {err}") from None

    def _create_schema(self, patience: float = 60.0) -> None:
        """Create the tables, even while other processes create or write the same store. The
        schema is written under a write lock taken up front; SQLite answers "locked" without
        waiting in two cases a busy timeout does not cover (two connections switching a new
        database to WAL together, and a write from a read snapshot another writer has moved
        past), so those are retried until ``patience`` seconds have passed."""
        deadline = time.monotonic() + patience
        pause = 0.01
        while True:
            try:
                with contextlib.closing(self._connect()) as conn:
                    conn.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def _connect(self) -> sqlite3.Connection:
        if self._absent:  # a missing store opened with missing_ok: reads see an empty one
            conn = sqlite3.connect(":memory:", isolation_level=None)
            conn.executescript(SCHEMA)
            return conn
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=60000")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @contextlib.contextmanager
    def _transaction(self):
        """A write transaction that takes the database lock at once; committed unless it raises
        (a ``return`` inside commits what was written so far, which is nothing on early exits)."""
        if self._absent:
            raise StoreError(f"no run store at {self.root}: it was opened for reading only")
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def run_dir(self, run_id: str) -> Path:
        """The run's folder; ids are hex digests, so it can never point outside the store."""
        if not _RUN_ID.match(run_id):
            raise ValueError(f"not a run id: {run_id!r}")
        return self.root / "runs" / run_id

    def status(self, run_id: str) -> str | None:
        with contextlib.closing(self._connect()) as conn:
            row = conn.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return row[0] if row else None

    def claim(self, cfg: RunConfig, retry_failed: bool = False) -> bool:
        """Mark ``cfg`` as running by this process, unless it is finished, recorded as failed
        (and ``retry_failed`` is off) or being run by a live process. True when claimed."""
        host, pid = socket.gethostname(), os.getpid()
        with self._transaction() as conn:
            row = conn.execute("SELECT status, host, pid FROM runs WHERE run_id=?",
                               (cfg.run_id,)).fetchone()
            if row is not None:
                status, other_host, other_pid = row
                if not left_to_run(status, retry_failed):
                    return False
                if status == RUNNING and _alive(other_host, other_pid) and other_pid != pid:
                    return False
                conn.execute("DELETE FROM metrics WHERE run_id=?", (cfg.run_id,))
            conn.execute(
                "INSERT OR REPLACE INTO runs (run_id, arch, task, size, seed, label, status, config,"
                " host, pid, started_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (cfg.run_id, cfg.arch, cfg.task, cfg.size, cfg.seed, cfg.label, RUNNING,
                 cfg.model_dump_json(), host, pid, time.time()))
            return True

    def finish(self, run_id: str, status: str, metrics: list[Metric], info: dict,
               error: str | None = None) -> None:
        """Record the outcome of a claimed run: metrics and status in one transaction."""
        if status != FINISHED and status not in FAILED_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        with self._transaction() as conn:
            conn.execute("DELETE FROM metrics WHERE run_id=?", (run_id,))
            conn.executemany(
                "INSERT INTO metrics (run_id, split, metric, length, value) VALUES (?,?,?,?,?)",
                [(run_id, m.split, m.name, m.length, float(m.value)) for m in metrics])
            conn.execute("UPDATE runs SET status=?, info=?, error=?, finished_at=? WHERE run_id=?",
                         (status, json.dumps(info, default=str), error, time.time(), run_id))

    def running_elsewhere(self, run_id: str) -> bool:
        """Whether another live process has claimed the run and not finished it."""
        with contextlib.closing(self._connect()) as conn:
            row = conn.execute("SELECT status, host, pid FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return (row is not None and row[0] == RUNNING and _alive(row[1], row[2])
                and (row[1], row[2]) != (socket.gethostname(), os.getpid()))

    def release(self, run_id: str) -> None:
        """Forget a claimed run that was interrupted, so it is neither shown nor skipped."""
        with contextlib.closing(self._connect()) as conn:
            conn.execute("DELETE FROM runs WHERE run_id=? AND status=?", (run_id, RUNNING))

    def claimed_by(self, pid: int) -> list[str]:
        """Runs this host's process ``pid`` has claimed and not finished."""
        with contextlib.closing(self._connect()) as conn:
            rows = conn.execute("SELECT run_id FROM runs WHERE status=? AND host=? AND pid=?",
                                (RUNNING, socket.gethostname(), pid)).fetchall()
        return [r[0] for r in rows]

    def record(self, run_id: str) -> dict:
        """One run's status, info, error and metrics, as plain data."""
        with contextlib.closing(self._connect()) as conn:
            status, info, error = conn.execute("SELECT status, info, error FROM runs WHERE run_id=?",
                                               (run_id,)).fetchone()
            metrics = conn.execute("SELECT split, metric, length, value FROM metrics WHERE run_id=?",
                                   (run_id,)).fetchall()
        return {"status": status, "info": json.loads(info or "{}"), "error": error,
                "metrics": [{"split": s, "metric": m, "length": n, "value": v} for s, m, n, v in metrics]}

    def runs(self) -> pd.DataFrame:
        """One row per recorded run (runs still in progress are left out)."""
        with contextlib.closing(self._connect()) as conn:
            frame = pd.read_sql_query(
                "SELECT * FROM runs WHERE status != ? ORDER BY arch, task, size, seed",
                conn, params=(RUNNING,))
        return frame

    def metrics(self) -> pd.DataFrame:
        """Long format: one row per run × split × metric × length, with the run's identity."""
        with contextlib.closing(self._connect()) as conn:
            return pd.read_sql_query(
                "SELECT r.run_id, r.arch, r.label, r.task, r.size, r.seed, r.status,"
                " m.split, m.metric, m.length, m.value"
                " FROM metrics m JOIN runs r USING (run_id) WHERE r.status != ?"
                " ORDER BY r.arch, r.label, r.task, r.size, r.seed, m.split, m.metric, m.length",
                conn, params=(RUNNING,))


def _alive(host: str | None, pid: int | None) -> bool:
    """Whether the process that claimed a run may still be running it."""
    if host != socket.gethostname():
        return True  # another machine's process: assume it is alive
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
