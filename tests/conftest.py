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


@pytest.fixture(scope="session")
def lm_task(data_dir):
    from harness.core.registry import TASKS

    cls = TASKS.get("lm")
    return cls(cls.Options(), data_dir)
