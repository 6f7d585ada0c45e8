#!/usr/bin/env bash
# The recipe study of issue 13, with ptexp's own sweeps and report: one `ptexp-train -m` per
# lever and study dataset, each a named sweep (study_<lever>_<dataset>) under $PTEXP_STUDY_ROOT
# (default outputs/study), so running this script again resumes: finished jobs are skipped,
# interrupted ones continue from their last checkpoint. Each sweep writes its report
# (results.csv, the ablation table, plots) into <sweep folder>/report when it ends.
#
#   scripts/study.sh [--plan] [--datasets a,b] [--levers x,y] [-- <ptexp-train overrides>]
#
#   --plan        print each sweep's plan (jobs, and time left once some have finished); run nothing
#   --datasets    comma-separated subset of: sms_spam hate_offensive clickbait drug_reviews clinc_domain clinc_pairs
#   --levers      comma-separated subset of: baselines lr schedule epochs patience prompt_length encoder init
#                 trainable head_lr template
#   -- ...        passed to every ptexp-train, e.g. num_threads=1, hydra/launcher=submitit_slurm,
#                 logger=none, trainer=gpu
#
# The study files are built first when missing (scripts/study_data.py; see docs/study-data.md
# for its sources). Launch from anywhere; the script runs from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

DATASETS=(sms_spam hate_offensive clickbait drug_reviews clinc_domain clinc_pairs)
PAIR_DATASETS=(clinc_pairs)
# Baselines first: every dataset gets its full fine-tuning target before the ablations start.
LEVERS=(baselines lr schedule epochs patience prompt_length encoder init trainable head_lr template)
ROOT=${PTEXP_STUDY_ROOT:-outputs/study}
DATA=${PTEXP_STUDY_DATA:-outputs/study-data}

plan=false
extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --plan) plan=true ;;
    --datasets) IFS=, read -r -a DATASETS <<< "$2"; shift ;;
    --levers) IFS=, read -r -a LEVERS <<< "$2"; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "study.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

is_pair() {
  local d
  for d in "${PAIR_DATASETS[@]}"; do [[ $d == "$1" ]] && return 0; done
  return 1
}

missing=()
for d in "${DATASETS[@]}"; do
  [[ -f $DATA/$d/train.jsonl && -f $DATA/$d/validation.jsonl && -f $DATA/$d/test.jsonl ]] || missing+=("$d")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  (IFS=,; python scripts/study_data.py "$DATA" --only "${missing[*]}")
fi

failed=()
for lever in "${LEVERS[@]}"; do
  for d in "${DATASETS[@]}"; do
    preset=study_$lever
    if [[ $lever == template ]] && is_pair "$d"; then preset=study_template_pair; fi
    name=study_${lever}_$d
    cmd=(ptexp-train -m "+sweep=$preset" "dataset=study/$d" "sweep_name=$name" "paths.root=$ROOT")
    if $plan; then cmd+=(hydra.sweeper.plan=true); fi
    cmd+=("${extra[@]}")
    echo "== $name: ${cmd[*]}"
    start=$SECONDS
    if ! PTEXP_STUDY_DATA=$DATA "${cmd[@]}"; then
      failed+=("$name")
      echo "== $name: failed (the other sweeps go on; run the script again to resume it)" >&2
    fi
    $plan || echo "== $name: $((SECONDS - start)) s; report: $ROOT/multiruns/$name/report"
  done
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "study.sh: ${#failed[@]} sweep(s) failed: ${failed[*]}" >&2
  exit 1
fi
