#!/usr/bin/env bash
# Which bytes does `train` + `evaluate` give with oneDNN on (TF_ENABLE_ONEDNN_OPTS=1) under
# each instruction-set cap, and with the pipeline's default (oneDNN off, stages/__init__.py),
# and what does each cost? Run from the repository root after one `dvc repro`:
#   bash benchmarks/cpu_isa.sh > isa.tsv
# Each configuration re-runs `train` and `evaluate` (`dvc repro -f -s`) with its environment
# set for the stage processes, then prints the md5 of models/best.keras, eval.json's
# accuracy and f1_macro, and the train stage's own time. The workspace is left as the
# default configuration leaves it (the last row re-runs it).
set -euo pipefail
configs=(
  "default (oneDNN off):"
  "oneDNN on:TF_ENABLE_ONEDNN_OPTS=1"
  "oneDNN on, ISA <= AVX:TF_ENABLE_ONEDNN_OPTS=1 ONEDNN_MAX_CPU_ISA=AVX"
  "oneDNN on, ISA <= SSE4.1:TF_ENABLE_ONEDNN_OPTS=1 ONEDNN_MAX_CPU_ISA=SSE41"
  "default (oneDNN off), ISA <= AVX:ONEDNN_MAX_CPU_ISA=AVX"
  "default (oneDNN off):"
)
printf 'config\tbest.keras md5\taccuracy\tf1_macro\ttrain s\tepochs\n'
rm -rf models/resume  # an interrupted run's state would be resumed by the next one
for entry in "${configs[@]}"; do
  name=${entry%%:*}
  settings=${entry#*:}
  log=$(mktemp)
  env $settings dvc repro -f -s train evaluate >"$log" 2>&1
  seconds=$(sed -n 's/^train: finished after \([0-9]*\) epochs in \([0-9.]*\)s.*/\2/p' "$log")
  epochs=$(sed -n 's/^train: finished after \([0-9]*\) epochs.*/\1/p' "$log")
  scores=$(python -c "import json; m = json.load(open('metrics/eval.json')); print(f\"{m['accuracy']:.6f}\t{m['f1_macro']:.6f}\")")
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$(md5sum models/best.keras | cut -c1-8)" "$scores" "$seconds" "$epochs"
  rm -f "$log"
done
