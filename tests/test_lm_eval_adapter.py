"""The lm-eval adapter: its log-likelihoods are the model's own log-probabilities (right
context/continuation split, no off-by-one, padding-independent), and raw text is tokenised the
way WikiText-2 was."""
import csv
import re

import pytest
import torch

pytest.importorskip("lm_eval")
from lm_eval.api.instance import Instance  # noqa: E402

from architectures.sizing import build_backbone  # noqa: E402
from tasks.lm_eval.adapter import HarnessLM, Tokenizer, wikitext_tokens  # noqa: E402
from tasks.lm import EOS, UNK, LanguageModel, LMOptions, load_wikitext2  # noqa: E402


@pytest.fixture(scope="module")
def corpus(data_dir):
    return load_wikitext2(data_dir / "wikitext2")


@pytest.fixture(scope="module", params=["lstm", "transformer"])
def adapter(request, corpus):
    torch.manual_seed(0)
    model = LanguageModel(build_backbone(request.param, "tiny"), len(corpus.vocab), LMOptions())
    return HarnessLM(model, corpus.vocab, batch_size=3)  # several batches, each padded


def direct(model, ids: list[int], first: int) -> tuple[float, bool]:
    """Sum of log p(ids[t+1] | ids[:t+1]) for t ≥ first, from one unpadded forward pass."""
    x = torch.tensor(ids[:-1])[None]
    with torch.no_grad():
        full = model.log_probs(x, torch.ones_like(x, dtype=torch.bool))[0]
    steps = range(first, len(ids) - 1)
    return (sum(full[t, ids[t + 1]].item() for t in steps),
            all(full[t].argmax().item() == ids[t + 1] for t in steps))


REQUESTS = [("The girl had", " the flightiness of a sparrow ."), ("", "The cat sat on the mat ."),
            ("He said that", " it"), ("A", " b c d e f g h i j k l m n o p q r s t u v w x y z"),
            ("In 1999 the", " well-known company's shares rose"), ("Nothing follows", "")]


def test_loglikelihood_equals_the_models_log_probs(adapter, corpus):
    index = {w: i for i, w in enumerate(corpus.vocab)}
    results = adapter.loglikelihood([Instance("loglikelihood", {}, args, i) for i, args in enumerate(REQUESTS)])
    tokenizer = Tokenizer(corpus.vocab)
    for (context, continuation), (score, greedy) in zip(REQUESTS, results):
        ctx, cont = tokenizer.ids(context), tokenizer.ids(continuation)
        expected, expected_greedy = direct(adapter.model, [index[EOS], *ctx, *cont], len(ctx))
        assert score == pytest.approx(expected, abs=1e-4), (context, continuation)
        assert greedy == expected_greedy
    assert results[-1] == (0.0, True), "an empty continuation has probability one"


def test_rolling_loglikelihood_scores_every_token_after_eos(adapter, corpus):
    index = {w: i for i, w in enumerate(corpus.vocab)}
    texts = ["The cat sat on the mat .", "Valkyria Chronicles III is a tactical role @-@ playing game ."]
    results = adapter.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)])
    tokenizer = Tokenizer(corpus.vocab)
    for text, score in zip(texts, results):
        assert score == pytest.approx(direct(adapter.model, [index[EOS], *tokenizer.ids(text)], 0)[0], abs=1e-4)


def test_a_word_across_the_boundary_belongs_to_the_continuation(adapter, corpus):
    ctx, cont = adapter.split("The gir", "l had a cat")
    index = {w: i for i, w in enumerate(corpus.vocab)}
    assert [corpus.vocab[i] for i in ctx] == ["The"]
    assert [corpus.vocab[i] for i in cont] == ["girl", "had", "a", "cat"]
    assert adapter.split("The girl", " had") == ([index["The"], index["girl"]], [index["had"]])


@pytest.mark.parametrize("text,tokens", [
    ("I don't think it's O'Brien's.", ["I", "don", "'t", "think", "it", "'s", "O", "'Brien", "'s", "."]),
    ("a well-known 1,000.5 (or so)", ["a", "well", "@-@", "known", "1", "@,@", "000", "@.@", "5", "(", "or", "so", ")"]),
    ('"Hello," she said; the students\' books!', ['"', "Hello", ",", '"', "she", "said", ";", "the", "students",
                                                  "'", "books", "!"]),
])
def test_text_is_split_as_wikitext_was(text, tokens):
    assert wikitext_tokens(text) == tokens


def detokenise(tokens: list[str]) -> str:
    """WikiText tokens back to ordinary text (the inverse of its tokenisation, roughly)."""
    text = " ".join(tokens).replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    text = re.sub(r" ([.,;:!?)\]}])", r"\1", text)
    text = re.sub(r"([(\[{]) ", r"\1", text)
    return re.sub(r" ('\w)", r"\1", text)


def test_wikitexts_own_lines_split_back_into_their_tokens(corpus, data_dir):
    import gzip

    with gzip.open(data_dir / "wikitext2" / "valid.txt.gz", "rt", encoding="utf-8") as f:
        # headings aside, and lines with <unk> (which stands for words whose form is lost)
        lines = [line.split() for line in f if line.strip() and not line.strip().startswith("=") and UNK not in line]
    same = sum(wikitext_tokens(detokenise(line), corpus.index) == line for line in lines)
    assert same / len(lines) > 0.9, same / len(lines)


def test_most_fig_qa_words_are_in_the_vocabulary(corpus, data_dir):
    tokenizer = Tokenizer(corpus.vocab)
    with open(data_dir / "figqa" / "dev.csv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            for field in ("startphrase", "ending1", "ending2"):
                tokenizer.ids(row[field])
    assert tokenizer.tokens > 20_000
    assert 0.01 < tokenizer.unknown_rate < 0.10  # measured: 5.5% of Fig-QA dev tokens become <unk>
