#!/usr/bin/env bash
# Candidate v2 drafters for the shipped teacher, in one GPU call of TOTAL seconds (default 540): fresh prompts,
# pregeneration under T 0.7 / 50 / 0.95, then O-PTP and independent drafters side by side on the one GPU, each with
# LoRA rank 64 and bf16. VARIANTS lists them as mode:gamma:token[:init[:drafter]] (position weights gamma^j,
# BENCHMARKS.md section 19; token 1 or 0: first_slot_token; init: an adapter to continue from, `shipped` for the
# shipped one of that mode; drafter: a separate drafter whose own weights all train at DRAFTER_LR (default 5e-4),
# `copy` for a copy of the teacher, `deepN` for the teacher with every layer repeated N times, the repeats starting as
# identities (deepen.py; BENCHMARKS.md section 21)). PROMPTS=stdlib (default) draws the prompts from the standard
# library's training split, which the teacher has memorised; PROMPTS=site from the Python files of the installed
# packages (recipes/large/corpus.py), text it has never seen, like the held-out split (BENCHMARKS.md section 20).
# BIN_ORDER=probability: the drafters learn the bins in descending probability (`bin_order`), not in vocabulary order.
# Float16 copies of the adapters and their metrics go to OUT as results.tar.part-*; tau is then measured with `ptp
# bench` on recipes/default/heldout_prompts.jsonl.
# Usage: bash recipes/default/drafters_v2.sh WORK OUT    TEACHER: the teacher (default: the shipped one); RATE:
# expected steps/s of each run (default 4, four runs sharing an H200); DEV=cpu SMALL=1: a smoke test on the CPU.
set -uo pipefail
work=${1:?usage: drafters_v2.sh WORK OUT}; out=${2:?}; total=${TOTAL:-540}; dev=${DEV:-cuda}; small=${SMALL:-0}
here=$(cd "$(dirname "$0")" && pwd); assets=$here/../../src/ptp/assets/default; teacher=${TEACHER:-$assets/teacher}
mkdir -p "$work/logs" "$out"; logs=$work/logs
t0=$(date +%s)
left() { echo $(( total - $(date +%s) + t0 )); }
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
ptp() { python3 -m ptp.cli "$@"; }
count=6000; per_prompt=2; new_tokens=192; batch=16; pregen_batch=1024; rate=${RATE:-4}; set_small=()
if [ "$small" = 1 ]; then
    count=16; per_prompt=1; new_tokens=24; batch=2; pregen_batch=32; rate=1
    set_small=(--set windows_per_row=8 --set eval_rows=2 --set row_length=256)
fi
stamp "prompts and pregeneration"
source=(); if [ "${PROMPTS:-stdlib}" = site ]; then
    python3 "$here/../large/corpus.py" "$work/site" --max-mb $([ "$small" = 1 ] && echo 2 || echo 60)
    source=(--data "$work/site" --held-out-fraction 0)
fi
ptp prompts "${source[@]}" --split train --count $count --max-lines 15 --seed 5 --out "$work/prompts.jsonl"
ptp pregenerate --model "$teacher" --prompts "$work/prompts.jsonl" --out "$work/pregen" \
    --n-per-prompt $per_prompt --max-new-tokens $new_tokens --temperature 0.7 --top-k 50 --top-p 0.95 \
    --batch-size $pregen_batch --prompts-per-shard 512 --seed 5 --dtype float32 --skip-long-prompts --device "$dev" \
    > "$logs/pregen.log" 2>&1; tail -n 1 "$logs/pregen.log" | cut -c1-200
seconds=$(( $(left) - 25 )); steps=$(awk -v r="$rate" -v s="$seconds" 'BEGIN { n = int(r * s / 40) * 40; print (n < 40 ? 40 : n) }')
stamp "distillation: $steps steps each, at most $seconds s"
for variant in ${VARIANTS:-one_hot:0.7:1 independent:0.7:1 one_hot:1.0:1 one_hot:0.7:0}; do
    IFS=: read -r mode gamma first start drafter <<< "$variant"
    name=${mode}_g${gamma}_t$first${start:+_init}${drafter:+_$drafter}
    token=$([ "$first" = 1 ] && echo true || echo false)
    [ "${start:-}" = shipped ] && start=$assets/$([ $mode = one_hot ] && echo adapter || echo independent)
    init=(); [ -n "${start:-}" ] && init=(--init-adapter "$start")
    separate=()
    if [ -n "${drafter:-}" ]; then
        model=$teacher
        if [ "$drafter" != copy ]; then
            model=$work/drafter_$drafter
            [ -d "$model" ] || python3 "$here/deepen.py" "$teacher" "$model" "${drafter#deep}" > /dev/null 2>&1
        fi
        separate=(--drafter-model "$model" --train-drafter-base --set learning_rate="${DRAFTER_LR:-5e-4}")
    fi
    ptp distill --model "$teacher" --data "$work/pregen" --config "$here/distill.json" --mode $mode \
        "${init[@]}" "${separate[@]}" --set first_slot_token=$token --set bin_order="${BIN_ORDER:-vocabulary}" \
        --set lora_rank=64 --set lora_alpha=128 \
        --set position_decay=$gamma --set batch_size=$batch --set precision=bf16 --set max_steps=$steps \
        --set warmup_steps=50 --set eval_interval=$(( steps / 4 )) --set checkpoint_interval=0 "${set_small[@]}" \
        --max-time $seconds --device "$dev" --no-progress --out "$work/$name" > "$logs/distill_$name.log" 2>&1 &
done
wait
mkdir -p "$work/results/adapters"
for run in "$work"/*_g*.run; do
    name=$(basename "$run" .run)
    echo "$name $(grep '"split": "eval"' "$run/metrics.jsonl" | tail -n 1 | cut -c1-160)"
    [ -d "$work/$name/base" ] || python3 "$here/fp16.py" "$work/$name" "$work/results/adapters/$name"  # separate drafters: too big to return
    cp "$run/metrics.jsonl" "$work/results/metrics_$name.jsonl"
done
cp -r "$logs" "$work/results/"
tar -C "$work" -cf "$work/results.tar" results && split -b 15M "$work/results.tar" "$out/results.tar.part-"
ls -la "$out"; stamp done
