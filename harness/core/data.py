"""Where datasets come from: ``--data-dir``, then ``$HARNESS_DATA_DIR``, then the user cache, then a
download (``catalogue``); and
how a data file is read: ``DataError`` names the file (and line) of anything that cannot be read."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Callable, TypeVar

from harness.core.catalogue import FetchError, MissingDataset, cache_dir, datasets, fetch, manual_instructions

T = TypeVar("T")


def search_path(data_dir: str | Path | None) -> list[Path]:
    roots = []
    if data_dir:
        roots.append(Path(data_dir))
    if os.environ.get("HARNESS_DATA_DIR"):
        roots.append(Path(os.environ["HARNESS_DATA_DIR"]))
    roots.append(cache_dir())
    return roots


def fetching_allowed() -> bool:
    """Whether a dataset missing everywhere is downloaded on first use (``HARNESS_DATA_OFFLINE=1``: not)."""
    return os.environ.get("HARNESS_DATA_OFFLINE", "") not in ("1", "true", "yes")


def find_dataset(name: str, files: list[str], data_dir: str | Path | None) -> Path:
    """The first folder ``<root>/<name>`` holding every one of ``files``; a registered dataset found
    nowhere is fetched into the cache (unless ``HARNESS_DATA_OFFLINE=1``)."""
    roots = search_path(data_dir)
    for root in roots:
        folder = root / name
        if all((folder / f).is_file() for f in files):
            return folder
    looked = "\n".join(f"  {root / name}" for root in roots)
    head = f"dataset {name!r} not found (needs {', '.join(files)}). Looked in:\n{looked}\n"
    where = f"Provide it with --data-dir DIR or HARNESS_DATA_DIR=DIR, where DIR/{name}/ holds those files"
    if name not in datasets():  # not in the registry: nothing to fetch it from
        raise MissingDataset(f"{head}{where}.")
    where += f", or fetch it: harness data fetch {name}."
    if not fetching_allowed():
        raise MissingDataset(f"{head}{where} (HARNESS_DATA_OFFLINE=1: not downloaded)\n"
                             f"{manual_instructions(datasets()[name], cache_dir() / name)}")
    try:
        folder = fetch(name)
    except FetchError as err:
        raise MissingDataset(f"{head}Downloading it failed: {err}") from None
    return folder


class DataError(ValueError):
    """A data file that cannot be read or parsed: names the file and, where there is one, the line
    (``path:line: message``). A ValueError, so the command line reports it as an error (exit 2)."""

    def __init__(self, path, message: str, line: int | None = None):
        self.path = Path(path)
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # picklable (worker processes, Ray)
        return type(self), (self.path, self.message, self.line)


def read_bytes(path) -> bytes:
    """The bytes of a file; a missing or unreadable file is a DataError naming it."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, not a file") from None
    except OSError as err:
        raise DataError(path, f"cannot read the file ({err.strerror or err})") from None


def sha256_of(path) -> str:
    """The SHA-256 of a file's bytes (as stored: a ``.gz`` file's compressed bytes)."""
    return hashlib.sha256(read_bytes(path)).hexdigest()


def decode_text(path, data: bytes) -> str:
    """``data`` (the bytes of ``path``) as text: gunzipped when the name ends in ``.gz``, UTF-8.
    A bad gzip stream or an invalid byte is a DataError naming the file (and the byte's line)."""
    path = Path(path)
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError; truncation, EOFError
            raise DataError(path, f"not a valid gzip file ({err or type(err).__name__})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        before = data[:err.start].decode("utf-8")
        line = before.replace("\r\n", "\n").replace("\r", "\n").count("\n") + 1
        raise DataError(path, f"not UTF-8 text (byte {data[err.start]:#04x})", line) from None


def read_text(path) -> str:
    """A text file, plain or gzipped, as ``decode_text`` reads it."""
    return decode_text(path, read_bytes(path))


def text_lines(text: str) -> list[str]:
    """The lines of ``text`` as a file opened in text mode yields them (universal newlines:
    ``\\n``, ``\\r\\n`` and ``\\r`` end a line), without their line ends."""
    return [line.rstrip("\n") for line in io.StringIO(text, newline=None)]


class ContentCache:
    """Parsed files keyed by path *and* content (SHA-256), so a file edited in place is parsed
    again; the ``size`` most recently used entries are kept."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict = OrderedDict()

    def get(self, path, parse: Callable[[Path, bytes], T], *key) -> T:
        """``parse(path, data)``, or what it returned for the same path, content and ``key``."""
        path = Path(path)
        data = read_bytes(path)
        full = (str(path), hashlib.sha256(data).hexdigest(), *key)
        if full in self._entries:
            self._entries.move_to_end(full)
            return self._entries[full]
        value = parse(path, data)
        self._entries[full] = value
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()
