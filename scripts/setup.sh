#!/usr/bin/env bash
# Install what pagelens needs on a fresh Debian machine: poppler and tesseract from
# Debian, then a virtual environment in .venv with pagelens and its extras.
# Run again, it installs nothing and needs no network while .venv is complete and
# pyproject.toml has not changed since its last install.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

need_apt=()
command -v pdftoppm >/dev/null 2>&1 || need_apt+=(poppler-utils)
command -v tesseract >/dev/null 2>&1 || need_apt+=(tesseract-ocr tesseract-ocr-eng)
# the browser test of `pagelens serve` drives Debian's chromium through its driver
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
[ ${#need_apt[@]} -eq 0 ] || apt_install "${need_apt[@]}"

PYTHON="${PYTHON:-python3}"
# Debian ships venv's pip bootstrap (ensurepip) apart from python3: without the
# python3-venv package, `python3 -m venv` fails or leaves a .venv without pip.
can_venv() { "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; }
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  if ! can_venv; then
    echo "$PYTHON cannot create a virtual environment (no ensurepip): installing python3-venv"
    apt_install python3-venv || true
    if ! can_venv; then  # another python than Debian's default: its versioned package
      apt_install "python$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
    fi
  fi
  "$PYTHON" -m venv --clear .venv
fi
. .venv/bin/activate

# Skip pip when the last install was of this pyproject.toml and pagelens (this
# checkout's, editable) imports with its heavy extras.
stamp=.venv/.pagelens-installed
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
installed() {
  [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ] && python - <<'EOF' >/dev/null 2>&1
import pathlib, sys
import colpali_engine, pagelens, torch  # noqa: F401
sys.exit(pathlib.Path(pagelens.__file__).resolve().parents[1] != pathlib.Path.cwd().resolve())
EOF
}
if installed; then
  echo "pagelens already installed in .venv (pyproject.toml unchanged); pip skipped"
  exit 0
fi

rm -f "$stamp"
python -m pip install -q --upgrade pip
# torch and torchvision are installed as a matched pair first: colpali-engine needs
# torch < 2.14, and these two builds are known to import together.
if ! python -c "import torch, torchvision" >/dev/null 2>&1; then
  python -m pip install -q "torch==${TORCH_VERSION:-2.9.1}" "torchvision==${TORCHVISION_VERSION:-0.24.1}"
fi
python -m pip install -q -e ".[all,dev]"
echo "$wanted" >"$stamp"
echo "pagelens installed in .venv ($(python -c 'import torch; print("torch", torch.__version__)'))"
