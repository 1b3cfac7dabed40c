"""Fuzzing the readers of user files: any bytes, plain or gzipped (valid, garbage or truncated gzip),
give either parsed data or the project's DataError naming the file (and a line within it), never
another exception. Readers cache by path and content; every example gets a fresh file anyway."""
import gzip
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.core.data import DataError

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

#: characters that matter to the formats, so examples get past the first byte
ALPHABET = ' \t\n\r\x00\x0b\x85\u2028:#-[]{}",\'!&*|>%@`éen:BIOB-PERI-LOCsentence_goodbad0123.archstasksseedschangesbaseline'
#: pieces of the formats (and of their pitfalls), strung together
PIECES = ["\n", "\n\n", "\t", " ", "\r\n", "\r", ": ", "- ", "[", "]", "{", "}", ",", '"', "'", "#", "!",
          "&a", "*a", "<<: ", "!!binary zz", "!!python/name:os.system", "!function x.y", "2020-99-99", "1e400",
          "0x", "~", "null", "true", "archs: [lstm]", "tasks: [lm]", "seeds: ", "baseline: ", "changes: ",
          "-DOCSTART- O", "en:", "O", "B-PER", "I-PER", "X-PER", "John", "é", "\u2028", "\x00",
          '{"sentence_good": "a b", "sentence_bad": "a c"}', '"sentence_good"', "[[[[", "\\u", "\\ud800"]
TEXTS = st.one_of(st.binary(max_size=400),
                  st.text(alphabet=ALPHABET, max_size=300).map(lambda t: t.encode("utf-8")),
                  st.lists(st.sampled_from(PIECES), max_size=40).map(lambda p: "".join(p).encode("utf-8")),
                  st.tuples(st.lists(st.sampled_from(PIECES), max_size=20), st.binary(min_size=1, max_size=4))
                  .map(lambda t: "".join(t[0]).encode("utf-8") + t[1]))
#: how the bytes are stored: as they are, gzipped, gzipped and cut short, or raw under a .gz name
MODES = st.sampled_from(["plain", "gz", "truncated", "raw_gz"])


def store(folder: Path, name: str, data: bytes, mode: str) -> Path:
    if mode == "plain":
        path = folder / name
        path.write_bytes(data)
        return path
    path = folder / f"{name}.gz"
    packed = gzip.compress(data)
    path.write_bytes({"gz": packed, "truncated": packed[: max(1, len(packed) // 2)], "raw_gz": data}[mode])
    return path


def check(err: DataError, path: Path) -> None:
    """A DataError names the file (and a line of it, when there is one)."""
    assert err.path == path and str(err).startswith(f"{path}")
    if err.line is not None:
        assert err.line >= 1 and str(err).startswith(f"{path}:{err.line}: ")


@FUZZ
@given(data=TEXTS, mode=MODES)
def test_pairs_jsonl(data, mode):
    from tasks.lm_eval.suites import check_pairs_file

    with tempfile.TemporaryDirectory() as folder:
        path = store(Path(folder), "pairs.jsonl", data, mode)
        try:
            assert len(check_pairs_file(path)) == 64
        except DataError as err:
            check(err, path)


@FUZZ
@given(data=TEXTS, mode=MODES)
def test_conll(data, mode):
    from tasks.ner import read_conll, shared_prefix

    with tempfile.TemporaryDirectory() as folder:
        path = store(Path(folder), "train.conll", data, mode)
        try:
            sentences, starts = read_conll(path)
            assert len(sentences) == len(starts) > 0
            shared_prefix(sentences)
        except DataError as err:
            check(err, path)


@FUZZ
@given(src=TEXTS, tgt=TEXTS, mode=MODES)
def test_parallel_text(src, tgt, mode):
    from tasks.mt import read_parallel

    with tempfile.TemporaryDirectory() as folder:
        a, b = store(Path(folder), "train.en", src, mode), store(Path(folder), "train.de", tgt, mode)
        try:
            x, y = read_parallel(a, b)
            assert len(x) == len(y)
        except DataError as err:
            assert err.path in (a, b)
            check(err, err.path)


SWEEP_HEAD = st.sampled_from([b"", b"archs: [lstm]\ntasks: [lm]\n", b"archs: [lstm]\n"])
#: sweep-shaped YAML: settings with odd values (dates that are none, huge numbers, tags, anchors)
SWEEP_KEYS = st.sampled_from(["archs", "tasks", "sizes", "seeds", "budget", "device", "baseline", "changes",
                              "1", "null", "lr", "? [a]", "<<"])
SWEEP_VALUES = st.sampled_from(["[lstm]", "[lm]", "[0, 1]", "2020-99-99", "2020-02-30", "1e400", "-.inf",
                                "!!binary zz", "!!int x", "!!python/name:os.system", "*a", "&a [1]", "{lr: 0.1}",
                                "{lr: [0.1, 0.2]}", "{lr: []}", "[[[", "1:2:3", "0o9", "~", "'a", "|", ""])
SWEEP_TEXTS = st.one_of(TEXTS, st.lists(st.tuples(SWEEP_KEYS, SWEEP_VALUES), max_size=6).map(
    lambda rows: "".join(f"{k}: {v}\n" for k, v in rows).encode("utf-8")))


@FUZZ
@given(head=SWEEP_HEAD, data=SWEEP_TEXTS, mode=st.sampled_from(["plain", "plain", "gz", "truncated"]))
def test_sweep_yaml(head, data, mode):
    from harness.sweep import SweepFile, load_sweep_file

    with tempfile.TemporaryDirectory() as folder:
        path = store(Path(folder), "sweep.yaml", head + data, mode)
        try:
            assert isinstance(load_sweep_file(path), SweepFile)
        except DataError as err:
            check(err, path)
