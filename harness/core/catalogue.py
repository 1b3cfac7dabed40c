"""The datasets the tasks read (``datasets.toml``): where every file comes from, pinned to a commit,
its size and SHA-256, the licence; ``verify`` checks a folder against it and ``fetch`` downloads
what is missing (pooch: retries, a temporary file moved into place only when its hash matches)."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from harness.core.registry import suggest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REGISTRY = Path(__file__).with_name("datasets.toml")
DEFAULT_URL = "https://raw.githubusercontent.com"
#: how a download becomes the stored file, as the messages say it
UNPACKS = {"copy": "", "gzip": ", gzipped", "pickles_to_jsonl": ", the pickles converted to JSON Lines"}


class MissingDataset(FileNotFoundError):
    def __str__(self) -> str:
        return self.args[0]


def cache_dir() -> Path:
    """Where fetched datasets go: ``$HARNESS_CACHE_DIR``, else ``$XDG_CACHE_HOME/harness/data``."""
    if os.environ.get("HARNESS_CACHE_DIR"):
        return Path(os.environ["HARNESS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "harness" / "data"


def base_url() -> str:
    """The host downloads come from: ``$HARNESS_DATA_URL`` (a mirror with the same
    ``<repo>/<commit>/<path>`` layout), else GitHub's raw files."""
    return (os.environ.get("HARNESS_DATA_URL") or DEFAULT_URL).rstrip("/")


@dataclass(frozen=True)
class DataFile:
    dataset: str
    path: str  # inside the dataset's folder
    sources: tuple[str, ...]  # paths in the repository at the commit
    repo: str
    commit: str
    size: int  # of the content: the original file, before the stored copy is gzipped
    sha256: str
    unpack: str = "copy"

    def urls(self) -> list[str]:
        return [f"{base_url()}/{self.repo}/{self.commit}/{source}" for source in self.sources]

    def origin(self) -> str:
        return f"{self.repo}@{self.commit[:12]}: {', '.join(self.sources)}{UNPACKS[self.unpack]}"


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    licence: str
    files: tuple[DataFile, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@cache
def datasets() -> dict[str, Dataset]:
    with open(REGISTRY, "rb") as f:
        table = tomllib.load(f)
    out = {}
    for name, entry in table.items():
        files = []
        for item in entry["files"]:
            sources = item.get("sources") or [item["source"]]
            unpack = item.get("unpack", "copy")
            if unpack not in UNPACKS:
                raise ValueError(f"{REGISTRY}: {name}/{item['path']}: unknown unpack {unpack!r}")
            files.append(DataFile(name, item["path"], tuple(sources), item.get("repo", entry["repo"]),
                                  item.get("commit", entry["commit"]), item["size"], item["sha256"], unpack))
        out[name] = Dataset(name, entry["title"], entry["licence"], tuple(files))
    return out


def dataset(name: str) -> Dataset:
    suggest("dataset", name, datasets())
    return datasets()[name]


def content(path: Path, unpack: str) -> bytes:
    """A stored file's content as its hash was taken: decompressed where the store gzipped it."""
    data = path.read_bytes()
    return gzip.decompress(data) if unpack != "copy" else data


def problem(folder: Path, f: DataFile) -> str | None:
    """What is wrong with ``folder/f.path``, or None when its content is the registered one."""
    return check(folder / f.path, f)


def check(path: Path, f: DataFile) -> str | None:
    """What is wrong with ``path`` as the stored form of ``f``, or None."""
    if not path.is_file():
        return "missing"
    try:
        data = content(path, f.unpack)
    except (OSError, EOFError) as err:
        return f"cannot be read ({err})"
    if len(data) != f.size:
        return f"{len(data):,} bytes, expected {f.size:,}"
    digest = hashlib.sha256(data).hexdigest()
    if digest != f.sha256:
        return f"SHA-256 {digest[:16]}…, expected {f.sha256[:16]}…"
    return None


def verify(name: str, root: Path) -> list[tuple[DataFile, str]]:
    """Every file of dataset ``name`` under ``root/name`` that is missing or not the registered content."""
    return [(f, p) for f in dataset(name).files if (p := problem(Path(root) / name, f))]


def manual_instructions(ds: Dataset, folder: Path) -> str:
    lines = [f"Put these files in {folder}/ (or in DIR/{ds.name}/ and pass --data-dir DIR):"]
    for f in ds.files:
        lines.append(f"  {f.path}  from {f.urls()[0]}" + (f" (and {len(f.sources) - 1} more)" if len(f.sources) > 1 else "")
                     + UNPACKS[f.unpack])
    lines.append(f"Licence: {ds.licence}. `harness data verify --data-dir DIR` checks them.")
    return "\n".join(lines)


class FetchError(MissingDataset):
    pass


def fetch(name: str, root: Path | None = None, *, retries: int = 2, log=None) -> Path:
    """Dataset ``name`` in ``root/name`` (default: the cache), downloading every file that is missing or
    wrong; a file already right is not downloaded again. Each download is checked against its
    SHA-256 before it is stored; nothing half-written is left behind."""
    import pooch

    ds = dataset(name)
    root = Path(root) if root else cache_dir()
    folder = root / name
    todo = [f for f in ds.files if problem(folder, f)]
    if not todo:
        return folder
    pooch.get_logger().setLevel("WARNING")
    say = log or (lambda text: print(text, file=sys.stderr))
    say(f"harness: fetching {name} ({len(todo)} of {len(ds.files)} files, {sum(f.size for f in todo) / 1e6:.1f} MB) "
        f"into {folder}")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _download(ds, todo, folder, retries)
    except BaseException:
        if created and not any(folder.iterdir()):  # a failed first fetch leaves no empty folder behind
            folder.rmdir()
        raise
    left = verify(name, root)
    if left:
        raise FetchError(f"dataset {name!r}: after fetching, " + "; ".join(f"{f.path} {p}" for f, p in left))
    return folder


def _download(ds: Dataset, todo: list[DataFile], folder: Path, retries: int) -> None:
    import pooch
    import requests

    with tempfile.TemporaryDirectory(prefix=".download-", dir=folder) as scratch:
        for f in todo:
            known = f"sha256:{f.sha256}" if f.unpack in ("copy", "gzip") else None  # a conversion: checked after
            registry = {f"{i}": known for i in range(len(f.sources))}
            urls = {f"{i}": url for i, url in enumerate(f.urls())}
            store = pooch.create(path=scratch, base_url="", registry=registry, urls=urls, retry_if_failed=retries)
            try:
                downloads = [Path(store.fetch(key, progressbar=sys.stderr.isatty())) for key in registry]
            except (requests.exceptions.RequestException, ValueError) as err:
                raise FetchError(f"dataset {ds.name!r}: could not download {f.path} from {f.urls()[0]}: "
                                 f"{_reason(err)}\n{manual_instructions(ds, folder)}") from None
            _store(f, downloads, folder, scratch)
            for path in downloads:
                path.unlink()


def _reason(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text if len(text) < 300 else text[:300] + "…"


def _store(f: DataFile, downloads: list[Path], folder: Path, scratch: str) -> None:
    """Turn the downloads into the stored file, written aside and moved into place once it is right."""
    with tempfile.NamedTemporaryFile(dir=scratch, delete=False) as out:
        if f.unpack == "copy":
            shutil.copyfileobj(open(downloads[0], "rb"), out)
        else:
            data = downloads[0].read_bytes() if f.unpack == "gzip" else pickles_to_jsonl(f.sources, downloads)
            out.write(gzip.compress(data, mtime=0))
    staged = Path(out.name)
    target = folder / f.path
    if (p := check(staged, f)):
        staged.unlink()
        raise FetchError(f"dataset {f.dataset!r}: {f.path} as built from {f.urls()[0]}: {p}; nothing was stored")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, target)


class _DataOnly(pickle.Unpickler):
    """An unpickler that builds only built-in containers and strings: no class or function is looked up."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refused: the pickle names {module}.{name}")


def pickles_to_jsonl(sources: tuple[str, ...], paths: list[Path]) -> bytes:
    """Marvin & Linzen's template pickles (``{condition: [(grammatical, ungrammatical[, ungrammatical_2])]}``,
    one per test) as one JSON Lines file: the tests in file-name order, the items in their order."""
    lines = []
    for source, path in sorted(zip(sources, paths), key=lambda sp: Path(sp[0]).stem):
        test = Path(source).stem
        with open(path, "rb") as fh:
            conditions = _DataOnly(fh).load()
        for condition, items in conditions.items():
            for index, item in enumerate(items):
                row = {"test": test, "condition": condition, "index": index, "grammatical": item[0],
                       "ungrammatical": item[1]}
                if len(item) > 2:
                    row["ungrammatical_2"] = item[2]
                lines.append(json.dumps(row) + "\n")
    return "".join(lines).encode("utf-8")


def jsonl_to_pickles(data: bytes) -> dict[str, bytes]:
    """The inverse of ``pickles_to_jsonl``: one pickle per test (for mirrors and tests that hold only the JSON Lines)."""
    tests: dict[str, dict[str, list]] = {}
    for line in io.StringIO(data.decode("utf-8")):
        row = json.loads(line)
        item = (row["grammatical"], row["ungrammatical"]) + ((row["ungrammatical_2"],) if "ungrammatical_2" in row else ())
        tests.setdefault(row["test"], {}).setdefault(row["condition"], []).append(item)
    return {test: pickle.dumps(conditions, protocol=2) for test, conditions in tests.items()}
