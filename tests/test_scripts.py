"""scripts/quickstart.sh and scripts/setup.sh, run for real in a stand-in checkout.

The scripts are copied unchanged into a temporary checkout; what they call (the
setup step, the ``pagelens`` command, pip, apt-get) is replaced by small stubs that
log their arguments, so that the tests run offline and install nothing.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _bash(script: Path, *args: str, cwd: Path, env: dict[str, str] | None = None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PAGELENS_")}
    full_env.update(env or {})
    return subprocess.run(
        ["bash", str(script), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --------------------------------------------------------------------------- quickstart


@pytest.fixture
def quickstart(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(quickstart.sh in a stand-in checkout, the caller's folder, the pagelens call log)."""
    repo = tmp_path / "checkout"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPTS / "quickstart.sh", repo / "scripts" / "quickstart.sh")
    log = tmp_path / "calls.log"
    _executable(repo / "scripts" / "setup.sh", "echo setup ran\n")
    bin_dir = repo / ".venv" / "bin"
    (bin_dir / "activate").parent.mkdir(parents=True)
    (bin_dir / "activate").write_text(f'PATH="{bin_dir}:$PATH"\n')
    _executable(bin_dir / "pagelens", f'#!/bin/sh\necho "$PWD|$*" >> "{log}"\n')
    caller = tmp_path / "elsewhere"
    (caller / "pdfs").mkdir(parents=True)
    return repo / "scripts" / "quickstart.sh", caller, log


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines()


def test_quickstart_reads_relative_paths_from_the_callers_folder(quickstart):
    script, caller, log = quickstart
    done = _bash(script, "pdfs", "what is revenue", "minilm", "myindex", cwd=caller)
    assert done.returncode == 0, done.stderr
    repo = script.parents[1]
    pdfs, index = caller / "pdfs", caller / "myindex"
    assert _calls(log) == [
        f"{repo}|index {pdfs} --index {index} --model minilm",
        f"{repo}|info --index {index}",
        f"{repo}|search what is revenue --index {index} -k 5",
    ]


def test_quickstart_index_defaults_to_the_callers_folder(quickstart):
    script, caller, log = quickstart
    assert _bash(script, str(caller / "pdfs"), "q", cwd=caller).returncode == 0
    first = _calls(log)[0]
    assert first.endswith(
        f"index {caller / 'pdfs'} --index {caller / 'pagelens-index'} "
        "--model vidore/colqwen2.5-v0.2"
    )
    # PAGELENS_INDEX still works, and a relative local model folder is found
    (caller / "models" / "mine").mkdir(parents=True)
    log.unlink()
    env = {"PAGELENS_INDEX": "idx2"}
    assert _bash(script, "pdfs", "q", "models/mine", cwd=caller, env=env).returncode == 0
    assert _calls(log)[0].endswith(
        f"--index {caller / 'idx2'} --model {caller / 'models' / 'mine'}"
    )


def test_quickstart_usage_names_the_index_argument(quickstart):
    script, caller, _ = quickstart
    done = _bash(script, "pdfs", cwd=caller)
    assert done.returncode != 0
    assert "PDF_FOLDER QUESTION [MODEL] [INDEX]" in done.stderr


# --------------------------------------------------------------------------- setup


@pytest.fixture
def setup_checkout(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """(setup.sh in a stand-in checkout, the pip log, the environment to run it with).

    The checkout's .venv/bin/python runs the real interpreter for everything but pip,
    whose calls it logs; ``import pagelens`` finds the checkout's own (empty) package.
    """
    repo = tmp_path / "checkout"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPTS / "setup.sh", repo / "scripts" / "setup.sh")
    (repo / "pyproject.toml").write_text('[project]\nname = "pagelens"\n')
    (repo / "pagelens").mkdir()
    (repo / "pagelens" / "__init__.py").write_text("")
    log = tmp_path / "pip.log"
    bin_dir = repo / ".venv" / "bin"
    _executable(
        bin_dir / "python",
        "#!/bin/sh\n"
        f'if [ "$1" = -m ] && [ "$2" = pip ]; then echo "$*" >> "{log}"; exit 0; fi\n'
        f'exec "{sys.executable}" "$@"\n',
    )
    (bin_dir / "activate").write_text(f'PATH="{bin_dir}:$PATH"\n')
    # poppler, tesseract and chromium "installed": no apt-get
    tools = tmp_path / "tools"
    for name in ("pdftoppm", "tesseract", "chromium", "chromedriver"):
        _executable(tools / name, "#!/bin/sh\n")
    env = {"PATH": f"{tools}:{os.environ['PATH']}", "PYTHONPATH": str(repo)}
    return repo / "scripts" / "setup.sh", log, env


def _installs(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if " install " in f" {line} "]


@pytest.mark.slow
def test_setup_installs_once_then_skips_pip(setup_checkout):
    pytest.importorskip("colpali_engine")
    pytest.importorskip("torch")
    script, log, env = setup_checkout
    repo = script.parents[1]
    first = _bash(script, cwd=repo, env=env)
    assert first.returncode == 0, first.stderr
    assert any("-e .[all,dev]" in line for line in _installs(log))
    count = len(_installs(log))
    again = _bash(script, cwd=repo, env=env)
    assert again.returncode == 0, again.stderr
    assert "pip skipped" in again.stdout and len(_installs(log)) == count
    # a changed pyproject.toml installs again
    (repo / "pyproject.toml").write_text('[project]\nname = "pagelens"\nversion = "2"\n')
    assert _bash(script, cwd=repo, env=env).returncode == 0
    assert len(_installs(log)) > count
    count = len(_installs(log))
    # so does a pagelens that is not this checkout's (another editable install)
    shutil.rmtree(repo / "pagelens")
    other = script.parents[2] / "other"
    (other / "pagelens").mkdir(parents=True)
    (other / "pagelens" / "__init__.py").write_text("")
    env = {**env, "PYTHONPATH": str(other)}
    assert _bash(script, cwd=repo, env=env).returncode == 0
    assert len(_installs(log)) > count


def test_setup_installs_python3_venv_where_ensurepip_is_missing(tmp_path: Path):
    repo = tmp_path / "checkout"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPTS / "setup.sh", repo / "scripts" / "setup.sh")
    (repo / "pyproject.toml").write_text("")
    tools = tmp_path / "tools"
    log = tmp_path / "apt.log"
    marker = tmp_path / "venv-installed"
    for name in ("pdftoppm", "tesseract", "chromium", "chromedriver"):
        _executable(tools / name, "#!/bin/sh\n")
    _executable(tools / "sudo", '#!/bin/sh\nexec "$@"\n')
    _executable(
        tools / "apt-get",
        f'#!/bin/sh\necho "$*" >> "{log}"\ncase "$*" in *python3-venv*) touch "{marker}";; esac\n',
    )
    # a python3 without ensurepip until python3-venv is installed; its venv step then
    # stops the script (the rest of setup is the other test's business)
    _executable(
        tools / "python3",
        "#!/bin/sh\n"
        f'if [ "$1" = -c ]; then [ -e "{marker}" ]; exit $?; fi\n'
        'if [ "$1" = -m ] && [ "$2" = venv ]; then echo "venv $*"; exit 3; fi\n'
        "exit 1\n",
    )
    env = {"PATH": f"{tools}:/usr/bin:/bin", "PYTHON": "python3"}
    done = _bash(repo / "scripts" / "setup.sh", cwd=repo, env=env)
    assert "installing python3-venv" in done.stdout
    assert any(
        "install" in line and "python3-venv" in line for line in log.read_text().splitlines()
    )
    assert "venv -m venv --clear .venv" in done.stdout  # created after the install
    assert done.returncode == 3
