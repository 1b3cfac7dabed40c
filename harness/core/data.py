"""Where datasets come from: ``--data-dir``, then ``$HARNESS_DATA_DIR``, then the user cache."""
from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "harness" / "data"


class MissingDataset(FileNotFoundError):
    def __str__(self) -> str:
        return self.args[0]


def search_path(data_dir: str | Path | None) -> list[Path]:
    roots = []
    if data_dir:
        roots.append(Path(data_dir))
    if os.environ.get("HARNESS_DATA_DIR"):
        roots.append(Path(os.environ["HARNESS_DATA_DIR"]))
    roots.append(CACHE_DIR)
    return roots


def find_dataset(name: str, files: list[str], data_dir: str | Path | None) -> Path:
    """The first folder ``<root>/<name>`` holding every one of ``files``."""
    roots = search_path(data_dir)
    for root in roots:
        folder = root / name
        if all((folder / f).is_file() for f in files):
            return folder
    looked = "\n".join(f"  {root / name}" for root in roots)
    raise MissingDataset(
        f"dataset {name!r} not found (needs {', '.join(files)}). Looked in:\n{looked}\n"
        f"Provide it with --data-dir DIR or HARNESS_DATA_DIR=DIR, where DIR/{name}/ holds those "
        f"files (DIR/{name}/SOURCE.md in the shared data folder says where they come from).")
