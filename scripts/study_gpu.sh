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
# Phase 1 (two thirds of the deadline, or STUDY_PHASE1 s) runs the levers; phase 2 combines each
# lever's value of best mean validation rank (ptexp-study --choose) into one candidate recipe
# and runs it with 3 seeds on every dataset (sweeps study_candidate_<dataset>).
# At each deadline every lane is stopped; unfinished jobs stay resumable. The run folders, less
# weights and checkpoints, go to $OUT/study.tgz (or outputs/study-gpu/), with the lanes' logs,
# GPU utilisation sampled every 2 s and a progress count; `ptexp-study <root>` (and
# `ptexp-report` on each sweep folder) turns them into tables on any machine.
# STUDY_EXTRA="dataset.max_train_samples=32 ..." adds overrides to every job (a CPU rehearsal).
set -uo pipefail
cd "$(dirname "$0")/.."
deadline=${1:-480}
# Phase 1 (the levers) stops here; phase 2 (their best values combined) has the rest.
phase1=${STUDY_PHASE1:-$(( deadline * 2 / 3 ))}
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

launch=(hydra/launcher=parallel "hydra.launcher.n_jobs=$per_lane" num_threads=1 logger=none hydra.sweeper.fuse=false)
start=$SECONDS
lanes=()
finished() { find "$root/multiruns" -name metrics.json 2>/dev/null | wc -l; }
alive() { local p; for p in "${lanes[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
# wait_lanes UNTIL: wait for the lanes, and stop them all at UNTIL s after the start.
wait_lanes() {
  while alive && (( SECONDS - start < $1 )); do
    sleep 10
    echo "$((SECONDS - start)) s: $(finished) jobs finished" >> "$out/progress.txt"
  done
  if alive; then
    echo "$((SECONDS - start)) s: deadline, stopping the lanes" >> "$out/progress.txt"
    local p
    for p in "${lanes[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
    sleep 5
    for p in "${lanes[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done
  fi
  lanes=()
}

# Phase 1: the levers, one at a time, each against the default recipe.
lever_lanes() {
  local d
  for d in "${datasets[@]}"; do
    # setsid: each lane is its own process group, so the deadline stops its sweep and workers too.
    PTEXP_STUDY_ROOT=$root setsid bash scripts/study.sh --datasets "$d" --levers "$levers" -- \
      "${launch[@]}" "${extra[@]}" >> "$root/lane_$d.log" 2>&1 &
    lanes+=($!)
  done
}
lever_lanes
wait_lanes "$phase1"

# Phase 2: every lever at its best mean validation rank, combined (ptexp-study --choose),
# 3 seeds on every dataset: the candidate default recipe, against full fine-tuning's baselines.
chosen=$(python3 -m ptexp.study "$root" --choose --min-datasets "${STUDY_MIN_DATASETS:-4}" 2> "$out/choice.txt")
echo "candidate: $chosen" >> "$out/choice.txt"
read -r -a chosen_args <<< "$chosen"
if (( ${#chosen_args[@]} > 0 )); then
  for d in "${datasets[@]}"; do
    setsid ptexp-train -m "dataset=study/$d" seed=1,2,3 "${chosen_args[@]}" "sweep_name=study_candidate_$d" \
      "paths.root=$root" "${launch[@]}" "${extra[@]}" > "$root/lane_candidate_$d.log" 2>&1 &
    lanes+=($!)
  done
  # The embedded default (seed 42 is `ptexp-train`'s): the candidate, then today's recipe.
  # (Word splitting is meant: no override here holds a space.)
  CHOSEN=$chosen COMMON="paths.root=$root ${launch[*]} ${extra[*]}" setsid bash -c \
    'ptexp-train -m seed=42,1,2 $CHOSEN sweep_name=study_candidate_embedded $COMMON &&
     ptexp-train -m seed=42,1,2 sweep_name=study_default_embedded $COMMON' \
    > "$root/lane_embedded.log" 2>&1 &
  lanes+=($!)
else
  # No lever finished on enough datasets to choose from: the levers go on instead (resumed).
  lever_lanes
fi
wait_lanes "$deadline"
kill "$sampler" 2>/dev/null
echo "$((SECONDS - start)) s: $(finished) jobs finished in all" >> "$out/progress.txt"

for f in "$root"/lane_*.log; do echo "=== $f"; cat "$f"; done > "$out/lanes.log" 2>&1
# Weights and checkpoints stay behind (a call brings back 64 MiB at most); metrics, configs,
# logs and the sweeps' own reports come back.
tar -czf "$out/study.tgz" -C "$root" --exclude='*.safetensors' --exclude='*.bin' --exclude='*.pt' \
  --exclude='*.pth' --exclude='checkpoint-*' --exclude='adapter' --exclude='model' --exclude='predictions_*.jsonl' --exclude='lane_*.log' multiruns
ls -la "$out"
cat "$out/progress.txt" | tail -3
