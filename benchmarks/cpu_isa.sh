#!/usr/bin/env bash
# Which bytes does `train` + `evaluate` give with TensorFlow's oneDNN ops on or off
# (TF_ENABLE_ONEDNN_OPTS) under each cap of oneDNN's instruction set (ONEDNN_MAX_CPU_ISA),
# beside the pipeline's default (ops off, AVX2: stages/__init__.py), and what does each
# cost? Run from the repository root after one `dvc repro`:
#   bash benchmarks/cpu_isa.sh > isa.tsv
# Each configuration re-runs `train` and `evaluate` (`dvc repro -f -s`) with its environment
# set for the stage processes, then prints the md5 of models/best.keras, eval.json's
# accuracy and f1_macro, and the train stage's own time. The workspace is left as the
# last configuration leaves it: run `dvc repro -f -s train evaluate` afterwards.
set -euo pipefail
configs=(
  "pipeline default (oneDNN ops off, ISA <= AVX2):"
  "oneDNN ops off, no cap:ONEDNN_MAX_CPU_ISA=ALL"
  "oneDNN ops off, ISA <= AVX:ONEDNN_MAX_CPU_ISA=AVX"
  "oneDNN ops on, ISA <= AVX2:TF_ENABLE_ONEDNN_OPTS=1"
  "oneDNN ops on, no cap:TF_ENABLE_ONEDNN_OPTS=1 ONEDNN_MAX_CPU_ISA=ALL"
  "oneDNN ops on, ISA <= AVX:TF_ENABLE_ONEDNN_OPTS=1 ONEDNN_MAX_CPU_ISA=AVX"
  "oneDNN ops on, ISA <= SSE4.1:TF_ENABLE_ONEDNN_OPTS=1 ONEDNN_MAX_CPU_ISA=SSE41"
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
