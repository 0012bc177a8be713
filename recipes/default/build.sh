#!/usr/bin/env bash
# Rebuilds the model shipped in src/ptp/assets/default: teacher, PTP adapter, independent-baseline adapter, and the
# small draft model that `ptp bench --methods hf-assisted` uses.
# Usage: bash recipes/default/build.sh WORK_DIR   (steps 1-3 ran on H100s: one for 1-2, two for 3; step 4 on a CPU)
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

# 2. Prompts cut at random line boundaries of the training split; the teacher's completions under S.
ptp prompts --split train --count 2000 --max-lines 15 --final-newline --out "$work/train_prompts.jsonl"
ptp pregenerate --model "$work/teacher" --prompts "$work/train_prompts.jsonl" --out "$work/pregen" \
    --n-per-prompt 4 --max-new-tokens 160 --temperature 0.7 --top-k 50 --top-p 0.95 --batch-size 1024 \
    --prompts-per-shard 256 --seed 0 --dtype float32 --skip-long-prompts

# 3. The PTP drafter (O-PTP) and the independent baseline, same settings, DDP over two GPUs (8 rows each).
for mode in one_hot independent; do
    accelerate launch --multi_gpu --num_processes 2 -m ptp.cli distill --model "$work/teacher" --data "$work/pregen" \
        --out "$work/$mode" --config "$here/distill.json" --mode "$mode"
done

# 3b. v1.1 (shipped): both drafters continue from v1 for 1,600 more steps of 8 rows on fresh completions of other
#     prompts, the two runs side by side on one GPU (an H200, 417 s; BENCHMARKS.md section 7).
ptp prompts --split train --count 3000 --max-lines 15 --seed 2 --final-newline --out "$work/train_prompts2.jsonl"
ptp pregenerate --model "$work/teacher" --prompts "$work/train_prompts2.jsonl" --out "$work/pregen2" \
    --n-per-prompt 4 --max-new-tokens 160 --temperature 0.7 --top-k 50 --top-p 0.95 --batch-size 1024 \
    --prompts-per-shard 256 --seed 1 --dtype float32 --skip-long-prompts
for mode in one_hot independent; do
    ptp distill --model "$work/teacher" --data "$work/pregen2" --config "$here/distill.json" --mode "$mode" \
        --init-adapter "$work/$mode" --set max_steps=1600 --set warmup_steps=50 --set eval_interval=400 \
        --set checkpoint_interval=400 --out "$work/${mode}_v1.1" &
done
wait

# 4. Held-out evaluation: 256 new tokens after the first 8 prompts of heldout_prompts.jsonl, which is
#    `ptp prompts --split held-out --count 64 --seed 1 --max-lines 15 --final-newline` where the teacher was trained.
head -8 "$here/heldout_prompts.jsonl" > "$work/heldout8.jsonl"
for sampling in 0.7,50,0.95 greedy; do
    ptp bench --model "$work/teacher" --adapter "$work/one_hot_v1.1" --independent-adapter "$work/independent_v1.1" \
        --prompts "$work/heldout8.jsonl" --methods ar,ptp,independent --max-new-tokens 256 \
        --sampling "$sampling" --repeats 1 --device cpu --out "$work/eval-${sampling//,/_}"
done
