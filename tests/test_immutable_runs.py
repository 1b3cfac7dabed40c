"""A task object serves one run: nothing a run computes is left on a shared object, so runs give
the same numbers in any order and a task reports its facts without having run."""
import pytest

from harness.rows import task_class
from harness.store import RunStore
from harness.sweep import expand, run_sweep
from tests.conftest import TINY_TRAIN


def _numbers(store: RunStore) -> dict:
    """Every stored number but those that measure the machine, not the model: metrics whose spec
    (from the run's task class) has the efficiency role."""
    m = store.metrics()
    m = m[[task_class(task).spec(metric).role != "efficiency" for task, metric in zip(m.task, m.metric)]]
    return {(r.run_id, r.split, r.metric, None if r.length != r.length else int(r.length)): r.value
            for r in m.itertuples()}


@pytest.fixture(scope="module")
def both_orders(tmp_path_factory, small_data):
    overrides = {k: [v] for k, v in TINY_TRAIN.items()}
    first = expand(["gru"], ["lm", "agreement_lm"], overrides=overrides)
    second = expand(["cnn"], ["extrapolation", "figqa_ft"], overrides=overrides | {"probe": ["parity"]})
    stores = {}
    for name, configs in (("first_then_second", first + second), ("second_then_first", second + first)):
        store = RunStore(tmp_path_factory.mktemp(name))
        summary = run_sweep(configs, store, data_dir=small_data, progress=False, log=lambda *a, **k: None)
        assert summary.ran == {"finished": len(configs)}
        stores[name] = store
    return stores


def test_two_sweeps_in_either_order_give_the_same_numbers(both_orders):
    a, b = (_numbers(s) for s in both_orders.values())
    assert a.keys() == b.keys() and len(a) > 50
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key


def test_every_run_gets_a_task_object_of_its_own(data_dir, tmp_path, monkeypatch):
    import harness.runner

    made = []
    original = harness.runner.task_for_run

    def recording(cfg, store, data_dir):
        made.append(original(cfg, store, data_dir))
        return made[-1]

    monkeypatch.setattr(harness.runner, "task_for_run", recording)
    configs = expand(["gru"], ["extrapolation"], seeds=[0, 1],
                     overrides={k: [v] for k, v in TINY_TRAIN.items()} | {"probe": ["parity"]})
    run_sweep(configs, RunStore(tmp_path), data_dir=data_dir, progress=False, log=lambda *a, **k: None)
    assert len(made) == 2 and made[0] is not made[1]


def test_mt_states_its_signatures_before_it_has_scored_anything(data_dir):
    from harness.core.registry import TASKS

    cls = TASKS.get("mt")
    info = cls(cls.Options(), data_dir).info()
    assert info["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert info["decoding"] == "beam 5, alpha 1.0"
