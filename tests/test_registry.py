import pytest

from harness.core.registry import ARCHITECTURES, TASKS, EntryUnavailable, Registry, UnknownName


def test_registries_hold_the_promised_entries():
    assert set(ARCHITECTURES.names()) >= {"rnn", "lstm", "gru", "cnn", "transformer"}
    assert "lm" in TASKS.names()


def test_unknown_names_suggest_the_closest():
    with pytest.raises(UnknownName) as err:
        ARCHITECTURES.get("trasnformer")
    assert str(err.value).startswith("unknown architecture 'trasnformer'; did you mean 'transformer'?")
    with pytest.raises(UnknownName) as err:
        ARCHITECTURES.get("zzzz")
    message = str(err.value)
    assert "did you mean" not in message and "(known: " in message
    known = message.split("(known: ")[1].rstrip(")").split(", ")
    assert known == sorted(ARCHITECTURES.names())


def test_a_name_cannot_be_registered_twice():
    reg = Registry("thing", "tasks", "THINGS", "harness.things")
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
        assert cls.kind in ("trained", "fine_tuned", "zero_shot")
        assert (cls.upstream is None) == (cls.kind == "trained")
        if cls.upstream is not None:  # the upstream task trains a model of its own
            assert TASKS.get(cls.upstream).kind == "trained"
        if cls.kind == "zero_shot":  # trains nothing itself
            assert not hasattr(cls, "budgets") and not hasattr(cls, "loss")
            assert cls.budget("smoke", {"steps": 3}) == {"steps": 3}
        else:
            assert {"smoke", "full"} <= set(cls.budgets)
            assert cls.budget("smoke", None) == cls.budgets["smoke"]
            # the full budget reports whole splits (the smoke budget may score a prefix)
            assert cls.budgets["full"].get("final_eval_tokens") is None
        for option, values in cls.sweep_axes.items():
            assert option in cls.Options.model_fields and values


LAZY = Registry("thing", "lazypkg", "LAZY", "harness.no_plugins_here")


def test_entries_are_read_from_source_and_imported_on_first_use(tmp_path, monkeypatch):
    """A module whose import fails breaks only its own entries: the others, and the list of
    names, still work, and the failing one says why."""
    import sys

    (tmp_path / "lazypkg").mkdir()
    (tmp_path / "lazypkg" / "__init__.py").write_text("")
    (tmp_path / "lazypkg" / "good.py").write_text(
        "from tests.test_registry import LAZY\n\n@LAZY.register('good')\nclass Good:\n    pass\n")
    (tmp_path / "lazypkg" / "broken.py").write_text(
        "import no_such_module_anywhere\nfrom tests.test_registry import LAZY\n\n"
        "@LAZY.register('broken')\nclass Broken:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert LAZY.names() == ["broken", "good"]  # read from the source: nothing imported yet
    assert "lazypkg.good" not in sys.modules and "lazypkg.broken" not in sys.modules
    assert LAZY.target("good") == "lazypkg.good:Good"
    assert LAZY.get("good").__name__ == "Good" and LAZY.get("good").registered_name == "good"
    assert "lazypkg.broken" not in sys.modules
    with pytest.raises(EntryUnavailable, match=r"thing 'broken' \(lazypkg.broken:Broken\) .*no_such_module_anywhere"):
        LAZY.get("broken")


BROKEN = Registry("thing", "brokenpkg", "BROKEN", "harness.no_plugins_here")


def test_an_unreadable_module_or_a_name_claimed_twice_spoils_only_itself(tmp_path, monkeypatch):
    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text("")
    (tmp_path / "brokenpkg" / "fine.py").write_text(
        "from tests.test_registry import BROKEN\n\n@BROKEN.register('fine')\nclass Fine:\n    pass\n")
    (tmp_path / "brokenpkg" / "typo.py").write_text("def oops(:\n")
    for name in ("one", "two"):
        (tmp_path / "brokenpkg" / f"{name}.py").write_text(
            f"from tests.test_registry import BROKEN\n\n@BROKEN.register('twice')\nclass C{name}:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert BROKEN.names() == ["fine"] and BROKEN.get("fine").__name__ == "Fine"
    with pytest.raises(EntryUnavailable, match=r"'twice' is registered by more than one module "
                                               r"\(brokenpkg.one:Cone, brokenpkg.two:Ctwo\)"):
        BROKEN.get("twice")
    with pytest.raises(UnknownName, match=r"unknown thing 'gone'.*brokenpkg.typo could not be read \(SyntaxError"):
        BROKEN.get("gone")
    assert len(BROKEN.problems()) == 2


def test_a_target_must_name_module_and_object():
    reg = Registry("thing", "tasks", "THINGS", "harness.things")
    with pytest.raises(ValueError, match="not 'module:object'"):
        reg.add("x", "just_a_module")
    reg.add("x", "m:A")
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("x", "m:B")


PLUGIN = {
    "pyproject.toml": """
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "harness-test-plugin"
version = "0.1"

[project.entry-points."harness.architectures"]
plugin_gru = "harness_test_plugin:PluginGRU"

[project.entry-points."harness.tasks"]
plugin_parity = "harness_test_plugin:PluginParity"
""",
    "harness_test_plugin/__init__.py": """
from architectures.recurrent import GRU
from tasks.extrapolation import Extrapolation


class PluginGRU(GRU):
    \"\"\"A GRU from outside the repository.\"\"\"


class PluginParity(Extrapolation):
    \"\"\"The parity probe alone, registered from outside the repository.\"\"\"
    sweep_axes = {}
""",
}


def test_a_plugin_package_registers_a_backbone_and_a_task_through_entry_points(tmp_path):
    """A package installed beside the project (here into its own folder on PYTHONPATH) adds a
    backbone and a task that ``harness list`` shows and ``harness run`` trains."""
    import os
    import subprocess
    import sys

    from tests.conftest import DATA_DIR, TINY_SETS

    src = tmp_path / "plugin"
    for rel, text in PLUGIN.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text.lstrip())
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(site), str(src)], check=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    listing = subprocess.run([sys.executable, "-m", "harness", "list"], env=env, capture_output=True,
                             text=True, check=True).stdout
    assert "plugin_gru" in listing and "plugin_parity" in listing
    runs = tmp_path / "runs"
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--arch", "plugin_gru", "--tasks",
                           "plugin_parity", "--results", str(runs), "--data-dir", str(DATA_DIR),
                           "--no-progress", *TINY_SETS], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    from harness.store import RunStore
    frame = RunStore(runs).runs()
    assert list(frame.arch) == ["plugin_gru"] and list(frame.task) == ["plugin_parity"]
    assert list(frame.status) == ["finished"]
