"""The lm task on real WikiText-2: loading, windows, and perplexity checked by hand."""
import math

import pytest
import torch

from harness.core.train_config import TrainConfig
from tasks.lm import EOS, LanguageModel, LMOptions, windows

TRAIN = TrainConfig(steps=1, batch_size=4, seq_len=8)


def test_wikitext2_matches_its_source_card(lm_task):
    corpus = lm_task.corpus
    # SOURCE.md: 33,278 types including <eos>; 2,088,628 / 217,646 / 245,569 tokens
    assert len(corpus.vocab) == 33278
    assert [len(corpus.streams[s]) for s in ("train", "valid", "test")] == [2088628, 217646, 245569]
    assert corpus.vocab[0] == "the" and EOS in corpus.index
    assert (corpus.streams["train"] == corpus.index[EOS]).sum() == 36718  # one per line


def test_windows_predict_every_token_exactly_once():
    stream = torch.arange(11)
    inputs, targets, mask = windows(stream, 4)
    assert inputs.shape == (3, 4)
    assert targets[mask].tolist() == list(range(1, 11))
    assert inputs[mask].tolist() == list(range(0, 10))
    assert mask.sum() == 10 and not mask[-1, -2:].any()


class ByTarget(torch.nn.Module):
    """A stand-in model whose log-probability of a target is -log(target + 2), context-free."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def token_logprobs(self, inputs, targets, mask):
        return torch.where(mask, -torch.log(targets.double() + 2), 0.0)


def test_perplexity_by_hand(lm_task):
    tokens = 100
    stream = lm_task.corpus.streams["valid"][: tokens + 1]
    expected = math.exp(sum(math.log(t + 2) for t in stream[1:].tolist()) / tokens)
    metrics = lm_task.evaluate(ByTarget(), "valid", TRAIN, max_tokens=tokens)
    ppl = {(m.name, m.length): m.value for m in metrics}
    # 100 targets do not divide into windows of 8, 16 or 32: padding must not count
    for length in (8, 16, 32):
        assert ppl[("ppl", length)] == pytest.approx(expected, rel=1e-9)
        assert ppl[("loss", length)] == pytest.approx(math.log(expected), rel=1e-9)
    # by position within the 32-token windows: positions 0-7, 8-15, 16-31
    targets = lm_task.corpus.streams["valid"][1: tokens + 1].tolist()
    for start, end in ((0, 8), (8, 16), (16, 32)):
        chosen = [t for i, t in enumerate(targets) if start <= i % 32 < end]
        by_hand = math.exp(sum(math.log(t + 2) for t in chosen) / len(chosen))
        assert ppl[("ppl_by_position", end)] == pytest.approx(by_hand, rel=1e-9)


def test_uniform_model_has_perplexity_equal_to_vocabulary(lm_task):
    from architectures.sizing import build_backbone

    torch.manual_seed(0)
    model = LanguageModel(build_backbone("lstm", "tiny"), len(lm_task.corpus.vocab), LMOptions(softmax="full"))
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    metrics = lm_task.evaluate(model.eval(), "test", TRAIN, max_tokens=200)
    for m in metrics:
        if m.name.startswith("ppl"):
            assert m.value == pytest.approx(33278, rel=1e-4)


@pytest.mark.parametrize("softmax", ["adaptive", "full"])
def test_token_logprobs_agree_with_full_distribution(lm_task, softmax):
    from architectures.sizing import build_backbone

    torch.manual_seed(0)
    model = LanguageModel(build_backbone("transformer", "tiny"), len(lm_task.corpus.vocab),
                          LMOptions(softmax=softmax)).eval()
    x = lm_task.corpus.streams["valid"][:17]
    inputs, targets = x[:-1].view(2, 8), x[1:].view(2, 8)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    with torch.no_grad():
        full = model.log_probs(inputs, mask)
        picked = model.token_logprobs(inputs, targets, mask)
    torch.testing.assert_close(full.exp().sum(-1), torch.ones(2, 8), atol=1e-4, rtol=0)
    torch.testing.assert_close(picked[mask], full.gather(2, targets[..., None]).squeeze(-1)[mask],
                               atol=1e-5, rtol=1e-5)
    assert (picked[~mask] == 0).all()


def test_training_batches_are_windows_of_the_stream_in_seeded_order(lm_task):
    cfg = TrainConfig(steps=1, batch_size=3, seq_len=5)
    first = next(lm_task.train_batches(cfg, torch.Generator().manual_seed(7)))["tokens"]
    again = next(lm_task.train_batches(cfg, torch.Generator().manual_seed(7)))["tokens"]
    other = next(lm_task.train_batches(cfg, torch.Generator().manual_seed(8)))["tokens"]
    assert first.shape == (3, 6) and torch.equal(first, again) and not torch.equal(first, other)
    stream = lm_task.corpus.streams["train"]
    for row in first:
        starts = (stream[:-5] == row[0]).nonzero().flatten()
        assert any(torch.equal(stream[s:s + 6], row) and s % 5 == 0 for s in starts.tolist())


def test_lm_refuses_a_bidirectional_backbone():
    from harness.config import RunConfig

    with pytest.raises(ValueError, match="causal backbone"):
        RunConfig(arch="lstm", task="lm", arch_options={"bidirectional": True}, train=TRAIN)
