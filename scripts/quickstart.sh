#!/usr/bin/env bash
# Install pagelens, index a folder of PDFs and answer a question.
#   bash scripts/quickstart.sh PDF_FOLDER "question" [MODEL] [INDEX]
# MODEL is a hub id (default vidore/colqwen2.5-v0.2), a local checkpoint folder, or
# minilm (no download, fast on CPU). INDEX is the index folder (default
# ./pagelens-index). Relative paths are read from the folder you run this from.
set -euo pipefail
usage="usage: quickstart.sh PDF_FOLDER QUESTION [MODEL] [INDEX]"
folder="${1:?$usage}"
question="${2:?$usage}"
model="${3:-${PAGELENS_MODEL:-vidore/colqwen2.5-v0.2}}"
index="${4:-${PAGELENS_INDEX:-pagelens-index}}"

# The script moves to the checkout below: make the caller's paths absolute first.
absolute() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
folder="$(absolute "$folder")"
index="$(absolute "$index")"
# a model folder given by a relative path (minilm is a name, never a folder here)
if [ "$model" != minilm ] && [ -e "$model" ]; then model="$(absolute "$model")"; fi

cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
pagelens index "$folder" --index "$index" --model "$model"
pagelens info --index "$index"
pagelens search "$question" --index "$index" -k 5
