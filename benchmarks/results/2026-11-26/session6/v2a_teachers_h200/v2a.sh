#!/usr/bin/env bash
# Issue #5, v2 of the default model, phase A in ONE call: GPU tests beside three teacher runs of different lengths on
# the shipped tokenizer (keep the lowest held-out loss: the shipped teacher saw its 2.66M-token split 12 times),
# pregeneration from it, O-PTP and independent drafters from scratch with first_slot_token and LoRA rank 64 (bf16,
# 16 rows), float16 copies, bench on held-out modules (float32). Usage: bash devrun/v2a.sh WORK OUT
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
work=${1:?}; out=${2:?}; total=${TOTAL:-570}; dev=${DEV:-cuda}; small=${SMALL:-0}
mkdir -p "$work/logs" "$out"; logs=$work/logs
t0=$(date +%s)
left() { echo $(( total - $(date +%s) + t0 )); }
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
ptp() { python3 -m ptp.cli "$@"; }
assets=src/ptp/assets/default; cfg=recipes/default/distill.json
teacher_steps="250 450 800"; count=8000; per_prompt=2; new_tokens=192; batch=16; bench_q=16; pregen_batch=1024
rate=7; bench_reserve=110; set_small=(); teacher_small=()
if [ "$small" = 1 ]; then
    teacher_steps="3 5"; count=16; per_prompt=1; new_tokens=24; batch=2; bench_q=1; pregen_batch=32; rate=1
    bench_reserve=60; set_small=(--set windows_per_row=8 --set eval_rows=2 --set row_length=256)
    teacher_small=(--batch-size 2 --row-length 128 --warmup-steps 1 --hidden-size 64 --num-layers 2 --num-heads 2
                   --num-kv-heads 1 --intermediate-size 128)
fi
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"; nvidia-smi -L 2>/dev/null
if [ "$dev" = cuda ]; then
    stamp "gpu tests (beside the teachers)"
    timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ > "$out/gpu_tests.log" 2>&1 &
fi
stamp "teachers: $teacher_steps steps"
for s in $teacher_steps; do
    ptp train --objective ar --config recipes/default/teacher.json --tokenizer "$assets/teacher" --steps "$s" \
        "${teacher_small[@]}" --device "$dev" --no-progress --out "$work/teacher_$s" > "$logs/teacher_$s.log" 2>&1 &
done
wait
tail -n 3 "$out/gpu_tests.log" 2>/dev/null
best=$(python3 - "$work" $teacher_steps <<'PY'
import json, sys
work, steps = sys.argv[1], sys.argv[2:]
losses = {s: json.load(open(f"{work}/teacher_{s}/training_summary.json"))["held_out_loss"] for s in steps}
print(" ".join(f"{s}:{l:.3f}" for s, l in losses.items()), file=sys.stderr)
print(min(losses, key=losses.get))
PY
)
stamp "best teacher: $best steps"
python3 recipes/default/fp16.py "$work/teacher_$best" "$work/teacher"
cp "$work/teacher_$best/training_summary.json" "$work/teacher/"
stamp "prompts and pregeneration"
ptp prompts --split train --count $count --max-lines 15 --seed 4 --out "$work/prompts.jsonl"
ptp pregenerate --model "$work/teacher" --prompts "$work/prompts.jsonl" --out "$work/pregen" \
    --n-per-prompt $per_prompt --max-new-tokens $new_tokens --temperature 0.7 --top-k 50 --top-p 0.95 \
    --batch-size $pregen_batch --prompts-per-shard 512 --seed 4 --dtype float32 --skip-long-prompts --device "$dev" \
    > "$logs/pregen.log" 2>&1; tail -n 1 "$logs/pregen.log" | cut -c1-200
seconds=$(( $(left) - bench_reserve - 30 )); steps=$(( rate * seconds / 40 * 40 )); [ "$steps" -lt 40 ] && steps=40
stamp "distill from scratch: $steps steps each, at most $seconds s"
for mode in one_hot independent; do
    ptp distill --model "$work/teacher" --data "$work/pregen" --config "$cfg" --mode $mode \
        --set first_slot_token=true --set lora_rank=64 --set lora_alpha=128 --set batch_size=$batch \
        --set precision=bf16 --set max_steps=$steps --set warmup_steps=100 --set eval_interval=$(( steps / 4 )) \
        --set checkpoint_interval=0 "${set_small[@]}" --max-time $seconds --device "$dev" --no-progress \
        --out "$work/$mode" > "$logs/distill_$mode.log" 2>&1 &
done
wait
for mode in one_hot independent; do grep '"split": "eval"' "$work/$mode.run/metrics.jsonl" | tail -n 1 | cut -c1-200; done
stamp "float16 copies and bench"
mkdir -p "$work/v2"
cp -r "$work/teacher" "$work/v2/teacher"
python3 recipes/default/fp16.py "$work/one_hot" "$work/v2/adapter"
python3 recipes/default/fp16.py "$work/independent" "$work/v2/independent"
for sampling in greedy 0.7,50,0.95; do
    timeout $(( $(left) / 2 )) python3 -m ptp.cli bench --model "$work/v2/teacher" --adapter "$work/v2/adapter" \
        --independent-adapter "$work/v2/independent" --prompts recipes/default/heldout_prompts.jsonl \
        --max-questions $bench_q --methods ar,ptp,independent --max-new-tokens 256 --sampling $sampling \
        --repeats 1 --warmup 1 --device "$dev" --dtype float32 --no-progress \
        --out "$work/bench_v2_${sampling//,/_}" > "$logs/bench_v2_${sampling//,/_}.log" 2>&1
    stamp "v2 $sampling"; sed -n 7,10p "$work/bench_v2_${sampling//,/_}/summary.md"
done
mkdir -p "$work/results"
cp -r "$logs" "$work/v2" "$work"/bench_* "$work/results/"
for s in $teacher_steps; do cp "$work/teacher_$s/training_summary.json" "$work/results/teacher_${s}_summary.json"; done
for mode in one_hot independent; do cp "$work/$mode.run/metrics.jsonl" "$work/results/metrics_$mode.jsonl"; done
tar -C "$work" -cf "$work/v2_results.tar" results && split -b 15M "$work/v2_results.tar" "$out/v2_results.tar.part-"
ls -la "$out"; stamp done
