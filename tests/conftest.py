import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HARNESS_DATA_OFFLINE", "1")  # no test downloads a dataset unless it says so
# runs stay in the test's process, where its monkeypatches reach them; the tests of the local
# workers ask for workers, and tests/test_launchers.py checks the default itself
os.environ["HARNESS_WORKERS"] = "1"

ROOT = Path(__file__).resolve().parent.parent


def _data_dir() -> Path:
    """``$HARNESS_DATA_DIR``, else ``../shared/data`` beside the checkout, else the user cache (where
    ``harness data fetch`` puts the datasets, and where tests marked ``data`` fetch them)."""
    from harness.core.catalogue import cache_dir

    if os.environ.get("HARNESS_DATA_DIR"):
        return Path(os.environ["HARNESS_DATA_DIR"])
    shared = ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else cache_dir()


DATA_DIR = _data_dir()
os.environ.setdefault("HARNESS_DATA_DIR", str(DATA_DIR))  # what runs started by the tests read

#: fixtures that hand a test the datasets: a test asking for one of them is marked ``data``
DATA_FIXTURES = {"data_dir", "small_data", "lm_task"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)


_DATA_STATE: dict = {}


def _data_missing() -> str | None:
    """Why the datasets cannot be had (None when they are here, or were just fetched): they are
    fetched through the registry once per session when they are not in DATA_DIR."""
    if "why" not in _DATA_STATE:
        from harness.core import catalogue

        why = None
        missing = [name for name in catalogue.datasets() if catalogue.verify(name, DATA_DIR)]
        if missing and DATA_DIR != catalogue.cache_dir():
            why = (f"needs the datasets; in {DATA_DIR}, {', '.join(missing)} are missing or damaged "
                   f"(`harness data verify --data-dir {DATA_DIR}` says which files)")
        elif missing:
            try:
                for name in missing:
                    catalogue.fetch(name, DATA_DIR, retries=0)
            except catalogue.FetchError as err:
                why = (f"needs the datasets, which are not in {DATA_DIR} and could not be fetched "
                       f"({str(err).splitlines()[0]}). Get them with `harness data fetch` where there is a "
                       f"network, or point HARNESS_DATA_DIR at a copy; `pytest -m 'not data'` runs the rest")
        _DATA_STATE["why"] = why
    return _DATA_STATE["why"]


def pytest_runtest_setup(item):
    if item.get_closest_marker("data") and (why := _data_missing()):
        pytest.skip(why)


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
