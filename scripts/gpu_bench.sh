#!/usr/bin/env bash
# Issue 10's GPU measurements in one command with a deadline (≈ 8 minutes on one H100):
#   source .gpu/prep.sh && bash scripts/gpu_bench.sh          (see ../shared/gpu/README.md)
# 1. one step with and without the Trainer (bf16, batch 64): the Trainer's host overhead;
# 2. the fused 16-job grid against one job alone, and the sequential sweep (bench.py --fusion --gpu).
# Each part has its own time limit, so a slow part cannot eat the other's; results go to $OUT
# (the device tool's output folder) or to outputs/gpu-bench/.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-outputs/gpu-bench}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$out/gpu.txt" 2>&1 || true
# utilisation, sampled every 0.5 s while the benchmarks run
( nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 500 > "$out/utilisation.csv" 2>&1 ) &
sampler=$!
trap 'kill $sampler 2>/dev/null || true' EXIT
timeout "${STEP_LIMIT:-90}" python3 scripts/bench_step.py --batch 64 --steps 100 --bf16 2>&1 | tee "$out/step.txt"
timeout "${FUSION_LIMIT:-390}" python3 scripts/bench.py --fusion --gpu --reps 1 --out "$out/BENCHMARKS-gpu.md" \
  --workdir "$out/work" 2>&1 | tail -40 | tee "$out/fusion.txt"
echo "results in $out"
