#!/usr/bin/env bash
# One GPU check: what real-size ColPali-family page encoders cost per page on this GPU.
#
# Builds random-init ColSmol-256M, ColQwen2.5-3B and ColPali-v1.3 from their real configs
# on the GPU (bfloat16) and times pagelens' ColPaliEngineEncoder.encode_pages over 16 real
# mmlongbench pages (PNGs rendered here at 150 dpi), batch sizes 1, 8 and 16, plus 32 real
# questions; each model in its own process with a timeout (benchmarks/encoder_cost.py).
#
# Run from the repository root on the GPU machine (no network, no poppler), with the
# git-ignored folders .whl (colpali-engine 0.3.18, transformers 5.24.0; regex as fallback)
# and .gpu-pages (made by: python -m benchmarks.encoder_cost --save-images .gpu-pages
# --pages 16) carried along:
#
#     bash benchmarks/gpu/run_gpu_check.sh
#
# Writes $OUT/encoder_cost_gpu.json (rewritten after each model) and $OUT/encoder_cost_gpu.log.
# Expected: about 3-4 minutes on an H100; at most about 7 (the timeouts below).
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
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
nproc

for dir in .whl .gpu-pages; do
    [ -d "$dir" ] || { echo "missing $dir: name it in carry"; exit 2; }
done

step "install carried wheels into /tmp/site"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false
# transformers 5.24 checks regex >= 2025.10.22 at import; carry-in only if the image's is older
python3 - <<'EOF' || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/fallback/regex-*.whl || exit 3
from importlib.metadata import version
v = tuple(int(x) for x in version("regex").split(".")[:3])
print("regex", v)
raise SystemExit(0 if v >= (2025, 10, 22) else 1)
EOF

step "import smoke test"
timeout 120 python3 - <<'EOF' || exit 4
import colpali_engine, transformers, pagelens.encoders.colpali  # noqa: F401
import huggingface_hub, tokenizers, torch
from importlib.metadata import version
print("python", __import__("sys").version.split()[0], "| torch", torch.__version__,
      "cuda", torch.version.cuda, "| transformers", transformers.__version__,
      transformers.__file__, "| colpali-engine", version("colpali-engine"),
      "| huggingface_hub", huggingface_hub.__version__, "| tokenizers", tokenizers.__version__)
assert torch.cuda.is_available(), "torch sees no GPU"
print(torch.cuda.get_device_name(0))
EOF

step "encoder cost: 3 models x batch sizes 1 8 16, 16 pages, 32 queries"
# 140 s per model (a soft deadline at 98 s skips what is left of a slow model);
# 400 s for the whole run; the JSON keeps what finished.
timeout 400 python3 -m benchmarks.encoder_cost --device cuda --dtype bfloat16 \
    --images .gpu-pages --pages 16 --batch-sizes 1 8 16 --queries 32 --timeout 140 \
    --out "$OUT/encoder_cost_gpu.json"
rc=$?
step "done (exit status $rc)"
exit $rc
} 2>&1 | tee -a "$OUT/encoder_cost_gpu.log"
exit "${PIPESTATUS[0]}"
