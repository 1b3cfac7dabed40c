"""The layers are enforced: import-linter's contracts (pyproject.toml) hold on this tree, name
every engine module, and break when a lower layer imports a higher one."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(LINT, cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def test_the_layers_and_acyclic_contracts_hold():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


def test_the_face_and_engine_layers_name_every_module_of_harness_but_the_core():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    face, engine = ({m.strip() for m in layer.split(":")} for layer in layers[:2])
    on_disk = {f"harness.{p.stem}" for p in (ROOT / "harness").glob("*.py") if p.stem != "__init__"}
    assert face == {"harness.cli", "harness.__main__"} and not face & engine
    assert face | engine == on_disk
    assert layers[2:] == ["tasks", "architectures", "harness.core"]


def _tree_with(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the project's packages with ``line`` appended to ``module``."""
    for name in ("harness", "tasks", "architectures"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / module, "a") as f:
        f.write(f"\n{line}  # noqa\n")
    return tmp_path


def test_a_backbone_importing_the_engine_breaks_the_contract(tmp_path):
    done = _lint(_tree_with(tmp_path, "architectures/cnn.py", "from harness.runner import execute"))
    assert done.returncode != 0
    assert "architectures.cnn -> harness.runner" in done.stdout


def test_the_engine_importing_the_command_line_breaks_the_contract(tmp_path):
    done = _lint(_tree_with(tmp_path, "harness/tables.py", "from harness.cli import main"))
    assert done.returncode != 0 and "harness.tables -> harness.cli" in done.stdout


def test_the_contract_layer_importing_a_task_breaks_the_contract(tmp_path):
    done = _lint(_tree_with(tmp_path, "harness/core/metrics.py", "import tasks.lm"))
    assert done.returncode != 0 and "harness.core.metrics -> tasks.lm" in done.stdout
