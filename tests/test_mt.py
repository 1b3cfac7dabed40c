"""mt: greedy and beam search, incremental decoding, BLEU/chrF by sacrebleu, your own files."""
import gzip
import json
import math

import pytest
import torch

from architectures.sizing import build_backbone
from tasks.decoding import beam_search, greedy
from harness.core.registry import ARCHITECTURES, TASKS
from harness.store import RunStore
from tasks.mt import BOS, EOS
from tests.conftest import TINY_SETS, harness

SLICES = {"train": 400, "val": 40, "test_2016_flickr": 40}


@pytest.fixture(scope="module")
def own_files(data_dir, tmp_path_factory):
    """The first lines of Multi30k's splits as plain parallel files."""
    folder = tmp_path_factory.mktemp("parallel")
    files = {}
    for split, n in SLICES.items():
        for lang in ("en", "de"):
            with gzip.open(data_dir / "multi30k" / "raw" / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
                lines = [next(f) for _ in range(n)]
            path = folder / f"{split}.{lang}"
            path.write_text("".join(lines), encoding="utf-8")
            files[split, lang] = path
    return {"train_src": files["train", "en"], "train_tgt": files["train", "de"],
            "valid_src": files["val", "en"], "valid_tgt": files["val", "de"],
            "test_src": files["test_2016_flickr", "en"], "test_tgt": files["test_2016_flickr", "de"]}


def options(own_files, **extra):
    return {**{k: str(v) for k, v in own_files.items()}, "vocab_size": 400, **extra}


@pytest.fixture(scope="module")
def task(own_files):
    cls = TASKS.get("mt")
    return cls(cls.Options(**options(own_files)), None)


def model_for(task, arch):
    torch.manual_seed(0)
    cls = ARCHITECTURES.get(arch)
    return task.build_model(build_backbone(arch, "tiny", {"bidirectional": cls.supports_bidirectional})).eval()


def test_subwords_round_trip_to_the_raw_text(task):
    src, tgt = task.text["train"]
    for line in src[:50] + tgt[:50]:
        tok = task.src_tok
        assert tok.decode(tok.encode(line).ids) == " ".join(line.split())


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_incremental_decoding_equals_full_recomputation(task, arch):
    model = model_for(task, arch)
    batch = task._batch(task.encoded["test"][:6])
    fast = greedy(model, batch["src"], batch["src_mask"], BOS, EOS, max_len=12)
    slow = greedy(model, batch["src"], batch["src_mask"], BOS, EOS, max_len=12, incremental=False)
    assert [h.tokens for h in fast] == [h.tokens for h in slow]
    assert [h.score for h in fast] == pytest.approx([h.score for h in slow], abs=1e-4)
    assert any(len(h.tokens) > 2 for h in fast), "long enough to exercise the state"


@pytest.mark.parametrize("arch", ["lstm", "cnn", "transformer"])
def test_beam_of_width_one_is_greedy(task, arch):
    model = model_for(task, arch)
    batch = task._batch(task.encoded["valid"][:8])
    a = greedy(model, batch["src"], batch["src_mask"], BOS, EOS, max_len=15)
    b = beam_search(model, batch["src"], batch["src_mask"], BOS, EOS, max_len=15, width=1)
    assert [h.tokens for h in a] == [h.tokens for h in b]
    assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-6)


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_the_loss_scores_only_real_target_tokens_and_equals_the_padded_one(task, arch):
    model = model_for(task, arch)
    batch = task._batch(task.encoded["train"][:16], 64)
    assert (batch["tgt_out"] == 0).float().mean() > 0.2, "the batch has padding to skip"
    losses, grads = [], []
    for padded in (True, False):
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout masks both ways
        model.train()
        if padded:
            logits = model(batch["src"], batch["src_mask"], batch["tgt_in"], batch["tgt_mask"])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["tgt_out"].flatten(), ignore_index=0)
        else:
            loss = task.loss(model, batch)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert torch.allclose(grads[1], grads[0], rtol=1e-4, atol=1e-7)


def loop_beam_search(model, src, src_mask, bos, eos, max_len, width, alpha=1.0):
    """The beam search as first written: one source and one candidate at a time in Python. The
    vectorised ``beam_search`` must give exactly its answers. Also returns how many hypotheses
    ended and how many sources ran out of length, so a test knows which branches it reached."""
    B, K = src.shape[0], width
    memory = model.encode(src, src_mask).repeat(K)
    state = model.start(memory)
    tokens = torch.full((B * K,), bos, dtype=torch.long)
    scores = torch.full((B, K), float("-inf"), dtype=torch.float64)
    scores[:, 0] = 0.0
    history = torch.empty(B * K, 0, dtype=torch.long)
    finished = [[] for _ in range(B)]
    done = [False] * B
    endings = 0
    for t in range(max_len):
        logp, state = model.step(tokens, state, memory)
        V = logp.shape[-1]
        candidates = (scores[:, :, None] + logp.double().view(B, K, V)).view(B, K * V)
        top, index = candidates.topk(min(2 * K, K * V), dim=1)
        top, index = top.tolist(), index.tolist()
        new_scores = torch.full((B, K), float("-inf"), dtype=torch.float64)
        new_beam = torch.zeros(B, K, dtype=torch.long)
        new_token = torch.full((B, K), eos, dtype=torch.long)
        for b in range(B):
            if done[b]:
                continue
            kept = 0
            for rank, (score, flat) in enumerate(zip(top[b], index[b])):
                if score == float("-inf"):
                    break
                beam, token = divmod(flat, V)
                if token == eos:
                    if rank < K:
                        endings += 1
                        finished[b].append((score / (t + 1) ** alpha, (history[b * K + beam].tolist(), score)))
                else:
                    new_scores[b, kept], new_beam[b, kept], new_token[b, kept] = score, beam, token
                    kept += 1
                    if kept == K:
                        break
            done[b] = len(finished[b]) >= K
        if all(done):
            break
        rows = (torch.arange(B)[:, None] * K + new_beam).view(-1)
        state = model.reorder(state, rows)
        tokens = new_token.view(-1)
        history = torch.cat([history.index_select(0, rows), tokens[:, None]], 1)
        scores = new_scores
    results = []
    for b in range(B):
        if not done[b]:
            for k in range(K):
                score = float(scores[b, k])
                if score > float("-inf"):
                    words = history[b * K + k].tolist()
                    finished[b].append((score / max(1, len(words)) ** alpha, (words, score)))
        results.append(max(finished[b], key=lambda f: f[0])[1])
    return results, endings, done.count(False)


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_beam_search_equals_the_loop_over_candidates(task, arch):
    model = model_for(task, arch)
    src, mask = (task._batch(task.encoded["test"][:8])[k] for k in ("src", "src_mask"))
    with torch.no_grad():  # how far the end token's first log-probability is below the best
        memory = model.encode(src, mask)
        logp, _ = model.step(torch.full((len(src),), BOS), model.start(memory), memory)
        gap = float((logp.max(-1).values - logp[:, EOS]).median())
    endings = out_of_length = 0
    for i, q in enumerate((0.0, 0.4, 0.6, 0.8, 0.95, 1.0)):
        width, alpha = (2, 3, 4, 5)[i % 4], (1.0, 0.0, 0.6)[i % 3]
        with torch.no_grad():  # a more likely end token: sources end at different steps, or never
            model.out.bias[EOS] += q * gap
            fast = beam_search(model, src, mask, BOS, EOS, 14, width, alpha)
            slow, ended, unfinished = loop_beam_search(model, src, mask, BOS, EOS, 14, width, alpha)
            model.out.bias[EOS] -= q * gap
        assert [(h.tokens, h.score) for h in fast] == slow, f"end-token shift {q}, width {width}, alpha {alpha}"
        endings, out_of_length = endings + ended, out_of_length + unfinished
    assert endings > 0 and out_of_length > 0, "both ways for a source to finish were reached"


class Table:
    """A decoder whose next-token distribution depends only on the last token."""

    def __init__(self, rows: dict[int, dict[int, float]], vocab: int):
        self.logp = torch.full((vocab, vocab), -1e9)
        for prev, nxt in rows.items():
            for tok, p in nxt.items():
                self.logp[prev, tok] = math.log(p)

    class _Memory:
        def repeat(self, k):
            return self

    def encode(self, src, mask):
        return self._Memory()

    def start(self, memory):
        return None

    def step(self, tokens, state, memory):
        return self.logp[tokens], tokens

    @staticmethod
    def reorder(state, index):
        return state[index]


@pytest.mark.parametrize("width", [2, 4, 5])
def test_beam_search_equals_the_loop_on_a_vocabulary_smaller_than_two_beams(width):
    """Every continuation of every beam is a candidate when the vocabulary has fewer than
    2·width tokens; distinct random log-probabilities, so no two candidates tie."""
    endings = out_of_length = 0
    for seed in range(5):
        torch.manual_seed(seed)
        model = Table({}, vocab=6)
        model.logp = torch.randn(6, 6).mul(2).log_softmax(-1)
        src, mask = torch.zeros(3, 4, dtype=torch.long), torch.ones(3, 4, dtype=torch.bool)
        fast = beam_search(model, src, mask, BOS, EOS, 7, width, 0.6)
        slow, ended, unfinished = loop_beam_search(model, src, mask, BOS, EOS, 7, width, 0.6)
        assert [(h.tokens, h.score) for h in fast] == slow, f"seed {seed}"
        endings, out_of_length = endings + ended, out_of_length + unfinished
    assert endings > 0 and out_of_length > 0, "both ways for a source to finish were reached"


def test_beam_search_finds_what_greedy_misses():
    A, B = 4, 5
    # greedy takes A (0.6), then has to end at 0.34: 0.204; B (0.4) then the end (1.0) is 0.4
    model = Table({BOS: {A: 0.6, B: 0.4}, A: {EOS: 0.34, A: 0.33, B: 0.33}, B: {EOS: 1.0}}, vocab=6)
    src, mask = torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool)
    g = greedy(model, src, mask, BOS, EOS, max_len=5)[0]
    b = beam_search(model, src, mask, BOS, EOS, max_len=5, width=2)[0]
    assert g.tokens == [A] and b.tokens == [B]
    assert b.score > g.score
    assert b.score == pytest.approx(math.log(0.4))


def test_bleu_of_the_references_is_100_and_the_signature_is_stored(task, monkeypatch):
    refs = list(task.text["test"][1])
    monkeypatch.setattr(task, "translate", lambda model, split, limit=None, width=1: (refs, 1.0, 500))
    from harness.core.train_config import TrainConfig

    monkeypatch.setattr(task, "_loss", lambda model, split: 0.0)
    metrics = {(m.name, m.length): m.value
               for m in task.evaluate(None, "test", TrainConfig(steps=1, batch_size=1, seq_len=8), None)}
    assert metrics["bleu", None] == pytest.approx(100.0) and metrics["chrf", None] == pytest.approx(100.0)
    assert all(v == pytest.approx(100.0) for (name, _), v in metrics.items() if name == "bleu_by_length")
    info = task.info()
    assert info["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert info["chrf_signature"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:")


def test_misaligned_and_malformed_files_are_named(own_files, tmp_path):
    cls = TASKS.get("mt")
    short = tmp_path / "short.de"
    short.write_text("Ein Hund.\n")
    with pytest.raises(ValueError, match=r"misaligned parallel files: .*train.en has 400 lines but .*short.de has 1"):
        cls(cls.Options(**options(own_files, train_tgt=str(short))), None)
    holey = tmp_path / "holey.de"
    holey.write_text("Ein Hund.\n\nEine Katze.\n")
    with pytest.raises(ValueError, match=r"holey.de:2: empty line"):
        cls(cls.Options(**options(own_files, train_tgt=str(holey))), None)
    with pytest.raises(ValueError, match="all six"):
        cls.Options(train_src=str(short))
    with pytest.raises(ValueError, match="did you mean 'test_2017_flickr'"):
        cls.Options(test_sets=["test_2017_flikr"])


def test_multi30k_splits_and_other_test_sets(data_dir):
    cls = TASKS.get("mt")
    task = cls(cls.Options(test_sets=["test_2016_flickr", "test_2018_flickr"], vocab_size=1000), data_dir)
    assert {k: len(v[0]) for k, v in task.text.items()} == {"train": 29000, "valid": 1014, "test": 1000,
                                                          "test_2018_flickr": 1071}
    assert task.final_splits == ("valid", "test", "test_2018_flickr")
    short = cls(cls.Options(train_max_src_words=8, vocab_size=1000), data_dir)
    kept = sum(len(s.split()) <= 8 for s in short.text["train"][0])
    assert 0 < kept < 29000 and len(short.encoded["train"]) == kept


def test_harness_run_translates_with_every_attention(tmp_path, own_files):
    sets = [f"--set={k}={v}" for k, v in options(own_files, beam=2, dev_sentences=10).items()]
    common = ("--tasks", "mt", "--results", tmp_path, "--no-progress", *TINY_SETS, *sets)
    assert harness("run", "--arch", "gru,transformer", *common) == 0
    assert harness("run", "--arch", "gru", *common, "--set", "attention=additive,dot,scaled_dot") == 0
    store = RunStore(tmp_path)
    runs = store.runs()
    assert set(runs.status) == {"finished"} and len(runs) == 5
    infos = [json.loads(i) for i in runs["info"]]
    kinds = {i["backbone"]["attention"] for i in infos}
    assert kinds == {"general", "additive", "dot", "scaled_dot", "cross-attention (per block)"}
    assert all(i["decoding"] == "beam 2, alpha 1.0" and "tok:13a" in i["bleu_signature"] for i in infos)
    assert all(i["backbone"]["encoder"]["causal"] is False and i["backbone"]["decoder"]["causal"] for i in infos)
    metrics = store.metrics()
    assert {"bleu", "chrf", "sentences_per_s", "ms_per_token", "bleu_by_length", "loss"} <= set(metrics.metric)
    assert set(metrics[metrics.metric == "bleu"].split) == {"valid", "test"}


def test_the_decoders_cross_attention_stays_out_of_run_ids():
    from harness.config import RunConfig
    from harness.core.train_config import TrainConfig

    cfg = RunConfig(arch="transformer", task="lm", train=TrainConfig(steps=1, batch_size=1, seq_len=8))
    assert "cross_attention" not in cfg.arch_options, "run ids made before encoder-decoders stay valid"
