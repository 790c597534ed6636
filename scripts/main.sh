#!/usr/bin/env bash
# The main job: install dependencies, build ftk, and LoRA fine-tune the bundled default model
# (stories260K) on the bundled dataset (tinystories-mia), with a greedy sample before and after.
#   scripts/main.sh [extra ftk sft flags]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
SHARED="${FTK_SHARED:-$(cd .. && pwd)/shared}"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" --target ftk
out="${FTK_OUT:-runs/stories260K-mia-lora}"
build/ftk sft \
  --model "$SHARED/models/stories260K/stories260K.bin" \
  --train-file "$SHARED/datasets/tinystories-mia/train.jsonl" \
  --eval-file "$SHARED/datasets/tinystories-mia/valid.jsonl" \
  --output-dir "$out" --overwrite-output-dir \
  --sample-prompt "Once upon a time, there was a little girl named" \
  "$@"
