"""The training loop: schedule, determinism, best checkpoint, divergence."""
import math

import pytest
import torch

from harness.config import RunConfig
from harness.core.train_config import TrainConfig
from harness.runner import build_model, execute
from harness.store import RunStore
from harness.tracking import Tracker
from harness.train import Diverged, lr_factor, train_model
from tests.conftest import TINY_TRAIN


class Recorder(Tracker):
    def __init__(self):
        self.losses = {}

    def log_losses(self, first_step, losses, lr):
        self.losses.update({first_step + i: v for i, v in enumerate(losses)})


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(steps=100, batch_size=1, seq_len=1, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(55, cfg) == pytest.approx(0.55)
    assert lr_factor(100, cfg) == pytest.approx(0.1)
    factors = [lr_factor(s, cfg) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))


def config(arch="lstm", seed=0, **train):
    return RunConfig(arch=arch, task="lm", seed=seed, train=TrainConfig(**{**TINY_TRAIN, **train}))


def run(cfg, task):
    recorder = Recorder()
    result = train_model(build_model(cfg, task), task, cfg.train, torch.device("cpu"), cfg.seed,
                         recorder, progress=False)
    return result, recorder.losses


def test_same_seed_same_run_and_every_step_logged(lm_task):
    a, losses_a = run(config(), lm_task)
    b, losses_b = run(config(), lm_task)
    _, losses_c = run(config(seed=1), lm_task)
    assert sorted(losses_a) == list(range(1, TINY_TRAIN["steps"] + 1))
    assert losses_a == losses_b
    assert losses_a != losses_c
    assert all(torch.equal(a.best_state[k], b.best_state[k]) for k in a.best_state)


def test_learns_and_keeps_the_best_dev_checkpoint(lm_task):
    result, losses = run(config(arch="transformer", steps=40, eval_every=10, warmup_steps=5), lm_task)
    steps, scores = zip(*result.dev_history)
    assert steps == (10, 20, 30, 40)
    assert scores[-1] < scores[0] < 33278  # better than uniform, and improving
    assert result.best_dev == min(scores)
    assert result.best_step == steps[scores.index(min(scores))]
    assert losses[40] < losses[1]


class Timed:
    """Wraps a task so that, on a fake clock, each training loss takes one second and each
    evaluation a hundred."""

    def __init__(self, task, clock):
        self.task, self.clock = task, clock

    def __getattr__(self, name):
        return getattr(self.task, name)

    def loss(self, model, batch):
        self.clock.now += 1.0
        return self.task.loss(model, batch)

    def evaluate(self, *args, **kwargs):
        self.clock.now += 100.0
        return self.task.evaluate(*args, **kwargs)


def test_throughput_is_tokens_of_the_timed_steps_over_their_time(lm_task, monkeypatch):
    """Warm-up steps (a tenth, at most 10) and evaluations are left out of tokens/s."""
    import time
    import types

    from harness.core import measure

    clock = types.SimpleNamespace(now=0.0)
    fake = types.ModuleType("time")
    fake.__dict__.update(vars(time))
    fake.perf_counter = lambda: clock.now
    monkeypatch.setattr(measure, "time", fake)  # the Stopwatch reads the fake clock
    cfg = config(steps=20, eval_every=5)
    result, _ = run(cfg, Timed(lm_task, clock))
    assert clock.now == 20 * 1.0 + 4 * 100.0, "every step and each of the 4 evaluations ran"
    timed_steps = 20 - 2
    tokens = timed_steps * cfg.train.batch_size * cfg.train.seq_len
    assert result.tokens_per_s == tokens / timed_steps == 64.0


class NaNAt:
    """Wraps a task so that the loss becomes NaN from a given step on."""

    def __init__(self, task, step):
        self.task, self.step, self.calls = task, step, 0

    def __getattr__(self, name):
        return getattr(self.task, name)

    def loss(self, model, batch):
        self.calls += 1
        loss = self.task.loss(model, batch)
        return loss * math.nan if self.calls >= self.step else loss


def test_nan_raises_diverged_with_the_step(lm_task):
    cfg = config()
    with pytest.raises(Diverged, match="at step 3"):
        train_model(build_model(cfg, lm_task), NaNAt(lm_task, 3), cfg.train, torch.device("cpu"),
                    0, progress=False)


def test_forced_nan_run_is_recorded_as_diverged(lm_task, tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    cfg = config()
    assert store.claim(cfg)
    monkeypatch.setattr("harness.runner.task_for_run", lambda cfg, store, data_dir: NaNAt(lm_task, 4))
    status = execute(cfg, store, progress=False)
    assert status == "diverged" and store.status(cfg.run_id) == "diverged"
    runs = store.runs()
    assert "at step 4" in runs.error.iloc[0]
    assert not store.claim(cfg), "a recorded divergence is not rerun unless asked"
    assert store.claim(cfg, retry_failed=True)


def test_a_crash_is_recorded_as_failed_with_its_traceback(lm_task, tmp_path, monkeypatch):
    class Broken:
        def __getattr__(self, name):
            return getattr(lm_task, name)

        def loss(self, model, batch):
            raise RuntimeError("boom in the loss")

    store = RunStore(tmp_path)
    cfg = config()
    store.claim(cfg)
    monkeypatch.setattr("harness.runner.task_for_run", lambda cfg, store, data_dir: Broken())
    assert execute(cfg, store, progress=False) == "failed"
    assert "boom in the loss" in store.runs().error.iloc[0]


def test_token_budget_stops_training_first(lm_task):
    cfg = config(steps=100, token_budget=4 * 16 * 5 - 1, eval_every=100)  # 4×16 tokens a step → 5 steps
    assert cfg.train.total_steps == 5
    result, losses = run(cfg, lm_task)
    assert result.steps == 5 and sorted(losses) == [1, 2, 3, 4, 5]
    assert lr_factor(5, cfg.train) == pytest.approx(cfg.train.min_lr_ratio)


@pytest.mark.parametrize("arch,exempt", [("s4d", {"log_A_real", "A_imag"}), ("mamba", {"A_log"})])
def test_state_space_poles_are_not_weight_decayed(arch, exempt):
    """AdamW decays matrices but not what a backbone exempts: an SSM's A (decay would pull its
    poles and frequencies to zero)."""
    from architectures.sizing import build_backbone
    from harness.train import make_optimizer

    model = build_backbone(arch, "tiny")
    decayed, kept = (group["params"] for group in make_optimizer(model, TrainConfig(**TINY_TRAIN)).param_groups)
    names = {id(p): n.rsplit(".", 1)[-1] for n, p in model.named_parameters()}
    assert {names[id(p)] for p in kept if p.dim() >= 2} == exempt
    assert not exempt & {names[id(p)] for p in decayed}
    assert {p.dim() for p in decayed} == {2, 3}  # every other matrix (and convolution weight) decays


@pytest.mark.parametrize("arch", ["lstm", "transformer", "mamba"])
def test_the_multi_tensor_update_is_the_per_tensor_loop_bit_for_bit(arch):
    """make_optimizer asks AdamW for its multi-tensor (foreach) update, which torch uses by
    itself only on a GPU. On the CPU it must give the very values of the per-tensor loop that
    trained the committed studies, or their runs would no longer reproduce."""
    from architectures.sizing import build_backbone
    from harness.train import make_optimizer

    cfg = TrainConfig(**{**TINY_TRAIN, "weight_decay": 0.1})
    trained = {}
    for foreach in (True, False):
        torch.manual_seed(0)
        model = build_backbone(arch, "tiny")
        initial = [p.detach().clone() for p in model.parameters()]
        optimizer = make_optimizer(model, cfg)
        assert optimizer.defaults["foreach"] is True
        if not foreach:
            for group in optimizer.param_groups:
                group["foreach"] = False
        data = torch.Generator().manual_seed(1)
        for _ in range(3):
            x = torch.randn(2, 8, model.d_model, generator=data)
            optimizer.zero_grad()
            model(x, None).pow(2).mean().backward()
            optimizer.step()
        trained[foreach] = [p.detach().clone() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(trained[True], trained[False]))
    assert not any(torch.equal(a, b) for a, b in zip(trained[True], initial)), "every parameter was updated"
