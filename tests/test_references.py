"""Reference rows: a pretrained Hugging Face causal LM (``--arch hf:<model or path>``) scored by the
zero-shot suites through lm-eval's own ``hf`` model, in the same tables as the trained backbones and
marked as a reference. Offline: the model is a randomly initialised tiny GPT-2 built from a config,
with a BPE tokenizer learned here on WikiText-2 lines."""
import gzip
import json
import sqlite3

import pytest
import torch

pytest.importorskip("lm_eval")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from harness.store import RunStore  # noqa: E402
from harness.sweep import expand  # noqa: E402
from tasks.agreement_lm import AgreementLM  # noqa: E402
from tasks.base import TaskOptions  # noqa: E402
from tasks.lm import continuation_scores  # noqa: E402
from tasks.lm_eval.reference import ReferenceLM, continuation_logprobs, lm_eval_model, load_reference  # noqa: E402
from tests.conftest import TINY_SETS, harness  # noqa: E402

pytestmark = pytest.mark.data

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory, data_dir) -> str:
    """A folder holding a random tiny GPT-2 and a byte-level BPE tokenizer, as from_pretrained reads them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    with gzip.open(data_dir / "wikitext2" / "train.txt.gz", "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(2000)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=600, special_tokens=[EOT], show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=EOT, eos_token=EOT)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=bpe.get_vocab_size(), n_positions=256, n_embd=32, n_layer=2,
                                     n_head=2, bos_token_id=bpe.token_to_id(EOT), eos_token_id=bpe.token_to_id(EOT))
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def reference(tiny_gpt2):
    return load_reference(tiny_gpt2, torch.device("cpu"))


class AsHarnessLM(torch.nn.Module):
    """The GPT-2 as a backbone-free ``lm`` model: states are its last hidden layer, the output
    layer its own head, so the harness's scoring (``continuation_scores``) reads it."""

    adaptive = False

    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    def states(self, inputs, mask):
        return self.hf(input_ids=inputs, attention_mask=mask.long(), output_hidden_states=True).hidden_states[-1]

    def target_logprobs(self, h, targets, greedy=False):
        logits = self.hf.lm_head(h).float()
        lp = torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)
        return lp, logits.argmax(-1) == targets if greedy else None


PAIRS = [("The girl had", " the flightiness of a sparrow ."), ("", "The cat sat on the mat ."),
         ("He said that", " it"), ("In 1999 the", " well @-@ known company 's shares rose"),
         ("A", " b c d e f g h i j k l m n o p q r s t u v w x y z")]


def token_requests(tokenizer) -> list[tuple[list[int], list[int]]]:
    """(context ids, continuation ids) of each pair, as lm-eval's hf model cuts them."""
    out = []
    for context, continuation in PAIRS:
        whole = tokenizer.encode(context + continuation)
        head = tokenizer.encode(context) if context else []
        out.append((head, whole[len(head):]))
    return out


def test_the_harness_scoring_and_lm_eval_hf_give_the_same_log_likelihoods(reference):
    """Same model, same tokens: our adapter's scoring (the eos-prefixed, padded, batched sum of
    continuation_scores) equals lm-eval's hf model's, request by request, at any batch size."""
    hf, tokenizer = reference.model.hf, reference.model.tokenizer
    eot = tokenizer.convert_tokens_to_ids(EOT)
    requests = token_requests(tokenizer)
    ours = {bs: [lp for lp, _ in continuation_scores(AsHarnessLM(hf), requests, eot, batch_size=bs)]
            for bs in (1, 2, 8)}
    theirs = {}
    for bs in (1, 2, 8):
        model = lm_eval_model(reference, bs)
        scored = model._loglikelihood_tokens([((c, x), [eot, *ctx], cont) for (c, x), (ctx, cont)
                                              in zip(PAIRS, requests)], disable_tqdm=True)
        theirs[bs] = [lp for lp, _ in scored]
    for bs in (1, 2, 8):
        assert ours[bs] == pytest.approx(ours[1], abs=1e-4), f"ours changes with batch size {bs}"
        assert theirs[bs] == pytest.approx(theirs[1], abs=1e-4), f"lm-eval's changes with batch size {bs}"
        assert ours[bs] == pytest.approx(theirs[1], abs=1e-4)
    # the text interface: an empty context is read after the end-of-text token, as above
    texts = continuation_logprobs(reference, [PAIRS[1]], batch_size=4)
    assert texts[0] == pytest.approx(ours[1][1], abs=1e-4)


def test_agreement_scores_every_item_through_lm_eval(reference, data_dir):
    task = AgreementLM(TaskOptions(), data_dir)
    metrics = {m.name: m.value for m in task.evaluate_upstream(reference, "gulordava")}
    items = task.items["gulordava"]
    assert metrics["coverage"] == 1.0 and metrics["items"] == len(items)
    first = items[:6]
    scores = continuation_logprobs(reference, [(" ".join(i.prefix), f" {form}") for i in first
                                               for form in (i.correct, i.wrong)], batch_size=5)
    _, right = task.reference_choices(reference, "gulordava")
    assert right[:6] == [scores[2 * k] > scores[2 * k + 1] for k in range(6)]
    assert metrics["accuracy"] == pytest.approx(sum(right) / len(right))


def test_reference_configs_have_no_upstream_one_seed_and_no_training_tasks(tiny_gpt2):
    configs = expand(["lstm", f"hf:{tiny_gpt2}"], ["lm", "figqa", "ner", "agreement_lm"], seeds=[0, 1],
                     overrides={"lr": [1e-3]})
    refs = [c for c in configs if c.arch.startswith("hf:")]
    assert sorted(c.task for c in refs) == ["agreement_lm", "figqa"], "a reference runs only zero-shot suites"
    assert all(c.upstream is None and c.seed == 0 and c.size == "pretrained" and c.label == f"hf:{tiny_gpt2}"
               for c in refs)
    assert refs[0].train.lr != 1e-3, "training settings leave a reference alone"
    assert len([c for c in configs if c.arch == "lstm"]) == 4 * 2, "lstm: every task and seed"
    # the budget trains nothing of it: one run whatever --budget says
    assert expand([f"hf:{tiny_gpt2}"], ["figqa"], budget="study")[0].run_id == \
        expand([f"hf:{tiny_gpt2}"], ["figqa"])[0].run_id
    with pytest.raises(ValueError, match="it runs only the zero-shot tasks that score one"):
        expand([f"hf:{tiny_gpt2}"], ["ner", "lm"])
    with pytest.raises(ValueError, match="needs a Hugging Face model name or a local path"):
        expand(["hf:"], ["figqa"])


def test_reference_rows_sit_in_the_same_table_marked_as_references(tiny_gpt2, tmp_path, capsys):
    results = tmp_path / "r"
    assert harness("run", "--arch", f"lstm,hf:{tiny_gpt2}", "--tasks", "blimp_agreement", "--results", results,
                   "--device", "cpu", "--no-progress", "--set", "limit=5", *TINY_SETS) == 0
    store = RunStore(results)
    runs = store.runs()
    assert len(runs) == 3 and set(runs.status) == {"finished"}
    ref = runs[runs.arch == f"hf:{tiny_gpt2}"].iloc[0]
    record = store.record(ref.run_id)
    assert record["info"]["reference"] == tiny_gpt2 and "upstream" not in record["info"]
    assert record["info"]["backbone"]["model_type"] == "gpt2"
    metrics = {(m["split"], m["metric"]): m["value"] for m in record["metrics"]}
    items = {split: v for (split, name), v in metrics.items() if name == "items"}
    assert len(items) == 16 and set(items.values()) == {5}, "every paradigm, limit=5 each"
    assert 0.0 <= metrics[("mean", "accuracy")] <= 1.0 and ("suite", "unk_rate") not in metrics
    assert json.loads(ref.config)["size"] == "pretrained"
    capsys.readouterr()
    assert harness("table", "--results", results, "--task", "blimp_agreement") == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if f"hf:{tiny_gpt2}" in line)
    assert "pretrained" in row and "lstm" in out
    assert "**" not in row, "a reference is context, never the best of a column"
    assert "**" in next(line for line in out.splitlines() if line.startswith("| lstm"))
    # even where it scores best
    with sqlite3.connect(results / "runs.sqlite") as conn:
        conn.execute("UPDATE metrics SET value = 1.0 WHERE run_id = ? AND metric = 'accuracy'", (ref.run_id,))
    assert harness("table", "--results", results, "--task", "blimp_agreement") == 0
    out = capsys.readouterr().out
    assert "1.00" in next(line for line in out.splitlines() if f"hf:{tiny_gpt2}" in line)
    assert "**" not in next(line for line in out.splitlines() if f"hf:{tiny_gpt2}" in line)
    assert "**" in next(line for line in out.splitlines() if line.startswith("| lstm"))
    assert "reference" in out and "not parameter-matched" in out


def test_a_reference_that_cannot_be_loaded_is_a_failed_run_that_says_why(tmp_path):
    missing = tmp_path / "no-such-model"
    results = tmp_path / "r"
    assert harness("run", "--arch", f"hf:{missing}", "--tasks", "figqa", "--results", results, "--device", "cpu",
                   "--no-progress", "--set", "limit=2") == 1
    (run,) = RunStore(results).runs().itertuples()
    assert run.status == "failed" and str(missing) in RunStore(results).record(run.run_id)["error"]


def test_the_non_embedding_count_leaves_the_embeddings_out(reference):
    model: ReferenceLM = reference.model
    described = model.describe()
    total = sum(p.numel() for p in model.hf.parameters())
    config = model.hf.config  # token and position embeddings out; the head is tied to the first
    assert described["params_non_embedding"] == total - (config.vocab_size + config.n_positions) * config.n_embd
    assert described["n_layers"] == 2 and described["d_model"] == 32


def test_the_weights_pin_a_reference_run(tiny_gpt2, tmp_path):
    import shutil

    (cfg,) = expand([f"hf:{tiny_gpt2}"], ["figqa"])
    assert len(cfg.inputs["model"]) == 64
    copy = tmp_path / "copy"
    shutil.copytree(tiny_gpt2, copy)
    assert expand([f"hf:{copy}"], ["figqa"])[0].inputs == cfg.inputs, "the same weights elsewhere"
    weights = next(copy.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    assert expand([f"hf:{copy}"], ["figqa"])[0].inputs != cfg.inputs, "other weights: another run"
