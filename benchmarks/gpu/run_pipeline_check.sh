#!/usr/bin/env bash
# One GPU check: end-to-end indexing against the encoder alone, three full-size models.
#
# Runs benchmarks/gpu/pipeline_gpu.py on the carried real pages (16 PNGs rendered here at
# 150 dpi, cycled to 64 one-page documents): encoder alone, index_pages overlapped and
# serial, ColQwen2.5's batched window attention against the stock one (speed and vectors),
# the pre-resize on and off, peak GPU memory. Each model in its own process, 140 s each.
#
# Run from the repository root on the GPU machine (no network, no poppler), carrying the
# git-ignored folders .whl (colpali-engine 0.3.18, transformers 5.24.0, qdrant-edge-py and
# their pure-Python dependencies; regex as fallback) and .gpu-pages (made by: python -m
# benchmarks.encoder_cost --save-images .gpu-pages --pages 16):
#
#     bash benchmarks/gpu/run_pipeline_check.sh
#
# Writes $OUT/pipeline_gpu.json and $OUT/pipeline_gpu.log. Budget: 3 x 140 s + setup,
# under 8 minutes; not run yet (no GPU was lent to the session that wrote it).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
start=$SECONDS
step() { echo "== [$((SECONDS - start)) s] $*"; }

{
step "machine"
date -u
nvidia-smi -L
nproc

for dir in .whl .gpu-pages; do
    [ -d "$dir" ] || { echo "missing $dir: name it in carry"; exit 2; }
done

step "install carried wheels into /tmp/site"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false
python3 - <<'PY' || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/fallback/regex-*.whl || exit 3
from importlib.metadata import version
v = tuple(int(x) for x in version("regex").split(".")[:3])
raise SystemExit(0 if v >= (2025, 10, 22) else 1)
PY

step "import smoke test"
timeout 120 python3 - <<'PY' || exit 4
import colpali_engine, transformers, torch  # noqa: F401
import pagelens.encoders.colpali, pagelens.pipeline.job  # noqa: F401
from pagelens.index import Index
with Index.open(location=":memory:") as _:  # qdrant-client local mode, if edge is missing
    pass
import qdrant_edge  # noqa: F401  # the default embedded store
assert torch.cuda.is_available(), "torch sees no GPU"
print(torch.__version__, transformers.__version__, torch.cuda.get_device_name(0))
PY

step "pipeline: 3 models, 64 pages each"
timeout 450 python3 -m benchmarks.gpu.pipeline_gpu --images .gpu-pages --carried 16 \
    --pages 64 --timeout 140 --out "$OUT/pipeline_gpu.json"
rc=$?
step "done (exit status $rc)"
exit $rc
} 2>&1 | tee -a "$OUT/pipeline_gpu.log"
exit "${PIPESTATUS[0]}"
