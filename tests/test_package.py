"""The package itself: importing it is light, and a built wheel holds every module."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_loads_no_model_library():
    code = (
        "import sys, pagelens, pagelens.search, pagelens.pipeline.job, pagelens.cli;"
        "heavy = ('torch', 'transformers', 'colpali_engine');"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.slow
def test_wheel_contains_every_module(tmp_path):
    # Built from a copy, without build isolation or an index: the setuptools of this
    # environment (the dev extra) builds it, so the test reaches no network and
    # leaves no build/ or egg-info in the checkout.
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "pagelens", src / "pagelens", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    cmd += ["--no-index", "-w", str(tmp_path / "dist"), str(src)]
    built = subprocess.run(cmd, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("pagelens-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "pagelens").rglob("*.py")}
    assert sources <= names
    # the web page of `pagelens serve` ships as package data
    static = {str(p.relative_to(ROOT)) for p in (ROOT / "pagelens/serve/static").iterdir()}
    assert static and static <= names


TIER_SKIPS = """
import sys

import pytest

sys.modules["datasets"] = None  # importing it now fails, as on a machine without the extra


def test_in_a_test():
    pytest.importorskip("datasets")


def test_unrelated():
    pytest.skip("not a model-tier skip")
"""


def test_model_tier_skip_fails_only_under_ci(tmp_path):
    (tmp_path / "test_tier.py").write_text(TIER_SKIPS)
    (tmp_path / "test_module_level.py").write_text(
        "import sys\n\nimport pytest\n\nsys.modules['colpali_engine'] = None\n"
        "pytest.importorskip('colpali_engine')\n"
    )
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", str(tmp_path)]
    cmd += ["--rootdir", str(tmp_path), "-p", "no:cacheprovider"]

    def run(ci):
        env = {**os.environ, "CI": ci, "PYTHONPATH": str(ROOT)}
        return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)

    local = run("")
    assert local.returncode == 0, local.stdout
    assert "3 skipped" in local.stdout
    ci = run("true")
    assert ci.returncode == 1, ci.stdout
    assert "real-model tier skipped under CI=true" in ci.stdout
    assert "test_tier.py::test_in_a_test: could not import 'datasets'" in ci.stdout
    assert "test_module_level.py: could not import 'colpali_engine'" in ci.stdout
    assert "test_unrelated" not in ci.stdout.split("real-model tier")[1]
