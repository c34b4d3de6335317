#!/usr/bin/env bash
# GPU check (issue 7): the E1 paper profile (lr 1e-4, 50% split, 1e5 steps, seeds 1/42/15213
# batched in one model), the seed-batching ratio at S = 16 and the speed knobs, printing time-to-grok rows.
# Meant for one modern GPU, under 8 minutes; run from the repository root: bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this check needs a GPU"
print("device:", torch.cuda.get_device_name(0))
PY
GROKPROBE_RESULTS="${GROKPROBE_RESULTS:-build/gpu_check/results}" python benchmarks/time_to_grok.py --profile paper --device cuda
python benchmarks/bench_seeds.py --device cuda --seeds 16 --steps 300 --rounds 2
python benchmarks/bench_flags.py --device cuda --steps 300 --rounds 1  # bfloat16 / torch.compile step ratios
