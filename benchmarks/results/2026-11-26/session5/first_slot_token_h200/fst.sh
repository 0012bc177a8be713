#!/usr/bin/env bash
# Issue #5: does the first slot's token help? Both v1.1 drafters continue with first_slot_token switched on (one call,
# ~5 min on one H200), then ptp bench on 16 held-out-module prompts (greedy, T 0.7, float32).
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
work=${1:?}; out=${2:?}; total=${TOTAL:-300}; dev=${DEV:-cuda}; small=${SMALL:-0}
mkdir -p "$work/logs" "$out"; logs=$work/logs
t0=$(date +%s); left() { echo $(( total - $(date +%s) + t0 )); }; stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
ptp() { python3 -m ptp.cli "$@"; }
assets=src/ptp/assets/default; cfg=recipes/default/distill.json
count=2000; batch=16; bench_q=16; rate=7; bench_reserve=85; set_small=()
[ "$small" = 1 ] && { count=16; batch=2; bench_q=1; rate=1; bench_reserve=40; set_small=(--set windows_per_row=8 --set eval_rows=2 --set row_length=256); }
python3 recipes/large/corpus.py "$work/site" --max-mb 15
ptp prompts --split train --count $count --max-lines 15 --seed 4 --out "$work/p1.jsonl"
ptp prompts --data "$work/site" --held-out-fraction 0.02 --split train --count $count --max-lines 15 --seed 4 --out "$work/p2.jsonl"
cat "$work/p1.jsonl" "$work/p2.jsonl" | shuf --random-source=<(yes) > "$work/prompts.jsonl"
stamp pregeneration
ptp pregenerate --model "$assets/teacher" --prompts "$work/prompts.jsonl" --out "$work/pregen" --n-per-prompt 2 \
    --max-new-tokens 192 --temperature 0.7 --top-k 50 --top-p 0.95 --batch-size 1024 --prompts-per-shard 512 --seed 4 \
    --dtype float32 --skip-long-prompts --device "$dev" > "$logs/pregen.log" 2>&1
seconds=$(( $(left) - bench_reserve - 20 )); steps=$(( rate * seconds / 20 * 20 ))
stamp "distill with first_slot_token: $steps steps each, at most $seconds s"
for mode in one_hot independent; do
    init=$assets/adapter; [ $mode = independent ] && init=$assets/independent
    ptp distill --model "$assets/teacher" --data "$work/pregen" --config "$cfg" --mode $mode --init-adapter "$init" \
        --set first_slot_token=true --set batch_size=$batch --set precision=bf16 --set max_steps=$steps \
        --set warmup_steps=50 --set eval_interval=0 --set checkpoint_interval=0 "${set_small[@]}" --max-time $seconds \
        --device "$dev" --no-progress --out "$work/$mode" > "$logs/distill_$mode.log" 2>&1 &
done
wait
for mode in one_hot independent; do grep '"split": "eval"' "$work/$mode.run/metrics.jsonl" | tail -n 1 | cut -c1-150; done
for sampling in greedy 0.7,50,0.95; do
    timeout $(( $(left) / 2 + 5 )) python3 -m ptp.cli bench --model "$assets/teacher" --adapter "$work/one_hot" \
        --independent-adapter "$work/independent" --prompts recipes/default/heldout_prompts.jsonl --max-questions $bench_q \
        --methods ar,ptp,independent --max-new-tokens 256 --sampling $sampling --repeats 1 --warmup 1 --device "$dev" \
        --dtype float32 --no-progress --out "$work/bench_${sampling//,/_}" > "$logs/bench_${sampling//,/_}.log" 2>&1
    stamp "$sampling"; sed -n 7,10p "$work/bench_${sampling//,/_}/summary.md"
done
mkdir -p "$work/results" && cp -r "$logs" "$work"/bench_* "$work/results/"
for mode in one_hot independent; do cp "$work/$mode.run/metrics.jsonl" "$work/results/metrics_$mode.jsonl"; cp -r "$work/$mode" "$work/results/"; done
tar -C "$work" -cf "$out/fst_results.tar" results; ls -la "$out"; stamp done
