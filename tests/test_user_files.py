"""Files of the user's own (minimal pairs, NER CoNLL files, MT parallel files): their content decides
the run id; anything unreadable is the project's DataError naming the file; lm-eval configs are built
as data, so a path cannot add YAML; a language prefix on every CoNLL token is stripped."""
import gzip
import hashlib
import json
import pickle
import re

import pytest

from harness.config import RunConfig
from harness.core.data import DataError
from harness.sweep import expand
from tests.conftest import TINY_SETS, harness

NER_ROWS = [[("John", "B-PER"), ("Smith", "I-PER"), ("visited", "O"), ("Paris", "B-LOC")],
            [("Acme", "B-ORG"), ("Corp", "I-ORG"), ("hired", "O"), ("Mary", "B-PER")],
            [("Berlin", "B-LOC"), ("is", "O"), ("big", "O")],
            [("Anna", "B-PER"), ("left", "O")],
            [("IBM", "B-ORG"), ("grew", "O"), ("fast", "O")]]


def conll(rows, prefix="") -> str:
    return "\n\n".join("\n".join(f"{prefix}{w}\t{t}" for w, t in s) for s in rows) + "\n"


@pytest.fixture
def ner_files(tmp_path):
    files = {}
    for split in ("train", "dev", "test"):
        files[split] = tmp_path / f"{split}.conll"
        files[split].write_text(conll(NER_ROWS), encoding="utf-8")
    return files


def ner_sets(files):
    return [f"--set={k}={v}" for k, v in files.items()]


def pairs(path, n=2):
    rows = [{"sentence_good": f"The dog runs {i} .", "sentence_bad": f"The dog run {i} ."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# 1. identity: the content, not the path --------------------------------------------------------

def test_editing_a_file_in_place_makes_a_new_run_in_the_dry_run(tmp_path, ner_files, capsys):
    from harness.store import FINISHED, RunStore

    results = tmp_path / "runs"
    overrides = {k: [str(v)] for k, v in ner_files.items()}
    (cfg,) = expand(["gru"], ["ner"], overrides=overrides)  # what `harness run` below plans
    store = RunStore(results)
    path_only = cfg.model_copy(update={"inputs": None})  # the id a store made before this fix holds
    for done in (cfg, path_only):
        assert store.claim(done)
        store.finish(done.run_id, FINISHED, [], {})
    assert path_only.run_id != cfg.run_id
    common = ("--arch", "gru", "--tasks", "ner", "--device", "cpu", "--results", results, *ner_sets(ner_files))
    assert harness("run", *common, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "1 runs, 1 already finished" in out and f"{cfg.run_id}  gru" in out and "[finished]" in out
    # the same path, new content: a new run, neither of the recorded ones
    ner_files["train"].write_text(conll(NER_ROWS + [[("Rome", "B-LOC"), ("waits", "O")]]), encoding="utf-8")
    assert harness("run", *common, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "1 runs, 0 already finished, 1 to run" in out and "[new]" in out
    assert cfg.run_id not in out and path_only.run_id not in out


def test_every_user_file_option_joins_the_id_and_built_in_ids_do_not_change(tmp_path, ner_files):
    path = pairs(tmp_path / "pairs.jsonl")
    lm, mp = expand(["lstm"], ["minimal_pairs"], overrides={"path": [str(path)]})
    assert lm.task == "lm" and lm.inputs is None, "the upstream lm run is unaffected"
    assert lm.run_id == expand(["lstm"], ["lm"])[0].run_id
    assert mp.inputs == {"path": hashlib.sha256(path.read_bytes()).hexdigest()}
    pairs(path, n=3)
    assert expand(["lstm"], ["minimal_pairs"], overrides={"path": [str(path)]})[1].run_id != mp.run_id

    (ner,) = expand(["gru"], ["ner"], overrides={k: [str(v)] for k, v in ner_files.items()})
    assert set(ner.inputs) == {"train", "dev", "test"}
    for cfg in expand(["gru"], ["lm", "ner", "mt"]):  # built-in datasets: no inputs (tests/test_run_ids.py)
        assert cfg.inputs is None
    # a stored config reads back to the same id
    assert RunConfig.model_validate_json(ner.model_dump_json()).run_id == ner.run_id


def test_mt_parallel_files_join_the_id(tmp_path):
    files = {}
    for split in ("train", "valid", "test"):
        for side, text in (("src", "a dog .\na cat .\n"), ("tgt", "ein Hund .\neine Katze .\n")):
            files[f"{split}_{side}"] = tmp_path / f"{split}.{side}"
            files[f"{split}_{side}"].write_text(text, encoding="utf-8")
    overrides = {k: [str(v)] for k, v in files.items()}
    (cfg,) = expand(["gru"], ["mt"], overrides=overrides)
    assert set(cfg.inputs) == set(files)
    files["test_tgt"].write_text("ein Hund .\nzwei Katzen .\n", encoding="utf-8")
    assert expand(["gru"], ["mt"], overrides=overrides)[0].run_id != cfg.run_id


def test_an_unknown_input_option_is_refused():
    from harness.core.train_config import TrainConfig

    with pytest.raises(ValueError, match="takes no input file option path"):
        RunConfig(arch="gru", task="lm", train=TrainConfig(steps=1, batch_size=1, seq_len=4), inputs={"path": "x"})


# 2. errors, not tracebacks ---------------------------------------------------------------------

def test_a_missing_ner_file_is_an_error_naming_it(tmp_path, ner_files, capsys):
    missing = tmp_path / "nope.conll"
    sets = ner_sets({**ner_files, "train": missing})
    assert harness("run", "--arch", "gru", "--tasks", "ner", "--results", tmp_path / "r", "--no-progress",
                   *TINY_SETS, *sets) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error:") and str(missing) in err and "does not exist" in err
    assert not (tmp_path / "r").exists(), "nothing written"


def _truncated_gz(text: str) -> bytes:
    data = gzip.compress(text.encode())
    return data[: len(data) // 2]


@pytest.mark.parametrize("data,message", [
    (b"\x1f\x8b not gzip at all", "not a valid gzip file"),
    (None, "not a valid gzip file"),  # truncated
    (gzip.compress(b"ok line\n\xff\xfe\n"), r":2: not UTF-8 text"),
])
def test_every_reader_turns_a_bad_gz_file_into_a_data_error(tmp_path, data, message):
    from tasks.lm import read_corpus_file
    from tasks.lm_eval.suites import check_pairs_file
    from tasks.mt import read_lines, read_parallel
    from tasks.ner import read_conll

    for i, read in enumerate([check_pairs_file, read_conll, read_lines,
                              lambda p: read_parallel(p, p), read_corpus_file]):
        path = tmp_path / f"file{i}.gz"
        path.write_bytes(_truncated_gz(conll(NER_ROWS)) if data is None else data)
        with pytest.raises(DataError, match=re.escape(str(path)) + ".*" + message) as caught:
            read(path)
        assert caught.value.path == path


@pytest.mark.data  # the pairs are scored by an lm run, trained on WikiText-2
def test_a_garbage_gz_pairs_file_exits_2(tmp_path, capsys):
    path = tmp_path / "pairs.jsonl.gz"
    path.write_bytes(_truncated_gz('{"sentence_good": "a b", "sentence_bad": "a c"}\n' * 50))
    assert harness("run", "--arch", "gru", "--tasks", "minimal_pairs", "--set", f"path={path}",
                   "--results", tmp_path / "r", "--no-progress", *TINY_SETS) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error:") and str(path) in err and "gzip" in err


def test_a_data_error_pickles_and_is_a_value_error(tmp_path):
    err = DataError(tmp_path / "x.txt", "bad tag", 3)
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, ValueError) and str(again) == str(err) == f"{tmp_path / 'x.txt'}:3: bad tag"
    assert again.line == 3 and again.path == tmp_path / "x.txt"


def test_a_file_edited_in_place_is_read_again(tmp_path):
    from tasks.ner import read_conll

    path = tmp_path / "a.conll"
    path.write_text(conll(NER_ROWS[:1]))
    assert len(read_conll(path)[0]) == 1
    path.write_text(conll(NER_ROWS[:2]))
    assert len(read_conll(path)[0]) == 2


# 3. lm-eval configs are data -------------------------------------------------------------------

NASTY = 'a"b\'c: d #e\n!function os.system'


def _lm_eval_load(text, folder, resolve=False):
    """The config lm-eval reads from ``text``; with ``resolve``, its ``!function`` tags are
    imported from the helper modules placed beside it, as ``LMEvalSuite.task_manager`` places them."""
    from lm_eval.tasks._yaml_loader import load_yaml
    from tasks.lm_eval.suites import place_helpers

    path = folder / "task.yaml"
    path.write_text(text, encoding="utf-8")
    if resolve:
        place_helpers(folder)
    return load_yaml(path, resolve_func=resolve)


def _old_render(template, **fields):
    """The string replacement the configs were rendered with before (safe values only)."""
    from tasks.lm_eval.suites import TEMPLATES

    text = (TEMPLATES / template).read_text(encoding="utf-8")
    for key, value in fields.items():
        text = text.replace(f"@{key}@", str(value))
    return text


@pytest.mark.parametrize("template", ["figqa.yaml", "minimal_pair.yaml", "minimal_pair_word.yaml",
                                      "wsc273_full.yaml", "wsc273_partial.yaml"])
def test_rendered_configs_load_in_lm_eval_exactly_as_before(tmp_path, template):
    pytest.importorskip("lm_eval")
    from tasks.lm_eval.templates import render as _render

    fields = {"DATA_DIR": "/data/shared", "TASK": "blimp_x", "FILE": "/data/blimp/x.jsonl.gz"}
    assert _lm_eval_load(_render(template, **fields), tmp_path) == \
        _lm_eval_load(_old_render(template, **fields), tmp_path)


def test_a_path_cannot_add_yaml_of_its_own(tmp_path):
    pytest.importorskip("lm_eval")
    from tasks.lm_eval.suites import MinimalPairs
    from tasks.lm_eval.templates import render as _render

    folder = tmp_path / NASTY
    folder.mkdir(parents=True)
    path = pairs(folder / "pairs.jsonl")
    task = MinimalPairs(MinimalPairs.Options(path=str(path)), None)
    config = _lm_eval_load(task.rendered()["pairs"], tmp_path, resolve=True)
    assert config["dataset_kwargs"] == {"data_files": {"train": str(path.resolve())}}
    assert config["task"] == "pairs"
    assert set(config) == set(_lm_eval_load(_old_render("minimal_pair.yaml", TASK="t", FILE="/f"), tmp_path))
    # the templates' own !function tags still resolve; a value with the text !function stays a string
    wsc = _lm_eval_load(_render("wsc273_full.yaml", DATA_DIR=NASTY + " @TASK@"), tmp_path, resolve=False)
    assert wsc["dataset_kwargs"] == {"path": NASTY + " @TASK@/wsc/WSCollection.xml"}
    assert wsc["custom_dataset"].endswith("wsc273.load") and wsc["doc_to_target"].endswith("wsc273.gold")


def test_lm_eval_loads_a_suite_from_a_path_with_quotes(tmp_path):
    pytest.importorskip("lm_eval")
    from tasks.lm_eval.suites import MinimalPairs

    folder = tmp_path / 'it\'s "my" #1: pairs'
    folder.mkdir()
    task = MinimalPairs(MinimalPairs.Options(path=str(pairs(folder / "pairs.jsonl"))), None)
    (tmp_path / "rendered").mkdir()
    manager = task.task_manager(str(tmp_path / "rendered"))  # the folder lm-eval reads
    assert sorted(manager.all_tasks) == ["pairs"]


# 4. language prefixes --------------------------------------------------------------------------

def test_a_prefix_on_every_token_is_stripped_with_one_line(tmp_path, capsys):
    from harness.core.registry import TASKS

    files = {}
    for split in ("train", "dev", "test"):
        files[split] = tmp_path / f"{split}.conll"
        files[split].write_text(conll(NER_ROWS, prefix="en:"), encoding="utf-8")
    cls = TASKS.get("ner")
    task = cls(cls.Options(**{k: str(v) for k, v in files.items()}), None)
    assert task.sentences["train"][0].words == ("John", "Smith", "visited", "Paris")
    assert task.info()["prefix_stripped"] == {"train": "en:", "dev": "en:", "test": "en:"}
    err = capsys.readouterr().err
    assert err.count("starts with 'en:': stripped") == 3 and str(files["train"]) in err
    cls(cls.Options(**{k: str(v) for k, v in files.items()}), None)
    assert "stripped" not in capsys.readouterr().err, "said once per file"
    kept = cls(cls.Options(**{k: str(v) for k, v in files.items()}, keep_prefix=True), None)
    assert kept.sentences["train"][0].words[0] == "en:John"


def test_a_prefix_on_some_tokens_only_is_kept(tmp_path):
    from tasks.ner import read_conll, shared_prefix

    path = tmp_path / "mixed.conll"
    path.write_text(conll(NER_ROWS, prefix="en:") + "\n" + conll([[("http:x", "O")]]))
    assert shared_prefix(read_conll(path)[0]) is None


def test_the_new_option_keeps_ner_ids():
    from tasks.ner import NEROptions

    assert "keep_prefix" not in NEROptions().model_dump(mode="json")
    assert NEROptions(keep_prefix=False).model_dump(mode="json") == NEROptions().model_dump(mode="json")
    assert NEROptions(keep_prefix=True).model_dump(mode="json")["keep_prefix"] is True
    default, = expand(["gru"], ["ner"])
    explicit, = expand(["gru"], ["ner"], overrides={"keep_prefix": [False]})
    kept, = expand(["gru"], ["ner"], overrides={"keep_prefix": [True]})
    assert default.run_id == explicit.run_id != kept.run_id


def test_wikiann_is_such_an_export_and_wnut17_and_conll2003_are_not(data_dir):
    from tasks.ner import read_conll, shared_prefix

    sentences, _ = read_conll(data_dir / "wikiann_en" / "dev.gz")
    assert len(sentences) == 10000 and shared_prefix(sentences) == "en:"
    wnut, _ = read_conll(data_dir / "wnut17" / "wnut17train.conll")
    assert len(wnut) == 3394 and shared_prefix(wnut) is None  # tab-only lines separate sentences
    assert shared_prefix(read_conll(data_dir / "conll2003" / "eng.testa.gz")[0]) is None
