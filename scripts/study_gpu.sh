#!/usr/bin/env bash
# The recipe study (issue 13) on one GPU machine, in one call with a deadline:
#
#   source .gpu/prep.sh && bash scripts/study_gpu.sh [deadline_s] [levers]
#
# One lane per study dataset runs scripts/study.sh (the same named, resumable sweeps as on a
# CPU) with the parallel launcher, STUDY_JOBS_PER_LANE jobs at once (default 3: 6 lanes x 3 =
# 18 jobs on a 16-core, one-GPU node, each job one torch thread). Levers run in the order given,
# most important first, so a deadline cuts the least important. Every job keeps the default
# recipe's batch size and precision (fp32): the study measures the CPU recipe, only faster.
# At the deadline every lane is stopped; unfinished jobs stay resumable. The run folders, less
# weights and checkpoints, go to $OUT/study.tgz (or outputs/study-gpu/), with the lanes' logs,
# GPU utilisation sampled every 2 s and a progress count; scripts/study_table.py (or
# `ptexp-report` on each sweep folder) turns them into tables on any machine.
# STUDY_EXTRA="dataset.max_train_samples=32 ..." adds overrides to every job (a CPU rehearsal).
set -uo pipefail
cd "$(dirname "$0")/.."
deadline=${1:-480}
levers=${2:-baselines,lr,epochs,trainable,init,head_lr,patience,prompt_length,encoder,schedule,template}
per_lane=${STUDY_JOBS_PER_LANE:-3}
out=${OUT:-outputs/study-gpu}
root=${PTEXP_STUDY_ROOT:-/tmp/ptexp-study}
datasets=(${STUDY_DATASETS:-sms_spam hate_offensive clickbait drug_reviews clinc_domain clinc_pairs})
read -r -a extra <<< "${STUDY_EXTRA:-}"
mkdir -p "$out" "$root"
# On the GPU machine ptexp is not installed, only importable (prep.sh's PYTHONPATH).
if ! command -v ptexp-train > /dev/null; then
  mkdir -p "$root/bin"
  printf '#!/bin/sh\nexec python3 -m ptexp.train "$@"\n' > "$root/bin/ptexp-train"
  chmod +x "$root/bin/ptexp-train"
  export PATH=$root/bin:$PATH
fi

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; python3 -c \
  'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'; } > "$out/machine.txt" 2>&1
( nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 2 > "$out/utilisation.csv" 2>&1 ) &
sampler=$!

start=$SECONDS
lanes=()
for d in "${datasets[@]}"; do
  # setsid: each lane is its own process group, so the deadline stops its sweep and workers too.
  PTEXP_STUDY_ROOT=$root setsid bash scripts/study.sh --datasets "$d" --levers "$levers" -- \
    hydra/launcher=parallel "hydra.launcher.n_jobs=$per_lane" num_threads=1 logger=none \
    hydra.sweeper.fuse=false "${extra[@]}" > "$root/lane_$d.log" 2>&1 &
  lanes+=($!)
done

alive() { local p; for p in "${lanes[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
finished() { find "$root/multiruns" -name metrics.json 2>/dev/null | wc -l; }
while alive && (( SECONDS - start < deadline )); do
  sleep 10
  echo "$((SECONDS - start)) s: $(finished) jobs finished" >> "$out/progress.txt"
done
if alive; then
  echo "deadline ${deadline} s: stopping the lanes" >> "$out/progress.txt"
  for p in "${lanes[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
  sleep 5
  for p in "${lanes[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done
fi
kill "$sampler" 2>/dev/null
echo "$((SECONDS - start)) s: $(finished) jobs finished in all" >> "$out/progress.txt"

for d in "${datasets[@]}"; do echo "=== lane $d"; cat "$root/lane_$d.log"; done > "$out/lanes.log" 2>&1
# Weights and checkpoints stay behind (a call brings back 64 MiB at most); metrics, configs,
# logs and the sweeps' own reports come back.
tar -czf "$out/study.tgz" -C "$root" --exclude='*.safetensors' --exclude='*.bin' --exclude='*.pt' \
  --exclude='*.pth' --exclude='checkpoint-*' --exclude='adapter' --exclude='model' --exclude='predictions_*.jsonl' --exclude='lane_*.log' multiruns
ls -la "$out"
cat "$out/progress.txt" | tail -3
