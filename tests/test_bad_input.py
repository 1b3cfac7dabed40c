"""Bad input, one row a case: every row runs the real `harness` command in a subprocess and must
exit non-zero (2 for usage and input errors) with a message naming the culprit, print no
traceback, and leave the store's bytes exactly as they were (or create nothing at all)."""
import concurrent.futures
import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import RunConfig
from harness.core.metrics import Metric
from harness.core.train_config import TrainConfig
from harness.store import FINISHED, RunStore
from tests.conftest import DATA_DIR


def _files(root: Path) -> dict:
    """Every file under ``root`` with its bytes: the store's whole state."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _setup(tmp: Path) -> dict[str, Path]:
    """The files the rows point at: a store with one finished run, and broken inputs."""
    store = tmp / "store"
    s = RunStore(store)
    cfg = RunConfig(arch="gru", task="lm", train=TrainConfig(steps=1, batch_size=1, seq_len=4))
    s.claim(cfg)
    s.finish(cfg.run_id, FINISHED, [Metric("test", "ppl", 5.0, 4)], {"train_length": 4})
    del s
    (tmp / "notsqlite").mkdir()
    (tmp / "notsqlite" / "runs.sqlite").write_bytes(b"this is not a database\n" * 10)
    (tmp / "afile").write_text("a regular file\n")
    (tmp / "pairs.jsonl").write_text('{"sentence_good": "a b .", "sentence_bad": "b a ."}\n{not json\n')
    (tmp / "truncated.jsonl.gz").write_bytes(gzip.compress(b'{"sentence_good": "a", "sentence_bad": "b"}\n' * 50)[:40])
    (tmp / "garbage.conll.gz").write_bytes(b"\x1f\x8b garbage that is no gzip stream")
    (tmp / "bad.conll").write_text("EU B-ORG\nrejects\n")
    (tmp / "src.txt").write_text("one\ntwo\n")
    (tmp / "tgt.txt").write_text("eins\n")
    (tmp / "notyaml.yaml").write_text("archs: [lstm\n")
    (tmp / "unknownkey.yaml").write_text("archs: [lstm]\ntasks: [lm]\nseedz: [0]\n")
    return {"store": store}


#: (id, arguments with {tmp} for the case's folder, exit status, text the error must contain)
CASES = [
    ("unknown-arch", ["run", "--arch", "lstn", "--tasks", "lm", "--results", "{tmp}/store"], 2, "did you mean 'lstm' or"),
    ("unknown-task", ["run", "--arch", "lstm", "--tasks", "lmm", "--results", "{tmp}/store"], 2, "did you mean 'lm'"),
    ("unknown-size", ["run", "--arch", "lstm", "--tasks", "lm", "--size", "smal", "--results", "{tmp}/store"], 2,
     "did you mean 'small'?"),
    ("unknown-budget", ["run", "--arch", "lstm", "--tasks", "lm", "--budget", "smoek", "--results", "{tmp}/store"], 2,
     "did you mean 'smoke'?"),
    ("unknown-setting", ["run", "--arch", "transformer", "--tasks", "lm", "--set", "positon=rope",
                         "--results", "{tmp}/store"], 2, "did you mean 'position'"),
    ("set-without-value", ["run", "--arch", "lstm", "--tasks", "lm", "--set", "lr", "--results", "{tmp}/store"], 2,
     "--set expects key=value"),
    ("negative-lr", ["run", "--arch", "lstm", "--tasks", "lm", "--set", "lr=-1", "--results", "{tmp}/store"], 2, "lr"),
    ("zero-steps", ["run", "--arch", "lstm", "--tasks", "lm", "--set", "steps=0", "--results", "{tmp}/store"], 2,
     "steps"),
    ("negative-batch", ["run", "--arch", "lstm", "--tasks", "lm", "--set", "batch_size=-4", "--results", "{tmp}/store"],
     2, "batch_size"),
    ("bad-option-value", ["run", "--arch", "transformer", "--tasks", "lm", "--set", "position=rotary",
                          "--results", "{tmp}/store"], 2, "position"),
    ("bidirectional-lm", ["run", "--arch", "lstm", "--tasks", "lm", "--set", "bidirectional=true",
                          "--results", "{tmp}/store"], 2, "causal backbone"),
    ("empty-arch", ["run", "--arch", "", "--tasks", "lm", "--results", "{tmp}/store"], 2, "--arch"),
    ("empty-tasks", ["run", "--arch", "lstm", "--tasks", "", "--results", "{tmp}/store"], 2, "--tasks"),
    ("empty-seeds", ["run", "--arch", "lstm", "--tasks", "lm", "--seeds", "", "--results", "{tmp}/store"], 2, "--seeds"),
    ("sweep-not-yaml", ["sweep", "{tmp}/notyaml.yaml", "--results", "{tmp}/store"], 2, "notyaml.yaml:2"),
    ("sweep-unknown-key", ["sweep", "{tmp}/unknownkey.yaml", "--results", "{tmp}/store"], 2, "seedz"),
    ("sweep-missing", ["sweep", "{tmp}/nowhere.yaml", "--results", "{tmp}/store"], 2, "nowhere.yaml"),
    ("pairs-malformed-line", ["run", "--arch", "gru", "--tasks", "minimal_pairs", "--set", "path={tmp}/pairs.jsonl",
                              "--results", "{tmp}/store"], 2, "pairs.jsonl:2"),
    ("pairs-truncated-gz", ["run", "--arch", "gru", "--tasks", "minimal_pairs", "--set",
                            "path={tmp}/truncated.jsonl.gz", "--results", "{tmp}/store"], 2, "truncated.jsonl.gz"),
    ("pairs-missing", ["run", "--arch", "gru", "--tasks", "minimal_pairs", "--set", "path={tmp}/none.jsonl",
                       "--results", "{tmp}/store"], 2, "none.jsonl"),
    ("conll-garbage-gz", ["run", "--arch", "gru", "--tasks", "ner", "--set", "train={tmp}/garbage.conll.gz",
                          "--set", "dev={tmp}/garbage.conll.gz", "--set", "test={tmp}/garbage.conll.gz",
                          "--results", "{tmp}/store"], 2, "garbage.conll.gz"),
    ("conll-malformed-line", ["run", "--arch", "gru", "--tasks", "ner", "--set", "train={tmp}/bad.conll",
                              "--set", "dev={tmp}/bad.conll", "--set", "test={tmp}/bad.conll",
                              "--results", "{tmp}/store"], 2, "bad.conll:2"),
    ("conll-missing", ["run", "--arch", "gru", "--tasks", "ner", "--set", "train={tmp}/none.conll",
                       "--set", "dev={tmp}/bad.conll", "--set", "test={tmp}/bad.conll", "--results", "{tmp}/store"],
     2, "none.conll"),
    ("parallel-misaligned", ["run", "--arch", "gru", "--tasks", "mt", *[a for split in ("train", "valid", "test") for a in
                             ("--set", f"{split}_src={{tmp}}/src.txt", "--set", f"{split}_tgt={{tmp}}/tgt.txt")],
                             "--results", "{tmp}/store"], 2, "tgt.txt"),
    ("missing-dataset", ["run", "--arch", "gru", "--tasks", "lm", "--data-dir", "{tmp}/nothing",
                         "--results", "{tmp}/store"], 2, "dataset 'wikitext2' not found"),
    ("store-not-sqlite", ["table", "--results", "{tmp}/notsqlite"], 2, "notsqlite"),
    ("results-is-a-file", ["run", "--arch", "gru", "--tasks", "lm", "--results", "{tmp}/afile"], 2, "afile"),
    ("table-missing-store", ["table", "--results", "{tmp}/nostore"], 2, "nostore"),
    ("export-missing-store", ["export", "--results", "{tmp}/nostore"], 2, "nostore"),
    ("report-missing-store", ["report", "--results", "{tmp}/nostore", "--out", "{tmp}/nostore-report"], 2, "nostore"),
    ("plot-nothing-to-draw", ["plot", "agreement", "--results", "{tmp}/store", "--output", "{tmp}/store/figs"], 2,
     "agreement"),
    ("unknown-plot", ["plot", "extrapolaton", "--results", "{tmp}/store"], 2, "did you mean 'extrapolation'"),
    ("unknown-table-task", ["table", "--results", "{tmp}/store", "--task", "lmm"], 2, "did you mean 'lm'"),
]


def _run(case, root: Path) -> tuple[Path, dict, subprocess.CompletedProcess]:
    name, args, _, _ = case
    tmp = root / name
    tmp.mkdir()
    _setup(tmp)
    before = _files(tmp)
    argv = [a.replace("{tmp}", str(tmp)) for a in args]
    env = dict(os.environ, HARNESS_DATA_DIR=str(DATA_DIR), HARNESS_RESULTS=str(tmp / "store"))
    if name == "missing-dataset":
        env.pop("HARNESS_DATA_DIR")
        env.pop("HARNESS_CACHE_DIR", None)
        env["XDG_CACHE_HOME"] = str(tmp / "cache")
    done = subprocess.run([sys.executable, "-m", "harness", *argv], capture_output=True, text=True, env=env,
                          timeout=300)
    return tmp, before, done


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:  # two cores: two at a time
        return dict(zip([c[0] for c in CASES], pool.map(lambda c: _run(c, root), CASES)))


@pytest.mark.parametrize("case", [pytest.param(c, marks=[pytest.mark.data] if c[0].startswith("pairs-") else [])
                                  for c in CASES], ids=[c[0] for c in CASES])  # pairs: scored by an lm run
def test_bad_input_is_refused_clearly_and_changes_nothing(case, outcomes):
    name, _, status, culprit = case
    tmp, before, done = outcomes[name]
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode != 0 if status is None else done.returncode == status, done.stderr
    assert culprit in done.stderr, done.stderr
    assert _files(tmp) == before, "the store and every file around it are unchanged"
