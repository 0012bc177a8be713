#!/usr/bin/env bash
# Issue #5, v1.2 of the default drafters in ONE call (files do not survive between calls): GPU tests, prompts
# (stdlib training split + site-packages), pregeneration, both drafters grown from v1.1 to LoRA rank 64 and trained
# side by side (steps from the rate measured this session: 7.0 steps/s each, batch 16, two sharing one H200),
# float16 copies, bench on 32 held-out-module prompts (greedy, T 0.7; float32). Usage: bash devrun/v12one.sh WORK OUT
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
work=${1:?}; out=${2:?}; total=${TOTAL:-575}; dev=${DEV:-cuda}; small=${SMALL:-0}
mkdir -p "$work/logs" "$out"; logs=$work/logs
t0=$(date +%s)
left() { echo $(( total - $(date +%s) + t0 )); }
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
ptp() { python3 -m ptp.cli "$@"; }
assets=src/ptp/assets/default; cfg=recipes/default/distill.json
count=4000; per_prompt=2; new_tokens=192; batch=16; bench_q=32; pregen_batch=1024; rate=7; bench_reserve=150
set_small=()
if [ "$small" = 1 ]; then
    count=16; per_prompt=1; new_tokens=24; batch=2; bench_q=1; pregen_batch=32; rate=1; bench_reserve=60
    set_small=(--set windows_per_row=8 --set eval_rows=2 --set row_length=256)
fi
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"; nvidia-smi -L 2>/dev/null
if [ "$dev" = cuda ]; then
    stamp "gpu tests"
    timeout 90 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ > "$out/gpu_tests.log" 2>&1; tail -n 3 "$out/gpu_tests.log"
fi
stamp "prompts"
python3 recipes/large/corpus.py "$work/site" --max-mb 30
ptp prompts --split train --count $count --max-lines 15 --seed 3 --out "$work/prompts_stdlib.jsonl"
ptp prompts --data "$work/site" --held-out-fraction 0.02 --split train --count $count --max-lines 15 --seed 3 \
    --out "$work/prompts_site.jsonl"
python3 - "$work" <<'PY'
import random, sys
work = sys.argv[1]
lines = open(f"{work}/prompts_stdlib.jsonl").readlines() + open(f"{work}/prompts_site.jsonl").readlines()
random.Random(3).shuffle(lines)
open(f"{work}/prompts.jsonl", "w").writelines(lines)
PY
stamp "pregeneration"
ptp pregenerate --model "$assets/teacher" --prompts "$work/prompts.jsonl" --out "$work/pregen" \
    --n-per-prompt $per_prompt --max-new-tokens $new_tokens --temperature 0.7 --top-k 50 --top-p 0.95 \
    --batch-size $pregen_batch --prompts-per-shard 512 --seed 3 --dtype float32 --skip-long-prompts --device "$dev" \
    > "$logs/pregen.log" 2>&1; tail -n 1 "$logs/pregen.log" | cut -c1-200
seconds=$(( $(left) - bench_reserve - 25 )); steps=$(( rate * seconds / 40 * 40 ))
stamp "distill: $steps steps each, at most $seconds s"
for mode in one_hot independent; do
    init=$assets/adapter; [ $mode = independent ] && init=$assets/independent
    ptp distill --model "$assets/teacher" --data "$work/pregen" --config "$cfg" --mode $mode --init-adapter "$init" \
        --set lora_rank=64 --set batch_size=$batch --set precision=bf16 --set max_steps=$steps --set warmup_steps=50 \
        --set eval_interval=$(( steps / 2 )) --set checkpoint_interval=0 "${set_small[@]}" \
        --max-time $seconds --device "$dev" --no-progress --out "$work/$mode" > "$logs/distill_$mode.log" 2>&1 &
done
wait
for mode in one_hot independent; do grep '"split": "eval"' "$work/$mode.run/metrics.jsonl" | tail -n 1 | cut -c1-160; done
stamp "float16 copies and bench"
mkdir -p "$work/v12"
python3 recipes/default/fp16.py "$work/one_hot" "$work/v12/adapter"
python3 recipes/default/fp16.py "$work/independent" "$work/v12/independent"
for sampling in greedy 0.7,50,0.95; do
    timeout $(( $(left) / 2 )) python3 -m ptp.cli bench --model "$assets/teacher" --adapter "$work/v12/adapter" \
        --independent-adapter "$work/v12/independent" --prompts recipes/default/heldout_prompts.jsonl \
        --max-questions $bench_q --methods ar,ptp,independent --max-new-tokens 256 --sampling $sampling \
        --repeats 1 --warmup 1 --device "$dev" --dtype float32 --no-progress \
        --out "$work/bench_v12_${sampling//,/_}" > "$logs/bench_v12_${sampling//,/_}.log" 2>&1
    stamp "v12 $sampling"; sed -n 7,10p "$work/bench_v12_${sampling//,/_}/summary.md"
done
mkdir -p "$work/results"
cp -r "$logs" "$work/v12" "$work"/bench_* "$work/results/"
for mode in one_hot independent; do cp "$work/$mode.run/metrics.jsonl" "$work/results/metrics_$mode.jsonl"; done
tar -C "$work" -cf "$work/v12_results.tar" results && split -b 15M "$work/v12_results.tar" "$out/v12_results.tar.part-"
ls -la "$out"; stamp done
