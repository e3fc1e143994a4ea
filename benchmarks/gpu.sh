#!/usr/bin/env bash
# The model on a GPU, in at most 10 minutes: the `full` preset (DynUNet, deep supervision, 128^3 patches)
# trains a few hundred steps on a small synthetic demo cohort, then predicts one 512x512x300 scan.
# Appends a row (card, steps/s, samples/s, peak GPU memory, s/scan) to benchmarks/RESULTS.md.
#
#   bash benchmarks/gpu.sh                 # STEPS=300 WORK=/tmp/amt_gpu by default
#   STEPS=150 bash benchmarks/gpu.sh
#
# Needs a Python with a CUDA build of torch and this package installed (`make install` on a machine with
# nvidia-smi picks pip's CUDA build); PYTHON overrides which one.
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS="${STEPS:-300}"
WORK="${WORK:-/tmp/amt_gpu}"
N_CASES="${N_CASES:-24}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
deadline=$((SECONDS + 570))

command -v nvidia-smi >/dev/null || { echo "gpu.sh: no nvidia-smi: this benchmark needs an NVIDIA GPU" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" - <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu.sh: torch {torch.__version__} sees no CUDA device (a CPU-only build?)")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}, "
      f"bf16 {torch.cuda.is_bf16_supported()}")
EOF

mkdir -p "$WORK"
# 1. a small demo-preset cohort (about a minute on 16 cores; kept between runs)
if [[ ! -f "$WORK/cohort/cases.csv" ]]; then
  timeout 240 "$PYTHON" -c "
from amt_core.synth.generate import build_cohort
build_cohort('$WORK/cohort', preset='demo', n_cases=$N_CASES, seed=0, progress=False)"
fi

# 2. full-preset training throughput + 3. whole-scan inference on 512x512x300, appended to RESULTS.md
left=$((deadline - SECONDS))
rm -rf "$WORK/bench/run"
timeout "$left" "$PYTHON" benchmarks/bench_model.py --cohort "$WORK/cohort/cases.csv" --gpu "$WORK/bench" \
  --steps "$STEPS" --write
echo "gpu.sh: done in $SECONDS s; see benchmarks/RESULTS.md"
