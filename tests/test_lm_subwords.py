"""Subword language models (``--set bpe_vocab=N``): the corpus cut into BPE pieces learned on its
training split, bits per character that compare them with word models, their own task label (their
perplexity is another unit), and the zero-shot tasks that score them."""
import gzip
import json
import math

import pytest
import torch

from architectures.sizing import build_backbone
from harness.rows import row_labels, upstream_configs
from harness.store import RunStore
from harness.sweep import expand
from tasks.agreement_lm import AgreementLM
from tasks.base import TaskOptions, Upstream
from tasks.lm import EOS, UNK, Corpus, LanguageModel, LMOptions, WikiText2LM, continuation_scores, train_bpe
from tasks.lm_eval.tokenizer import SubwordTokenizer, Tokenizer, tokenizer_for, wikitext_tokens
from harness.core.train_config import TrainConfig
from tests.conftest import TINY_SETS, harness

pytestmark = pytest.mark.data

BPE = 300


def wikitext_lines(data_dir, split: str, n: int) -> list[str]:
    with gzip.open(data_dir / "wikitext2" / f"{split}.txt.gz", "rt", encoding="utf-8") as f:
        return [next(f) for _ in range(n)]


@pytest.fixture(scope="module")
def own_files(tmp_path_factory, data_dir):
    """The first lines of WikiText-2's splits as files of one's own."""
    folder = tmp_path_factory.mktemp("corpus")
    files = {}
    for split, n in (("train", 400), ("valid", 60), ("test", 60)):
        files[split] = folder / f"{split}.txt"
        files[split].write_text("".join(wikitext_lines(data_dir, split, n)), encoding="utf-8")
    return files


@pytest.fixture(scope="module")
def tasks(own_files, data_dir):
    """The same files as a word lm and as a subword lm."""
    paths = {k: str(v) for k, v in own_files.items()}
    return WikiText2LM(LMOptions(**paths), data_dir), WikiText2LM(LMOptions(**paths, bpe_vocab=BPE), data_dir)


def test_pieces_spell_the_words_and_the_characters_match_the_word_corpus(tasks, own_files):
    word, sub = tasks
    lines = own_files["train"].read_text(encoding="utf-8").splitlines()
    pieces = [sub.corpus.vocab[i] for i in sub.corpus.streams["train"]]
    # WikiText's own <unk> is one piece (a special token, without ▁): a whole word
    text = "".join({EOS: "\n", UNK: "▁" + UNK}.get(p, p) for p in pieces).replace("▁", " ")
    assert text.split("\n")[:-1] == [" " + " ".join(line.split()) if line.split() else "" for line in lines]
    assert set(sub.corpus.vocab) == set(sub.bpe.get_vocab()) | {EOS}, "every piece has an id, seen in training or not"
    assert not [w for w in sub.bpe.get_vocab() if "unk>" in w and w != UNK], "WikiText's <unk> teaches no merges"
    assert len(sub.corpus.streams["train"]) > len(word.corpus.streams["train"])
    for split in ("train", "valid", "test"):
        assert int(sub.corpus.chars[split].sum()) == int(word.corpus.chars[split].sum()), split
        assert len(sub.corpus.chars[split]) == len(sub.corpus.streams[split])
    # each line's characters: its words, each with the space or newline after it
    expected = sum(sum(len(w) + 1 for w in line.split()) or 1 for line in lines)
    assert int(word.corpus.chars["train"].sum()) == expected
    info = sub.info()
    assert info["tokenizer"] == f"bpe{BPE}" and word.info()["tokenizer"] == "word"
    assert info["chars"]["valid"] == word.info()["chars"]["valid"]


def test_a_word_never_seen_in_training_is_spelt_in_pieces_not_unk(tasks, own_files):
    word, sub = tasks
    train_words = {w for line in own_files["train"].read_text(encoding="utf-8").split("\n") for w in line.split()}
    unseen = [w for w in own_files["valid"].read_text(encoding="utf-8").split() if w not in train_words]
    assert unseen
    words = Tokenizer(word.corpus.vocab)
    pieces = SubwordTokenizer(sub.corpus.vocab, sub.bpe)
    assert all(i == words.unk for i in words.lookup(unseen))
    alphabet = {c for w in train_words for c in w}
    spellable = [w for w in unseen if set(w) <= alphabet] + ["a", "cab", "zyzzogeton", "ab"]
    ids = pieces.lookup(spellable)
    assert len(ids) >= len(spellable) and pieces.unk not in ids, "a word of seen characters is never <unk>"
    assert pieces.unk in pieces.lookup(["\u2603"]), "a character never seen is"


def test_bpe_training_is_deterministic(own_files):
    lines = tuple(tuple(line.split()) + (EOS,) for line in own_files["train"].read_text(encoding="utf-8").split("\n"))
    first = train_bpe.__wrapped__(lines, BPE).to_str()
    assert train_bpe.__wrapped__(lines, BPE).to_str() == first
    assert train_bpe.__wrapped__(lines, BPE + 50).to_str() != first


@pytest.mark.parametrize("kind", [0, 1])
def test_bits_per_character_is_the_loss_over_the_characters(tasks, kind, own_files):
    task = tasks[kind]
    torch.manual_seed(0)
    model = task.build_model(build_backbone("gru", "tiny")).eval()
    train = TrainConfig(steps=1, batch_size=2, seq_len=16)
    metrics = {(m.name, m.length): m.value for m in task.evaluate(model, "valid", train, None)}
    tokens = len(task.corpus.streams["valid"]) - 1
    # the characters of the text: each line's words joined by spaces, and its newline; the first
    # token (the newline of WikiText's empty first line) is never predicted
    lines = own_files["valid"].read_text(encoding="utf-8").splitlines()
    assert not lines[0].split()
    chars = sum(len(" ".join(line.split())) + 1 for line in lines) - 1
    assert metrics[("bpc", 16)] == pytest.approx(metrics[("loss", 16)] * tokens / chars / math.log(2), rel=1e-9)
    assert metrics[("ppl", 16)] == pytest.approx(math.exp(metrics[("loss", 16)]))
    unk = task.corpus.index[UNK]
    assert metrics[("unk_rate", None)] == pytest.approx(float((task.corpus.streams["valid"][1:] == unk).double().mean()))
    assert metrics[("unk_rate", None)] > 0, "WikiText's own <unk>"


def test_an_adaptive_softmax_over_a_vocabulary_below_its_first_cutoff_is_a_full_one(tasks):
    _, sub = tasks
    assert len(sub.corpus.vocab) < LMOptions().cutoffs[0]
    model = sub.build_model(build_backbone("gru", "tiny"))
    assert not model.adaptive and model.head.out_features == len(sub.corpus.vocab)


def test_the_subword_tokenizer_splits_context_and_continuation_on_a_word(tasks):
    _, sub = tasks
    tokenizer = tokenizer_for(sub.corpus.vocab, {"bpe": sub.bpe})
    assert isinstance(tokenizer, SubwordTokenizer)
    assert type(tokenizer_for(sub.corpus.vocab, {})) is Tokenizer
    context, continuation = tokenizer.split("The girl had", " the flightiness of a sparrow.")
    assert context + continuation == tokenizer.ids("The girl had the flightiness of a sparrow.")
    assert sub.corpus.vocab[continuation[0]].startswith("▁"), "the continuation starts on a word"
    pieces = "".join(sub.corpus.vocab[i] for i in continuation).replace("▁", " ")
    assert pieces == " " + " ".join(wikitext_tokens("the flightiness of a sparrow."))
    # a word that straddles the boundary belongs to the continuation
    context, continuation = tokenizer.split("The spar", "row sang")
    assert "".join(sub.corpus.vocab[i] for i in continuation).replace("▁", " ") == " sparrow sang"


def test_the_adapter_scores_a_subword_lm_with_its_own_pieces(tasks):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from tasks.lm_eval.adapter import HarnessLM

    _, sub = tasks
    torch.manual_seed(1)
    model = LanguageModel(build_backbone("lstm", "tiny"), len(sub.corpus.vocab), LMOptions())
    adapter = HarnessLM(model, sub.corpus.vocab, batch_size=2, extra=sub.as_upstream(model).extra)
    requests = [("The girl had", " the flightiness of a sparrow ."), ("", "The cat sat ."), ("He said", " it")]
    got = adapter.loglikelihood([Instance("loglikelihood", {}, r, i) for i, r in enumerate(requests)])
    eos = sub.corpus.index[EOS]
    for (context, continuation), (lp, _) in zip(requests, got):
        head, tail = adapter.tokenizer.split(context, continuation)
        ids = [eos, *head, *tail]
        x = torch.tensor(ids[:-1])[None]
        with torch.no_grad():
            full = model.log_probs(x, torch.ones_like(x, dtype=torch.bool))[0]
        expected = sum(full[t, ids[t + 1]].item() for t in range(len(head), len(ids) - 1))
        assert lp == pytest.approx(expected, abs=1e-4)


def test_agreement_of_a_subword_lm_scores_every_item_by_all_pieces_of_each_form(tasks, data_dir):
    _, sub = tasks
    task = AgreementLM(TaskOptions(), data_dir)
    torch.manual_seed(2)
    model = LanguageModel(build_backbone("gru", "tiny"), len(sub.corpus.vocab), LMOptions()).eval()
    upstream = sub.as_upstream(model)
    assert upstream.extra["bpe"] is sub.bpe
    metrics = {m.name: m.value for m in task.evaluate_upstream(upstream, "gulordava")}
    items = task.items["gulordava"]
    assert metrics["coverage"] == 1.0 and metrics["items"] == len(items)
    tokenizer = tokenizer_for(upstream.vocab, upstream.extra)
    right = 0
    for item in items:
        prefix = tokenizer.lookup(list(item.prefix))
        (good, _), (bad, _) = continuation_scores(model, [(prefix, tokenizer.lookup([item.correct])),
                                                         (prefix, tokenizer.lookup([item.wrong]))],
                                                  tokenizer.eos)
        right += good > bad
    assert metrics["accuracy"] == pytest.approx(right / len(items))


def test_options_keep_old_ids_and_refuse_what_cannot_be(data_dir):
    default = expand(["gru"], ["lm"])[0]
    assert "bpe_vocab" not in default.model_dump(mode="json")["task_options"]
    (sub,) = expand(["gru"], ["lm"], overrides={"bpe_vocab": [BPE]})
    assert sub.run_id != default.run_id and sub.task_label == f"lm/bpe{BPE}" and default.task_label == "lm"
    with pytest.raises(ValueError, match="a subword lm's size is bpe_vocab"):
        LMOptions(bpe_vocab=BPE, max_vocab=1000)
    with pytest.raises(ValueError, match="greater than or equal to 64"):
        LMOptions(bpe_vocab=10)
    with pytest.raises(ValueError, match="probe_pos: the probes read a model's states at words"):
        expand(["gru"], ["probe_pos"], overrides={"bpe_vocab": [BPE]})


def test_word_and_subword_lms_and_their_zero_shot_runs_never_share_a_row_or_column(tmp_path, own_files, capsys):
    files = [f"--set={k}={v}" for k, v in own_files.items()]
    results = tmp_path / "r"
    for extra in ([], [f"--set=bpe_vocab={BPE}"]):
        assert harness("run", "--arch", "gru", "--tasks", "lm,agreement_lm", "--results", results, "--device",
                       "cpu", "--no-progress", *TINY_SETS, *files, *extra) == 0
    store = RunStore(results)
    runs = store.runs()
    assert len(runs) == 4 and set(runs.status) == {"finished"}
    lms = {json.loads(c)["task_options"].get("bpe_vocab"): r for r, c, t in zip(runs.run_id, runs.config, runs.task)
           if t == "lm"}
    for bpe, run_id in lms.items():
        metrics = {(m["split"], m["metric"]) for m in store.record(run_id)["metrics"]}
        assert {("test", "bpc"), ("test", "ppl")} <= metrics
        assert store.record(run_id)["info"]["tokenizer"] == (f"bpe{BPE}" if bpe else "word")
    capsys.readouterr()
    assert harness("table", "--results", results, "--format", "csv") == 0
    out = capsys.readouterr().out
    assert f"lm/bpe{BPE}" in out and "agreement_lm" in out
    assert f"gru[lm.bpe_vocab={BPE}]" in out, "the zero-shot row of the subword lm is its own row"
    # alone in a table, a subword lm's zero-shot row still says which lm it scores
    sub_only = runs[runs.task == "agreement_lm"]
    labels = row_labels(sub_only, upstreams=upstream_configs(store))
    assert sorted(labels.values()) == ["gru", f"gru[lm.bpe_vocab={BPE}]"]
    one = sub_only[sub_only.run_id.map(labels) != "gru"]
    assert list(row_labels(one, upstreams=upstream_configs(store)).values()) == [f"gru[lm.bpe_vocab={BPE}]"]
