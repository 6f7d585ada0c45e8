#!/usr/bin/env bash
# Each method's learning rate, measured rather than guessed: three rates per method on a small
# slice of the embedded tweets (500 training examples, 2 epochs, seed 1), chosen by the
# validation metric in each sweep's report. The rates in ptexp/conf/method/*.yaml come from here.
#   bash scripts/method_lr_probe.sh [paths.root]
set -euo pipefail
root="${1:-outputs}"
common=(dataset.max_train_samples=500 dataset.max_eval_samples=500 dataset.max_test_samples=500
        trainer.num_train_epochs=2 seed=1 logger=none num_threads=2 "paths.root=$root")
declare -A grids=(
  [prompt_tuning]="1e-2,3e-2,1e-1"
  [prefix_tuning]="3e-3,1e-2,3e-2"
  [lora]="3e-4,1e-3,3e-3"
  [full_finetune]="2e-5,5e-5,1e-4"
  [linear_probe]="3e-3,1e-2,3e-2"
  [p_tuning]="3e-3,1e-2,3e-2"
)
for method in prompt_tuning prefix_tuning lora full_finetune linear_probe p_tuning; do
  ptexp-train -m "method=$method" "trainer.learning_rate=${grids[$method]}" "${common[@]}" \
    "sweep_name=lr_probe/$method"
done
