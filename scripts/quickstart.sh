#!/usr/bin/env bash
# Install pagelens, index a folder of PDFs and answer a question.
#   bash scripts/quickstart.sh PDF_FOLDER "question" [MODEL]
# MODEL is a hub id (default vidore/colqwen2.5-v0.2) or a local checkpoint folder.
set -euo pipefail
cd "$(dirname "$0")/.."
folder="${1:?usage: quickstart.sh PDF_FOLDER QUESTION [MODEL]}"
question="${2:?usage: quickstart.sh PDF_FOLDER QUESTION [MODEL]}"
model="${3:-${PAGELENS_MODEL:-vidore/colqwen2.5-v0.2}}"
index="${PAGELENS_INDEX:-pagelens-index}"
bash scripts/setup.sh
. .venv/bin/activate
pagelens index "$folder" --index "$index" --model "$model"
pagelens info --index "$index"
pagelens search "$question" --index "$index" -k 5
