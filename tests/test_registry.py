import pytest

from harness.registry import ARCHITECTURES, TASKS, Registry, UnknownName


def test_registries_hold_the_promised_entries():
    assert set(ARCHITECTURES.names()) >= {"rnn", "lstm", "gru", "cnn", "transformer"}
    assert "lm" in TASKS.names()


def test_unknown_names_suggest_the_closest():
    with pytest.raises(UnknownName) as err:
        ARCHITECTURES.get("trasnformer")
    assert str(err.value).startswith("unknown architecture 'trasnformer'; did you mean 'transformer'?")
    with pytest.raises(UnknownName) as err:
        ARCHITECTURES.get("zzzz")
    assert "did you mean" not in str(err.value) and "known: cnn, gru" in str(err.value)


def test_a_name_cannot_be_registered_twice():
    reg = Registry("thing", "tasks")
    first, second = type("First", (), {}), type("Second", (), {})
    reg.register("x")(first)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("x")(second)


def test_every_entry_declares_what_the_harness_reads():
    for name in ARCHITECTURES.names():
        cls = ARCHITECTURES.get(name)
        assert cls.registered_name == name and cls.Options().model_dump() is not None
    for name in TASKS.names():
        cls = TASKS.get(name)
        assert cls.table_metrics and cls.version
        assert cls.upstream is None or cls.upstream in TASKS
        if cls.scores_only():  # trains nothing itself: the upstream task must train
            assert not cls.budgets and not TASKS.get(cls.upstream).scores_only()
        else:
            assert {"smoke", "full"} <= set(cls.budgets)
        for option, values in cls.sweep_axes.items():
            assert option in cls.Options.model_fields and values
