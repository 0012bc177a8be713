#!/usr/bin/env bash
# Rebuilds the model shipped in src/ptp/assets/default: teacher, PTP adapter, independent-baseline adapter, and the
# small draft model that `ptp bench --methods hf-assisted` uses.
# Usage: bash recipes/default/build.sh WORK_DIR   (step 1 ran on an H100, step 2 on an H200, step 3 on a CPU)
set -euo pipefail
work=${1:?usage: build.sh WORK_DIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"

# 1. Teacher: a 12.6M-parameter Llama pretrained on the running interpreter's standard library (training split),
#    and a 1.4M-parameter draft model with the teacher's tokenizer for transformers' assisted generation.
ptp train --objective ar --config "$here/teacher.json" --out "$work/teacher32"
python "$here/fp16.py" "$work/teacher32" "$work/teacher"          # shipped in float16; everything below uses it
ptp train --objective ar --config "$here/draft.json" --tokenizer "$work/teacher" --out "$work/draft32"
python "$here/fp16.py" "$work/draft32" "$work/draft"

# 2. v1.2 drafters (shipped; BENCHMARKS.md section 20), each stage one call on one H200 (about 7 minutes):
#    a. O-PTP and the independent baseline from scratch on the teacher's completions of 6,000 training-split prompts
#       (the shipped ones ran beside two other variants, the default VARIANTS, and stopped at 1,207 of 1,320 steps);
#    b. both continued on completions of 6,000 prompts from installed packages' Python, text the teacher never saw
#       (it has memorised its training split, and drafters trained only there learn recall, not lookahead).
export TEACHER=$work/teacher
VARIANTS="one_hot:0.7:1 independent:0.7:1" TOTAL=440 bash "$here/drafters_v2.sh" "$work/v2" "$work/v2_out"
PROMPTS=site VARIANTS="one_hot:0.7:1:$work/v2/one_hot_g0.7_t1 independent:0.7:1:$work/v2/independent_g0.7_t1" \
    TOTAL=420 bash "$here/drafters_v2.sh" "$work/v3" "$work/v3_out"
cp -r "$work/v3/results/adapters/one_hot_g0.7_t1_init" "$work/adapter"  # float16 copies: shipped
cp -r "$work/v3/results/adapters/independent_g0.7_t1_init" "$work/independent"

# 3. Held-out evaluation: 256 new tokens after the first 16 prompts of heldout_prompts.jsonl, which is
#    `ptp prompts --split held-out --count 64 --seed 1 --max-lines 15 --final-newline` where the teacher was trained.
for sampling in 0.7,50,0.95 greedy; do
    ptp bench --model "$work/teacher" --adapter "$work/adapter" --independent-adapter "$work/independent" \
        --prompts "$here/heldout_prompts.jsonl" --max-questions 16 --methods ar,ptp,independent \
        --max-new-tokens 256 --sampling "$sampling" --repeats 1 --warmup 0 --device cpu --dtype float32 \
        --out "$work/eval-${sampling//,/_}"
done
