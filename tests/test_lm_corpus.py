"""The lm task's corpus options: your own text files, WikiText-103 from the data folder, a capped
vocabulary and tied embeddings; each keeps the ids of runs made before it."""
import gzip
import hashlib
import json
from collections import Counter

import pytest
import torch

from harness.config import RunConfig
from harness.core.data import DataError
from harness.store import RunStore
from harness.sweep import expand
from tasks.lm import EOS, UNK, Corpus, LMOptions, WikiText2LM, read_corpus_file
from tests.conftest import TINY_SETS, harness

pytestmark = pytest.mark.data


def wikitext_lines(data_dir, split: str, n: int) -> list[str]:
    with gzip.open(data_dir / "wikitext2" / f"{split}.txt.gz", "rt", encoding="utf-8") as f:
        return [next(f) for _ in range(n)]


@pytest.fixture
def own_corpus(tmp_path, data_dir):
    """The first lines of WikiText-2's splits as files of one's own: train gzipped, the others plain."""
    files = {}
    for split, n in (("train", 400), ("valid", 60), ("test", 60)):
        text = "".join(wikitext_lines(data_dir, split, n))
        path = tmp_path / (f"{split}.txt.gz" if split == "train" else f"{split}.txt")
        path.write_bytes(gzip.compress(text.encode()) if split == "train" else text.encode())
        files[split] = path
    return files


def corpus_sets(files) -> list[str]:
    return [f"--set={split}={path}" for split, path in files.items()]


def test_own_files_are_read_as_wikitext_is(own_corpus, data_dir):
    task = WikiText2LM(LMOptions(**{k: str(v) for k, v in own_corpus.items()}), data_dir)
    lines = wikitext_lines(data_dir, "train", 400)
    expected = [tok for line in lines for tok in line.split() + [EOS]]
    assert len(task.corpus.streams["train"]) == len(expected)
    assert [task.corpus.vocab[i] for i in task.corpus.streams["train"][:50]] == expected[:50]
    counts = Counter(expected)
    assert task.corpus.vocab[0] == counts.most_common(1)[0][0], "frequency-sorted"
    # a valid word never seen in training reads as <unk>
    valid = [tok for line in wikitext_lines(data_dir, "valid", 60) for tok in line.split() + [EOS]]
    unseen = sum(tok not in counts for tok in valid)
    assert unseen > 0
    assert int((task.corpus.streams["valid"] == task.corpus.index[UNK]).sum()) == \
        unseen + sum(tok == UNK for tok in valid)
    assert task.info()["corpus"] == "your own" and task.info()["tokens"]["train"] == len(expected)


def test_own_corpus_trains_through_harness_run_and_its_files_join_the_id(tmp_path, own_corpus):
    overrides = {k: [str(v)] for k, v in own_corpus.items()}
    (cfg,) = expand(["gru"], ["lm"], overrides=overrides)
    assert cfg.inputs == {k: hashlib.sha256(v.read_bytes()).hexdigest() for k, v in own_corpus.items()}
    assert harness("run", "--arch", "gru", "--tasks", "lm", "--results", tmp_path / "r", "--device", "cpu",
                   "--no-progress", *TINY_SETS, *corpus_sets(own_corpus)) == 0
    store = RunStore(tmp_path / "r")
    runs = store.runs()
    assert len(runs) == 1 and runs.status[0] == "finished"
    assert json.loads(runs.config[0])["inputs"] == cfg.inputs
    record = store.record(runs.run_id[0])
    assert record["info"]["corpus"] == "your own"
    assert any(m["metric"] == "ppl" and m["split"] == "test" for m in record["metrics"])
    own_corpus["valid"].write_text("a different valid file\n", encoding="utf-8")
    assert expand(["gru"], ["lm"], overrides=overrides)[0].run_id != cfg.run_id


def test_the_built_in_lm_ids_do_not_change():
    for cfg in expand(["gru", "transformer"], ["lm"]):
        assert cfg.inputs is None
        dumped = cfg.model_dump(mode="json")["task_options"]
        assert not {"train", "valid", "test", "corpus", "max_vocab", "tie_embeddings"} & set(dumped)
    # wikitext2 named explicitly is the same run as the default
    default = expand(["gru"], ["lm"])[0].run_id
    assert expand(["gru"], ["lm"], overrides={"corpus": ["wikitext2"]})[0].run_id == default


@pytest.mark.parametrize("options,message", [
    ({"train": "a.txt"}, "needs all three files: --set valid=FILE, test=FILE"),
    ({"train": "a", "valid": "b", "test": "c", "corpus": "wikitext103"}, "exclude each other"),
    ({"tie_embeddings": True}, "needs softmax=full"),
    ({"max_vocab": 1}, "greater than or equal to 2"),
])
def test_inconsistent_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        LMOptions(**options)


def test_a_missing_or_empty_file_is_named(tmp_path, own_corpus, capsys, data_dir):
    missing = tmp_path / "nope.txt"
    assert harness("run", "--arch", "gru", "--tasks", "lm", "--results", tmp_path / "r", "--no-progress",
                   *TINY_SETS, *corpus_sets({**own_corpus, "test": missing})) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error:") and str(missing) in err and "does not exist" in err
    assert not (tmp_path / "r").exists(), "nothing written"
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no words") as caught:
        read_corpus_file(empty)
    assert caught.value.path == empty


def test_max_vocab_keeps_the_most_frequent_words_and_counts_the_rest_as_unk(data_dir):
    lines = [line.split() + [EOS] for line in wikitext_lines(data_dir, "train", 300)]
    full = Corpus({"train": lines, "valid": lines[:5], "test": lines[:5]})
    capped = Corpus({"train": lines, "valid": lines[:5], "test": lines[:5]}, max_vocab=100)
    assert len(full.vocab) > 100 and len(capped.vocab) == 100 and UNK in capped.vocab
    assert set(capped.vocab) - {UNK} == set([w for w in full.vocab if w != UNK][:99])
    unk = capped.index[UNK]
    kept = set(capped.vocab) - {UNK}
    assert int((capped.streams["train"] == unk).sum()) == sum(tok not in kept for line in lines for tok in line)
    assert len(capped.streams["train"]) == len(full.streams["train"])


def test_tied_embeddings_share_one_matrix_and_train(lm_task):
    from architectures.sizing import build_backbone
    from tasks.lm import LanguageModel

    options = LMOptions(softmax="full", tie_embeddings=True)
    model = LanguageModel(build_backbone("lstm", "tiny", {}), len(lm_task.corpus.vocab), options)
    assert model.head.weight is model.embed.weight
    untied = LanguageModel(build_backbone("lstm", "tiny", {}), len(lm_task.corpus.vocab), LMOptions(softmax="full"))
    n = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in untied.parameters()) - n == model.embed.weight.numel()
    tokens = lm_task.corpus.streams["train"][:33].view(1, -1)
    loss = -model.token_logprobs(tokens[:, :-1], tokens[:, 1:], torch.ones(1, 32, dtype=torch.bool)).mean()
    loss.backward()
    assert model.embed.weight.grad is not None and model.embed.weight.grad.abs().sum() > 0


def test_wikitext103_is_read_from_the_data_folder_and_its_absence_says_where(tmp_path, data_dir, capsys):
    folder = tmp_path / "data" / "wikitext103"
    folder.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (folder / f"{split}.txt.gz").write_bytes(gzip.compress("".join(wikitext_lines(data_dir, split, 80)).encode()))
    task = WikiText2LM(LMOptions(corpus="wikitext103"), tmp_path / "data")
    assert task.info()["corpus"] == "wikitext103"
    assert len(task.corpus.streams["valid"]) == sum(len(l.split()) + 1 for l in wikitext_lines(data_dir, "valid", 80))
    cfg = RunConfig.model_validate(expand(["gru"], ["lm"], overrides={"corpus": ["wikitext103"]})[0].model_dump())
    assert cfg.task_options["corpus"] == "wikitext103"
    assert harness("run", "--arch", "gru", "--tasks", "lm", "--set", "corpus=wikitext103", "--results",
                   tmp_path / "r", "--data-dir", tmp_path / "nowhere", "--dry-run") == 0
    assert harness("run", "--arch", "gru", "--tasks", "lm", "--set", "corpus=wikitext103", "--results",
                   tmp_path / "r", "--data-dir", tmp_path / "nowhere", "--no-progress", *TINY_SETS) == 2
    err = capsys.readouterr().err
    assert "dataset 'wikitext103' not found" in err and "DIR/wikitext103/ holds those files." in err
    assert "harness data fetch" not in err, "nothing in the registry to fetch it from"
