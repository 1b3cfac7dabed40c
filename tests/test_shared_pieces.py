"""The pieces every task and the engine share: right padding, the language model's output layer
(adaptive or full softmax), scores per length bucket, the classification of failures, the single
training step, W&B initialisation, and the model ``harness bench`` times."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from architectures.sizing import build_backbone
from harness import bench, train
from harness.core.batching import pad, pad_shifted
from harness.core.buckets import by_length
from harness.core.metrics import Metric
from harness.core.train_config import TrainConfig
from harness.train import Diverged, describe_failure, failure_status
from harness.core.registry import ARCHITECTURES
from tasks.lm import LanguageModel, LMOptions, token_scores

VOCAB = 300


# --- padding -------------------------------------------------------------------------------

def test_pad_right_pads_ids_and_marks_tokens():
    ids, mask = pad([[5, 6, 7], [8], [], torch.tensor([9, 10])])
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0], [9, 10, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False], [False, False, False],
                             [True, True, False]]
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    tags, _ = pad([(1, 2), (3,)], value=-100)
    assert tags.tolist() == [[1, 2], [3, -100]]


def test_pad_of_plain_ids_equals_pad_of_tensors():
    rows = [[5, 6, 7], [], (8,), [9, 10]]
    for value, dtype in ((0, torch.long), (-100, torch.long), (0.5, torch.float)):
        plain = pad(rows, value, dtype)
        as_tensors = pad([torch.tensor(r, dtype=dtype) for r in rows], value, dtype)
        assert all(torch.equal(a, b) for a, b in zip(plain, as_tensors)) and plain[0].dtype == dtype
    assert pad([[5, 6, 7], [], (8,), [9, 10]], -1)[0].tolist() == [[5, 6, 7], [-1, -1, -1], [8, -1, -1], [9, 10, -1]]
    assert pad([[], []])[0].shape == (2, 0) and pad([])[0].shape == (0, 0)
    whole = torch.tensor([[1, 2], [3, 4]])  # a batch of equal rows, as one tensor or array
    assert torch.equal(pad(whole)[0], whole) and torch.equal(pad(whole.numpy())[0], whole)


def test_pad_shifted_gives_next_token_rows():
    inputs, targets, mask = pad_shifted([[1, 5, 6, 7], [1, 8], [1]], value=0)
    assert inputs.tolist() == [[1, 5, 6], [1, 0, 0], [0, 0, 0]]
    assert targets.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False], [False, False, False]]


# --- the output layer ----------------------------------------------------------------------

def language_model(softmax: str) -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(build_backbone("lstm", "tiny"), VOCAB, LMOptions(softmax=softmax, cutoffs=(20, 100))).eval()


def former_scores(model, h, wanted):
    """The adapter's former branch on the head: log p(target) and the argmax token."""
    if isinstance(model.head, nn.AdaptiveLogSoftmaxWithLoss):
        return model.head(h, wanted).output, model.head.predict(h)
    logits = model.head(h).float()
    return logits.log_softmax(-1).gather(1, wanted[:, None]).squeeze(1), logits.argmax(-1)


@pytest.mark.parametrize("softmax", ["adaptive", "full"])
def test_output_layer_matches_the_former_code_and_a_direct_computation(softmax):
    model = language_model(softmax)
    assert isinstance(model.head, nn.AdaptiveLogSoftmaxWithLoss) == (softmax == "adaptive")
    torch.manual_seed(1)
    h = torch.randn(400, model.backbone.d_model) * torch.linspace(0.1, 30, 400)[:, None]
    with torch.no_grad():
        if softmax == "adaptive":
            direct = model.head.log_prob(h)
        else:
            direct = F.log_softmax(model.head(h), -1)
        # half the targets are their row's most probable word: in the head's shortlist or beyond it
        targets = torch.where(torch.arange(400) % 2 == 0, direct.argmax(-1), torch.randint(VOCAB, (400,)))
        assert (targets[::2] < 20).any() and (targets[::2] >= 20).any()
        lp, is_best = model.target_logprobs(h, targets, greedy=True)
        old_lp, old_best = former_scores(model, h, targets)
        assert torch.equal(lp, old_lp) and torch.equal(is_best, old_best == targets)
        assert model.target_logprobs(h, targets)[1] is None
        torch.testing.assert_close(lp, direct.gather(1, targets[:, None]).squeeze(1), rtol=1e-5, atol=1e-5)
        assert torch.equal(is_best, direct.argmax(-1) == targets) and is_best.sum() >= 200
        assert torch.equal(model.distribution(h), direct)
        assert torch.equal(model.predict(h.view(40, 10, -1)), direct.argmax(-1).view(40, 10))
        # forward's scores are logits or log-probabilities: their softmax is the distribution
        x = torch.randint(VOCAB, (2, 7))
        torch.testing.assert_close(model(x).log_softmax(-1), model.log_probs(x, torch.ones_like(x, dtype=torch.bool)))


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_the_adaptive_softmax_trains_and_scores_under_bf16_autocast(arch):
    """As on a GPU with precision bf16 (emulated with the CPU's autocast): the backbone runs in
    bf16, the adaptive softmax in float32, with the float32 model's log-probabilities."""
    torch.manual_seed(0)
    model = LanguageModel(build_backbone(arch, "tiny"), VOCAB, LMOptions(cutoffs=(20, 100))).eval()
    inputs = torch.randint(VOCAB, (2, 12))
    targets, mask = inputs.roll(-1, 1), torch.ones(2, 12, dtype=torch.bool)
    plain = model.token_logprobs(inputs, targets, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.token_logprobs(inputs, targets, mask)
        mixed.sum().backward()
        scores, greedy = token_scores(model, inputs, targets, mask)
    assert mixed.dtype == scores.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, rtol=0.05, atol=0.3)
    assert model.embed.weight.grad is not None


def test_in_lower_precision_every_row_is_checked_for_greedy():
    model = language_model("adaptive").to(torch.bfloat16)
    torch.manual_seed(1)
    h = (torch.randn(400, model.backbone.d_model) * torch.linspace(0.1, 30, 400)[:, None]).to(torch.bfloat16)
    with torch.no_grad():
        best = model.head.predict(h)
        targets = torch.where(torch.arange(400) % 2 == 0, best, torch.randint(VOCAB, (400,)))
        lp, is_best = model.target_logprobs(h, targets, greedy=True)
    assert lp.dtype == torch.bfloat16
    assert torch.equal(is_best, best == targets) and (best[::2] >= 20).any()


@pytest.mark.parametrize("softmax", ["adaptive", "full"])
def test_token_logprobs_and_the_adapter_read_the_same_output_layer(softmax):
    pytest.importorskip("lm_eval")
    from tasks.lm_eval.adapter import HarnessLM

    model = language_model(softmax)
    torch.manual_seed(2)
    inputs, targets = torch.randint(VOCAB, (3, 9)), torch.randint(VOCAB, (3, 9))
    mask = torch.arange(9) < torch.tensor([9, 4, 1])[:, None]
    with torch.no_grad():
        h = model.states(inputs, mask)[mask]
        old_lp, old_best = former_scores(model, h, targets[mask])
        picked = model.token_logprobs(inputs, targets, mask)
        assert torch.equal(picked[mask], old_lp) and bool((picked[~mask] == 0).all())
        adapter = HarnessLM(model, ["<eos>", "<unk>", *(f"w{i}" for i in range(2, VOCAB))])
        scores, greedy = adapter._token_scores(inputs, targets, mask)
    assert torch.equal(scores[mask], old_lp.float())
    assert torch.equal(greedy[mask], old_best == targets[mask]) and bool(greedy[~mask].all())


# --- length buckets ------------------------------------------------------------------------

def test_by_length_scores_each_non_empty_bucket():
    lengths = [3, 5, 6, 12, 40, 10]
    seen = []

    def score(chosen):
        seen.append(chosen)
        return float(sum(chosen))

    metrics = by_length("test", "f1_by_length", lengths, (5, 10, 20, 30, 1000), score)
    assert seen == [[0, 1], [2, 5], [3], [4]]  # (0, 5], (5, 10], (10, 20], (30, 1000]; (20, 30] is empty
    assert metrics == [Metric("test", "f1_by_length", 1.0, 5), Metric("test", "sentences_by_length", 2, 5),
                       Metric("test", "f1_by_length", 7.0, 10), Metric("test", "sentences_by_length", 2, 10),
                       Metric("test", "f1_by_length", 3.0, 20), Metric("test", "sentences_by_length", 1, 20),
                       Metric("test", "f1_by_length", 4.0, 1000), Metric("test", "sentences_by_length", 1, 1000)]


# --- failures ------------------------------------------------------------------------------

@pytest.mark.parametrize("err,status", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                  "you tried to allocate 140737488355328 bytes. Error code 12 (Cannot allocate memory)"), "oom"),
    (MemoryError(), "oom"),
    (Diverged("training loss became nan at step 3"), "diverged"),
    (ValueError("something else"), "failed"),
    (RuntimeError("No available kernel. Aborting execution."), "failed"),
])
def test_failures_are_classified_once_for_runs_and_bench(err, status):
    assert failure_status(err) == status
    kind, text = describe_failure(err)
    assert kind == status
    if status == "diverged":
        assert text == "training loss became nan at step 3"
    elif status == "oom":
        assert text.startswith(f"{type(err).__name__}: ")
    else:
        assert f"{type(err).__name__}: {err}" in text  # the traceback, when there is one
    # bench's phase status: oom as runs say, plus what only bench records
    expected = {"oom": "oom", "diverged": "error: Diverged", "failed": "error"}[status]
    if "No available kernel" in str(err):
        expected = "unsupported"
    assert bench._problem(err).startswith(expected)


def test_a_real_cpu_allocation_failure_is_oom():
    try:
        torch.empty(2**48, dtype=torch.uint8)  # 256 TiB: more than the address space
    except Exception as err:  # noqa: BLE001
        assert failure_status(err) == "oom"
    else:
        pytest.skip("the allocator granted 256 TiB")


# --- the training step ---------------------------------------------------------------------

def test_train_step_steps_optimiser_and_schedule_and_clips():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    cfg = TrainConfig(steps=10, batch_size=1, seq_len=1, lr=0.1, warmup_steps=2, clip_norm=1e-3)
    optimizer = train.make_optimizer(model, cfg)
    schedule = train.make_schedule(optimizer, cfg)
    before = model.weight.detach().clone()
    entered = []

    class Amp:
        def __enter__(self):
            entered.append(True)

        def __exit__(self, *exc):
            return False

    loss = train.train_step(model, lambda: (model(torch.ones(1, 4)) * 100).sum(), optimizer, schedule,
                            cfg.clip_norm, Amp)
    assert entered == [True] and not loss.requires_grad
    assert schedule.last_epoch == 1 and optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    assert not torch.equal(model.weight, before)


# --- bench -----------------------------------------------------------------------------------

QUICK = dict(lengths=[8], size="tiny", batch=2, warmup=0, repeats=1, min_seconds=0, decode_tokens=4,
             isolate=False, device="cpu")


def test_bench_times_the_lm_tasks_model_with_the_training_step(monkeypatch):
    model = bench.bench_model(build_backbone("gru", "tiny"), 256)
    assert type(model) is LanguageModel and isinstance(model.head, nn.Linear)
    assert model.head.out_features == 256 and not model.adaptive
    built, steps = [], []
    real_model, real_step = bench.bench_model, bench.train_step
    monkeypatch.setattr(bench, "bench_model", lambda *a: built.append(real_model(*a)) or built[-1])
    monkeypatch.setattr(bench, "train_step", lambda *a: steps.append(a) or real_step(*a))
    row = bench.measure_cell(bench.BenchConfig(archs=["gru"], **QUICK), "gru", "auto", 8)
    assert row["status"] == "ok"
    # the timed model, and the one its FLOPs are counted on (meta device)
    assert len(built) == 2 and all(type(m) is LanguageModel for m in built)
    assert len(steps) >= 2 and steps[0][0] is built[0]  # warm-up and timed steps


def test_the_training_loop_takes_the_shared_step(lm_task, monkeypatch):
    calls = []
    real = train.train_step
    monkeypatch.setattr(train, "train_step", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    model = lm_task.build_model(build_backbone("lstm", "tiny"))
    cfg = TrainConfig(steps=4, batch_size=2, seq_len=8, eval_every=4, dev_eval_tokens=64, log_every=2)
    result = train.train_model(model, lm_task, cfg, torch.device("cpu"), 0, progress=False)
    assert len(calls) == result.steps == 4


# --- W&B -----------------------------------------------------------------------------------

def test_every_wandb_run_starts_through_one_function(monkeypatch, tmp_path):
    wandb = pytest.importorskip("wandb")
    from harness import plots, tracking

    started = []

    class FakeRun:
        def log(self, *a, **k):
            pass

        def finish(self, *a, **k):
            pass

    def fake_init(**kwargs):
        started.append(kwargs)
        return FakeRun()

    monkeypatch.setattr(wandb, "init", fake_init)
    monkeypatch.setenv("WANDB_PROJECT", "elsewhere")
    monkeypatch.setenv("WANDB_MODE", "offline")
    png = tmp_path / "figure.png"
    png.write_bytes(b"")
    monkeypatch.setattr(wandb, "Image", lambda path: path)
    plots.log_to_wandb([png], "extrapolation")
    tracking.wandb_init(tmp_path, job_type="report", name="r")
    assert [s["project"] for s in started] == ["elsewhere", "elsewhere"]
    assert all(s["mode"] == "offline" and s["dir"] == str(tmp_path) for s in started)
    assert started[0]["job_type"] == "plot"
    monkeypatch.delenv("WANDB_PROJECT")
    tracking.wandb_init(tmp_path)
    assert started[-1]["project"] == "harness"
