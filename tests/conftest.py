import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("HARNESS_DATA_DIR", ROOT.parent / "shared" / "data"))

#: a few steps of real training: enough to exercise every stage, small enough for a unit test
TINY_TRAIN = dict(steps=6, batch_size=4, seq_len=16, lr=3e-3, warmup_steps=2, eval_every=3,
                  dev_eval_tokens=512, final_eval_tokens=1024, log_every=2)
TINY_SETS = [f"--set={k}={v}" for k, v in TINY_TRAIN.items()]


def harness(*args) -> int:
    """Run the harness command in-process; arguments may be paths or numbers."""
    from harness.cli import main

    return main([str(a) for a in args])


@pytest.fixture(scope="session")
def data_dir() -> Path:
    assert (DATA_DIR / "wikitext2").is_dir(), f"the shared datasets are expected at {DATA_DIR}"
    return DATA_DIR


#: lines kept of the agreement test sets in ``small_data``: scoring all 7,899 items costs each
#: zero-shot run 10–20 s, and tests that check plumbing (tables, protocols, launchers) need a few
SMALL_COLORLESSGREEN = 300


@pytest.fixture(scope="session")
def small_data(data_dir, tmp_path_factory) -> Path:
    """The shared datasets, linked, except the agreement test sets, cut to their first lines."""
    root = tmp_path_factory.mktemp("small_data")
    for dataset in data_dir.iterdir():
        if dataset.name != "colorlessgreen":
            (root / dataset.name).symlink_to(dataset.resolve())
    source = data_dir / "colorlessgreen"
    for path in source.rglob("*"):
        target = root / "colorlessgreen" / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.suffix in (".text", ".gold"):
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(path, encoding="utf-8") as f:
                target.write_text("".join(line for _, line in zip(range(SMALL_COLORLESSGREEN), f)), encoding="utf-8")
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
    return root


@pytest.fixture(scope="session")
def lm_task(data_dir):
    from harness.core.registry import TASKS

    cls = TASKS.get("lm")
    return cls(cls.Options(), data_dir)
