"""Fetching datasets through the registry, from a real HTTP server on 127.0.0.1 (tests/data_server.py),
never from outside the machine: into an empty cache, once; a corrupted, truncated or absent file is
refused and leaves nothing behind; with no server, the error says which files go where."""
import gzip
import hashlib
import pickle
from pathlib import Path

import pytest

from harness.core import catalogue
from harness.core.catalogue import FetchError, MissingDataset
from tests.conftest import TINY_SETS, harness
from tests.data_server import Mirror


@pytest.fixture(scope="module")
def mirror(data_dir):
    server = Mirror(data_dir)
    yield server
    server.close()


@pytest.fixture
def cache(tmp_path, monkeypatch, mirror):
    """An empty cache, no data folder, downloads allowed and served by the mirror."""
    mirror.faults.clear()
    mirror.requests.clear()
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_DATA_URL", mirror.url)
    monkeypatch.setenv("HARNESS_DATA_OFFLINE", "0")
    return tmp_path / "cache"


def leftovers(folder: Path) -> list[Path]:
    """Anything in the cache that is not a registered file: temporary or half-written downloads."""
    if not folder.exists():
        return []
    registered = {f.path for ds in catalogue.datasets().values() for f in ds.files}
    return [p for p in folder.rglob("*") if p.is_file() and str(p.relative_to(folder).as_posix()).split("/", 1)[-1]
            not in registered]


def test_the_registry_holds_every_shared_file_and_the_shared_copy_verifies(data_dir):
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        have = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != "SOURCE.md"}
        assert have == {f.path for f in catalogue.dataset(folder.name).files}, folder.name
        assert catalogue.verify(folder.name, data_dir) == [], folder.name
    for ds in catalogue.datasets().values():
        for f in ds.files:
            assert len(f.commit) == 40 and all(c in "0123456789abcdef" for c in f.commit), "pinned to a commit"
            assert all(not s.startswith("/") for s in f.sources)


def test_fetch_into_an_empty_cache_gives_the_shared_bytes_and_a_second_fetch_downloads_nothing(cache, mirror, data_dir):
    for name in ("wsc", "colorlessgreen", "marvin_linzen_2018", "conll2003"):
        folder = catalogue.fetch(name)
        assert folder == cache / name
        assert catalogue.verify(name, cache) == []
        for f in catalogue.dataset(name).files:
            assert catalogue.content(folder / f.path, f.unpack) == catalogue.content(data_dir / name / f.path, f.unpack)
    assert mirror.requests[mirror.path_of("marvin_linzen_2018", "marvin_linzen_2018.jsonl.gz", 21)] == 1
    assert leftovers(cache) == []
    before = sum(mirror.requests.values())
    for name in ("wsc", "colorlessgreen", "marvin_linzen_2018", "conll2003"):
        catalogue.fetch(name)
    assert sum(mirror.requests.values()) == before


def test_a_corrupted_download_is_refused_and_not_kept(cache, mirror):
    url = mirror.path_of("wsc", "wsc273.txt")
    mirror.faults[url] = "corrupt"
    with pytest.raises(FetchError, match="wsc273.txt") as err:
        catalogue.fetch("wsc", retries=1)
    assert "SHA256 hash of downloaded file" in str(err.value) or "hash" in str(err.value).lower()
    assert mirror.requests[url] == 2, "retried once, then refused"
    assert not (cache / "wsc" / "wsc273.txt").exists()
    assert leftovers(cache) == []
    mirror.faults.clear()
    catalogue.fetch("wsc")  # the files fetched before the failure are kept, the bad one fetched again
    assert catalogue.verify("wsc", cache) == []


def test_a_damaged_file_in_the_cache_is_fetched_again(cache, mirror):
    catalogue.fetch("wsc")
    path = cache / "wsc" / "WSCollection.csv"
    path.write_bytes(path.read_bytes()[:-10])
    assert [f.path for f, _ in catalogue.verify("wsc", cache)] == ["WSCollection.csv"]
    before = sum(mirror.requests.values())
    catalogue.fetch("wsc")
    assert sum(mirror.requests.values()) == before + 1
    assert catalogue.verify("wsc", cache) == []


def test_an_interrupted_download_restarts_cleanly(cache, mirror):
    url = mirror.path_of("conll2003", "eng.testa.gz")
    mirror.faults[url] = "truncate_once"
    catalogue.fetch("conll2003", retries=1)  # the connection drops half-way; the retry starts over
    assert mirror.requests[url] == 2 and catalogue.verify("conll2003", cache) == []

    url = mirror.path_of("wsc", "WSCollection.xml")
    mirror.faults[url] = "truncate"
    with pytest.raises(FetchError, match="WSCollection.xml"):
        catalogue.fetch("wsc", retries=0)
    assert not (cache / "wsc" / "WSCollection.xml").exists() and leftovers(cache) == []
    del mirror.faults[url]
    catalogue.fetch("wsc", retries=0)
    assert catalogue.verify("wsc", cache) == []


def test_an_absent_file_names_what_to_put_where(cache, mirror):
    mirror.faults[mirror.path_of("xwinograd", "dataset.tsv.gz")] = "missing"
    with pytest.raises(FetchError) as err:
        catalogue.fetch("xwinograd", retries=0)
    message = str(err.value)
    assert "404" in message and f"{cache / 'xwinograd'}/" in message
    assert "dataset.tsv.gz  from " + mirror.url + "/yandex-research/crosslingual_winograd/" in message
    assert "gzipped" in message and "Apache-2.0" in message
    assert not (cache / "xwinograd").exists(), "a failed first fetch leaves no empty folder"


def test_with_no_network_the_error_says_which_files_go_where(cache, monkeypatch, tmp_path):
    from harness.core.data import find_dataset

    monkeypatch.setenv("HARNESS_DATA_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(MissingDataset) as err:
        find_dataset("wsc", ["wsc273.txt"], tmp_path / "nothing-here")
    message = str(err.value)
    assert "Downloading it failed" in message and "Connection refused" in message
    for path in ("WSCollection.xml", "WSCollection.csv", "wsc273.txt"):
        assert f"  {path}  from http://127.0.0.1:9/" in message
    assert "vid-koci/bert-commonsense/72486e3223baa48b843bd6f39447f1937674024e/data/wsc273.txt" in message


def test_offline_nothing_is_requested_and_the_message_says_how_to_get_it(cache, mirror, monkeypatch, tmp_path):
    from harness.core.data import find_dataset

    monkeypatch.setenv("HARNESS_DATA_OFFLINE", "1")
    with pytest.raises(MissingDataset) as err:
        find_dataset("wsc", ["wsc273.txt"], None)
    assert sum(mirror.requests.values()) == 0
    assert "harness data fetch wsc" in str(err.value) and "wsc273.txt  from " in str(err.value)


def test_a_dataset_is_fetched_on_first_use(cache, mirror):
    from harness.core.data import find_dataset

    folder = find_dataset("colorlessgreen", ["linzen_testset/subj_agr_filtered.text"], None)
    assert folder == cache / "colorlessgreen" and catalogue.verify("colorlessgreen", cache) == []


def test_the_main_command_fetches_what_it_needs_verifies_it_and_runs(cache, mirror, capsys, tmp_path):
    """The README's main command with no data folder: every dataset of its plan comes from the mirror
    (the check that runs before any run is claimed); `harness data verify` passes on what came; and a
    run of the plan trains on it."""
    from harness.core.registry import selected_tasks
    from harness.sweep import check_datasets, expand

    configs = expand(["lstm", "transformer"], selected_tasks(["all"]))
    check_datasets(configs, None)
    fetched = sorted(p.name for p in cache.iterdir())
    assert {"wikitext2", "colorlessgreen", "figqa", "wsc", "blimp", "marvin_linzen_2018", "conll2003",
            "multi30k"} <= set(fetched)
    assert harness("data", "verify", *fetched) == 0
    assert "wikitext2: ok" in capsys.readouterr().out
    assert harness("run", "--arch", "lstm", "--tasks", "lm", "--results", tmp_path / "runs", "--no-progress",
                   *TINY_SETS) == 0


def test_verify_names_the_bad_files(data_dir, tmp_path, capsys):
    copy = tmp_path / "data" / "wsc"
    copy.mkdir(parents=True)
    for f in catalogue.dataset("wsc").files:
        (copy / f.path).write_bytes((data_dir / "wsc" / f.path).read_bytes())
    (copy / "wsc273.txt").write_bytes(b"not the file\n")
    (copy / "WSCollection.csv").unlink()
    assert harness("data", "verify", "wsc", "--data-dir", tmp_path / "data") == 1
    out = capsys.readouterr().out
    assert f"{copy / 'wsc273.txt'}: 13 bytes, expected 36,569" in out
    assert f"{copy / 'WSCollection.csv'}: missing" in out and "WSCollection.xml" not in out
    assert "wsc: 2 bad" in out
    gz = tmp_path / "data" / "xwinograd"
    gz.mkdir()
    (gz / "dataset.tsv.gz").write_bytes(gzip.compress(b"x"))
    assert harness("data", "verify", "xwinograd", "--data-dir", tmp_path / "data") == 1
    assert "1 bytes, expected 2,004,732" in capsys.readouterr().out


def test_data_list_says_where_each_dataset_is(data_dir, capsys):
    assert harness("data", "list", "--data-dir", data_dir) == 0
    out = capsys.readouterr().out
    for name in catalogue.datasets():
        assert f"{data_dir / name}" in out
    assert "CC BY-NC 4.0" in out and "cache:" in out
    assert harness("data", "fetch", "wikitxt2") == 2
    assert "did you mean 'wikitext2'" in capsys.readouterr().err


def test_the_pickle_conversion_reproduces_the_stored_file_and_refuses_code(data_dir, tmp_path):
    f = catalogue.dataset("marvin_linzen_2018").files[0]
    jsonl = gzip.decompress((data_dir / "marvin_linzen_2018" / f.path).read_bytes())
    pickles = catalogue.jsonl_to_pickles(jsonl)
    assert sorted(pickles) == sorted(Path(s).stem for s in f.sources) and len(pickles) == 22
    paths = []
    for source in reversed(f.sources):  # the tests are written in file-name order whatever the order given
        path = tmp_path / Path(source).name
        path.write_bytes(pickles[path.stem])
        paths.append(path)
    rebuilt = catalogue.pickles_to_jsonl(tuple(reversed(f.sources)), paths)
    assert hashlib.sha256(rebuilt).hexdigest() == f.sha256
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps({"c": [(print, "x")]}))
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        catalogue.pickles_to_jsonl(("EMNLP2018/templates/evil.pickle",), [evil])
