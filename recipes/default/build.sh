#!/usr/bin/env bash
# Rebuilds the model shipped in src/ptp/assets/default: teacher, PTP adapter, independent-baseline adapter.
# Usage: bash recipes/default/build.sh WORK_DIR   (step 1 wants a GPU; the rest ran on a 2-core CPU)
set -euo pipefail
work=${1:?usage: build.sh WORK_DIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"

# 1. Teacher: a 12.6M-parameter Llama pretrained on the running interpreter's standard library (training split).
ptp train --objective ar --config "$here/teacher.json" --out "$work/teacher32"
python "$here/fp16.py" "$work/teacher32" "$work/teacher"          # shipped in float16; everything below uses it

# 2. Prompts cut at random line boundaries of the training split; the teacher's completions under S.
ptp prompts --split train --count 800 --max-lines 15 --out "$work/train_prompts.jsonl"
ptp pregenerate --model "$work/teacher" --prompts "$work/train_prompts.jsonl" --out "$work/pregen" \
    --n-per-prompt 2 --max-new-tokens 128 --temperature 0.7 --top-k 50 --top-p 0.95 --batch-size 64 \
    --prompts-per-shard 64 --seed 0 --dtype float32 --skip-long-prompts

# 3. The PTP drafter (O-PTP) and the independent baseline, same settings.
for mode in one_hot independent; do
    ptp distill --model "$work/teacher" --data "$work/pregen" --out "$work/$mode" --config "$here/distill.json" \
        --mode "$mode" --device cpu
done

# 4. Held-out evaluation: 256 new tokens after prompts cut from the held-out modules.
ptp prompts --split held-out --count 8 --seed 1 --max-lines 15 --out "$work/heldout_prompts.jsonl"
for sampling in 0.7,50,0.95 greedy; do
    ptp bench --model "$work/teacher" --adapter "$work/one_hot" --independent-adapter "$work/independent" \
        --prompts "$work/heldout_prompts.jsonl" --methods ar,ptp,independent --max-new-tokens 256 \
        --sampling "$sampling" --repeats 1 --device cpu --out "$work/eval-${sampling//,/_}"
done
