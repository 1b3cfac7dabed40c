"""Reference models: pretrained Hugging Face causal language models that the zero-shot suites
score beside the harness's own backbones. One is named where a backbone is, as
``hf:<model name or local path>`` (``--arch lstm,hf:gpt2``); it is not parameter-matched and not
trained here, so its runs have no upstream, one seed and the size ``pretrained``."""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

PREFIX = "hf:"
#: the size a reference run records (it has no preset)
SIZE = "pretrained"


def reference_model(arch: str) -> str | None:
    """The model an ``hf:`` name stands for; None when ``arch`` names a backbone."""
    return arch[len(PREFIX):] if arch.startswith(PREFIX) else None


def is_reference(arch: str) -> bool:
    return arch.startswith(PREFIX)


def reference_digest(arch: str) -> str | None:
    """What pins the weights of reference ``arch``, for its run id: the SHA-256 of a local
    folder's files (names and bytes), or the commit of a Hub model's snapshot in the Hugging Face
    cache; None for a Hub model not cached yet (its first run downloads it)."""
    folder = Path(reference_model(arch)).expanduser()
    if folder.is_dir():
        files = sorted(f for f in folder.rglob("*") if f.is_file())
        return _folder_digest(tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files), str(folder))
    try:
        from huggingface_hub import snapshot_download

        return "commit:" + Path(snapshot_download(reference_model(arch), local_files_only=True)).name
    except Exception:  # not cached (or not a valid name): the run says why when it loads it
        return None


@functools.lru_cache(maxsize=16)
def _folder_digest(files: tuple[tuple[str, int, int], ...], root: str) -> str:
    """SHA-256 over the folder's files, each its relative name and bytes; cached by name, size
    and modification time, so one sweep reads a model's weights once."""
    digest = hashlib.sha256()
    for name, _, _ in files:
        digest.update(str(Path(name).relative_to(root)).encode() + b"\0")
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
