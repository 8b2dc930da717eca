#!/usr/bin/env bash
# Install what pagelens needs on a fresh Debian machine: poppler and tesseract from
# Debian, then a virtual environment in .venv with pagelens and its extras.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v pdftoppm >/dev/null 2>&1 || need_apt+=(poppler-utils)
command -v tesseract >/dev/null 2>&1 || need_apt+=(tesseract-ocr tesseract-ocr-eng)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch and torchvision are installed as a matched pair first: colpali-engine needs
# torch < 2.14, and these two builds are known to import together.
if ! python -c "import torch, torchvision" >/dev/null 2>&1; then
  python -m pip install -q "torch==${TORCH_VERSION:-2.9.1}" "torchvision==${TORCHVISION_VERSION:-0.24.1}"
fi
python -m pip install -q -e ".[all,dev]"
echo "pagelens installed in .venv ($(python -c 'import torch; print("torch", torch.__version__)'))"
