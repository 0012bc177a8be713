#!/usr/bin/env bash
# Issue #5, v2 drafters for the SHIPPED teacher in ONE call: fresh training-split prompts, pregeneration, O-PTP and
# independent drafters from scratch with first_slot_token, LoRA rank 64 and position weights 0.7^j (a CPU probe:
# with equal weights the far slots' loss pulls slot 1 from 0.61 at initialisation to 0.25), side by side in bf16;
# float16 copies come back (tau is measured on the CPU, float32). Usage: bash devrun/v2b.sh WORK OUT
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
work=${1:?}; out=${2:?}; total=${TOTAL:-525}; dev=${DEV:-cuda}; small=${SMALL:-0}
mkdir -p "$work/logs" "$out"; logs=$work/logs
t0=$(date +%s)
left() { echo $(( total - $(date +%s) + t0 )); }
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
ptp() { python3 -m ptp.cli "$@"; }
assets=src/ptp/assets/default; cfg=recipes/default/distill.json
count=6000; per_prompt=2; new_tokens=192; batch=16; pregen_batch=1024; rate=7; set_small=()
if [ "$small" = 1 ]; then
    count=16; per_prompt=1; new_tokens=24; batch=2; pregen_batch=32; rate=1
    set_small=(--set windows_per_row=8 --set eval_rows=2 --set row_length=256)
fi
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"; nvidia-smi -L 2>/dev/null
stamp "prompts and pregeneration"
ptp prompts --split train --count $count --max-lines 15 --seed 5 --out "$work/prompts.jsonl"
ptp pregenerate --model "$assets/teacher" --prompts "$work/prompts.jsonl" --out "$work/pregen" \
    --n-per-prompt $per_prompt --max-new-tokens $new_tokens --temperature 0.7 --top-k 50 --top-p 0.95 \
    --batch-size $pregen_batch --prompts-per-shard 512 --seed 5 --dtype float32 --skip-long-prompts --device "$dev" \
    > "$logs/pregen.log" 2>&1; tail -n 1 "$logs/pregen.log" | cut -c1-200
seconds=$(( $(left) - 25 )); steps=$(( rate * seconds / 40 * 40 )); [ "$steps" -lt 40 ] && steps=40
stamp "distill from scratch: $steps steps each, at most $seconds s"
for mode in one_hot independent; do
    ptp distill --model "$assets/teacher" --data "$work/pregen" --config "$cfg" --mode $mode \
        --set first_slot_token=true --set lora_rank=64 --set lora_alpha=128 --set position_decay=0.7 \
        --set batch_size=$batch --set precision=bf16 --set max_steps=$steps --set warmup_steps=50 \
        --set eval_interval=$(( steps / 4 )) --set checkpoint_interval=0 "${set_small[@]}" --max-time $seconds \
        --device "$dev" --no-progress --out "$work/$mode" > "$logs/distill_$mode.log" 2>&1 &
done
wait
for mode in one_hot independent; do grep '"split": "eval"' "$work/$mode.run/metrics.jsonl" | tail -n 1 | cut -c1-200; done
mkdir -p "$work/results/v2"
python3 recipes/default/fp16.py "$work/one_hot" "$work/results/v2/adapter"
python3 recipes/default/fp16.py "$work/independent" "$work/results/v2/independent"
cp -r "$logs" "$work/results/"
for mode in one_hot independent; do cp "$work/$mode.run/metrics.jsonl" "$work/results/metrics_$mode.jsonl"; done
tar -C "$work" -cf "$out/v2b_results.tar" results; ls -la "$out"; stamp done
