"""A plain (non-editable) install carries every module and template: the wheel holds each source
file of the three packages, subpackages included, as a Ray worker or a user's site-packages needs."""
import subprocess
import sys
import zipfile

from tests.conftest import ROOT


def test_the_wheel_holds_every_module_and_template(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("harness-*.whl")
    inside = set(zipfile.ZipFile(wheel).namelist())
    wanted = {str(p.relative_to(ROOT)) for package in ("harness", "tasks", "architectures")
              for p in (ROOT / package).rglob("*") if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts}
    assert "harness/core/registry.py" in wanted and "tasks/lm_eval/figqa.yaml" in wanted
    assert wanted - inside == set()
    assert not any(name.startswith(("tests/", "results/")) for name in inside)
