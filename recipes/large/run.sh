#!/usr/bin/env bash
# Issue #6 item 2 and #7 in one device call on two GPUs (nvidia-h100-x2; or GPUS=1, or GPUS=4), within TOTAL seconds:
#   corpus (site-packages Python) -> 102M Llama teacher, DDP over all GPUs -> pregeneration (GPU 0) and a draft
#   model for hf-assisted (GPU 1) -> O-PTP and independent adapters (one GPU each) -> `ptp bench`, every method,
#   greedy and T 0.7 (GPU 0). Each training stage gets a share of the time left; its steps come from a short probe.
# Usage: bash recipes/large/run.sh WORK OUT [TOTAL]     OUT receives results.tar (adapters, logs, bench summaries).
# Stages whose output exists in WORK are skipped (the bench keeps its answers), so a rerun continues: PHASE=teacher
# trains the teacher alone (for the whole TOTAL; run it again to train further), then a run without PHASE does the
# rest. That needs WORK to survive between the calls; on the lent GPU machines it did not (2026-11-26: a warm machine
# started the next call without WORK), so there the recipe runs as one call.
# GPUS=1 runs it on one GPU (the teacher in one process, the two drafters side by side on it); GPUS=4 trains the
# teacher on four (the later stages use GPUs 0 and 1, as with two).
# Time after the teacher: RESERVE seconds (default 370); after the drafters: BENCH_SECONDS (default 200) for the
# bench of SAMPLINGS (default "greedy 0.7,50,0.95") on BENCH_PROMPTS prompts (default 6); PER_PROMPT completions per
# prompt (default 4).
# DEV=cpu runs a smoke test on CPU processes (gloo); SMALL=1 shrinks every size for it.
set -uo pipefail
work=${1:?usage: run.sh WORK OUT [TOTAL]}; out=${2:?}; total=${3:-560}
here=$(cd "$(dirname "$0")" && pwd)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export DEV=${DEV:-cuda} SMALL=${SMALL:-0} GPUS=${GPUS:-2}  # exported: the stages run under `timeout bash -c`, which must see them
PHASE=${PHASE:-all}
mkdir -p "$work" "$out"; logs=$work/logs; mkdir -p "$logs"
t0=$(date +%s)
left() { echo $(( total - $(date +%s) + t0 )); }
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
ptp() { python3 -m ptp.cli "$@"; }
on() {  # on GPU N (GPU N mod GPUS)
    local gpu=$(( $1 % GPUS )); shift
    if [ "$DEV" = cuda ]; then CUDA_VISIBLE_DEVICES=$gpu ptp "$@"; else ptp "$@" --device cpu; fi
}
all_gpus() {  # data-parallel over the GPUs (one process when GPUS=1)
    if [ "$GPUS" = 1 ]; then
        on 0 "$@"
    elif [ "$DEV" = cuda ]; then
        accelerate launch --multi_gpu --num_processes $GPUS --num_machines 1 --mixed_precision no --dynamo_backend no \
            -m ptp.cli "$@"
    else
        torchrun --nproc_per_node $GPUS -m ptp.cli "$@" --device cpu
    fi
}
# steps that fit SECONDS at the measured rate: rate_steps SUMMARY_JSON_OR_METRICS SECONDS TOKENS_PER_STEP
rate_steps() { python3 - "$@" <<'PY'
import json, sys
path, seconds, per_step = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
lines = [json.loads(l) for l in open(path) if l.startswith("{")]
rates = [r["tokens_per_second"] for r in lines if "tokens_per_second" in r]  # ptp train's summary
rates += [r["tokens_per_s"] for r in lines if r.get("split") == "train" and "tokens_per_s" in r][-1:]  # distill
print(max(20, int(rates[-1] * seconds / per_step) // 10 * 10))
PY
}
teacher_set=(); draft_set=(); distill_set=()
max_lines=15; prompt_count=1500; per_prompt=${PER_PROMPT:-4}; new_tokens=160; pregen_batch=512; draft_steps=600; bench_prompts=${BENCH_PROMPTS:-6}; bench_tokens=128
if [ "$SMALL" = 1 ]; then
    teacher_set=(--hidden-size 64 --num-layers 2 --num-heads 2 --num-kv-heads 1 --intermediate-size 128 --vocab-size 512
                 --row-length 128 --context 256 --batch-size 2 --warmup-steps 2 --precision float32)
    distill_set=(--set row_length=128 --set windows_per_row=8 --set batch_size=2 --set warmup_steps=2 --set eval_rows=2
                 --set precision=float32)
    draft_set=(--row-length 128 --batch-size 2 --warmup-steps 2)
    max_lines=2; prompt_count=12; per_prompt=1; new_tokens=24; pregen_batch=12; draft_steps=4; bench_prompts=1; bench_tokens=16
fi
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"
nvidia-smi -L 2>/dev/null

if [ ! -f "$work/bench_prompts.jsonl" ]; then
stamp "corpus"
python3 "$here/corpus.py" "$work/corpus" --max-mb "${CORPUS_MB:-60}"
ptp prompts --data "$work/corpus" --held-out-fraction 0.02 --split train --count "$prompt_count" --max-lines $max_lines \
    --out "$work/train_prompts.jsonl"
ptp prompts --data "$work/corpus" --held-out-fraction 0.02 --split held-out --count 64 --seed 1 --max-lines $max_lines \
    --out "$work/heldout_prompts.jsonl"
head -n "$bench_prompts" "$work/heldout_prompts.jsonl" > "$work/bench_prompts.jsonl"
fi

if [ ! -f "$work/probe/tokenizer.json" ]; then
stamp "teacher probe (BPE + 20 steps)"
all_gpus train --objective ar --config "$here/teacher.json" --data "$work/corpus" "${teacher_set[@]}" --steps 20 \
    --warmup-steps 2 --no-progress --out "$work/probe" > "$logs/teacher_probe.log" 2>&1
fi
if [ "$PHASE" = teacher ] || [ ! -f "$work/teacher/tokenizer.json" ]; then
    row=$(python3 -c "import json; c=json.load(open('$here/teacher.json')); print(c['batch_size']*c['row_length']*$GPUS)")
    [ "$SMALL" = 1 ] && row=512
    reserve=${RESERVE:-370}; [ "$PHASE" = teacher ] && reserve=40  # the later stages need about 370 s
    seconds=$(( $(left) - reserve )); [ "$SMALL" = 1 ] && seconds=10
    if [ ! -f "$work/teacher_steps" ]; then  # fixed at the first teacher call, so that resumed calls keep the schedule
        # The probe's rate includes start-up (on 2 x H200: 143k tokens/s measured, 421k in the run), so the steps
        # are over-estimated threefold; --max-time ends each call on time either way.
        echo $(( $(rate_steps "$logs/teacher_probe.log" "$seconds" "$row") * 3 )) > "$work/teacher_steps"
    fi
    steps=$(cat "$work/teacher_steps")
    resume=$(ls -d "$work"/teacher.run/checkpoints/step-* > /dev/null 2>&1 && echo --resume)
    stamp "teacher: $steps steps in all, this call at most $seconds s ${resume:+(resumed)}"
    timeout $(( seconds + 90 )) bash -c "$(declare -f ptp on all_gpus); all_gpus train --objective ar --config '$here/teacher.json' \
        --data '$work/corpus' --tokenizer '$work/probe' ${teacher_set[*]} --steps $steps --max-time $seconds \
        $resume --no-progress --out '$work/teacher'" >> "$logs/teacher.log" 2>&1
    tail -n 1 "$logs/teacher.log" | cut -c1-400
    last=$(ls -d "$work"/teacher.run/checkpoints/step-* 2>/dev/null | tail -n 1)
    if [ ! -f "$work/teacher/tokenizer.json" ] && [ -n "$last" ]; then  # stopped after its last checkpoint: use that
        stamp "the teacher run did not finish; its checkpoint $last becomes the teacher"
        mkdir -p "$work/teacher" && cp "$last"/adapter/* "$work/probe"/tokenizer* "$work/teacher/"
    fi
fi
if [ "$PHASE" = teacher ]; then
    mkdir -p "$work/results" && cp -r "$logs" "$work/results/"
    [ -f "$work/teacher/training_summary.json" ] && cp "$work/teacher/training_summary.json" "$work/results/teacher_training.json"
    tar -C "$work" -cf "$out/teacher_phase.tar" results && ls -la "$out"; stamp "teacher phase done"; exit 0
fi

stamp "pregeneration (GPU 0) and draft model (GPU 1)"
[ -f "$work/draft/tokenizer.json" ] || on 1 train --objective ar --config "$here/../default/draft.json" --data "$work/corpus" --tokenizer "$work/teacher" \
    --held-out-fraction 0.02 --steps "$draft_steps" --no-progress --out "$work/draft" "${draft_set[@]}" \
    > "$logs/draft.log" 2>&1 &
draft=$!
on 0 pregenerate --model "$work/teacher" --prompts "$work/train_prompts.jsonl" --out "$work/pregen" \
    --n-per-prompt "$per_prompt" --max-new-tokens "$new_tokens" --batch-size "$pregen_batch" \
    --temperature 0.7 --top-k 50 --top-p 0.95 --prompts-per-shard 256 --seed 0 --skip-long-prompts \
    > "$logs/pregen.log" 2>&1
wait $draft

if [ ! -f "$work/one_hot/adapter_config.json" ] || [ ! -f "$work/independent/adapter_config.json" ]; then
rm -rf "$work"/probe_one_hot* "$work"/probe_independent* "$work"/one_hot* "$work"/independent*  # a cut run restarts
stamp "distillation probes"
for mode in one_hot independent; do
    gpu=$([ $mode = one_hot ] && echo 0 || echo 1)
    on $gpu distill --model "$work/teacher" --data "$work/pregen" --config "$here/distill.json" --mode $mode \
        "${distill_set[@]}" --set max_steps=20 --set warmup_steps=2 --set log_interval=10 --set eval_interval=20 \
        --no-progress --out "$work/probe_$mode" > "$logs/probe_$mode.log" 2>&1 &
done
wait
seconds=$(( $(left) - ${BENCH_SECONDS:-200} )); [ "$SMALL" = 1 ] && seconds=10; [ "$seconds" -lt 30 ] && seconds=30
per_step=$(python3 -c "import json; c=json.load(open('$here/distill.json')); print(c['batch_size']*c['row_length'])")
[ "$SMALL" = 1 ] && per_step=256
steps=$(rate_steps "$work/probe_one_hot.run/metrics.jsonl" "$seconds" "$per_step")
stamp "distillation: $steps steps each in about $seconds s"
for mode in one_hot independent; do
    gpu=$([ $mode = one_hot ] && echo 0 || echo 1)
    timeout $(( seconds + 120 )) bash -c "$(declare -f ptp on); on $gpu distill --model '$work/teacher' \
        --data '$work/pregen' --config '$here/distill.json' --mode $mode ${distill_set[*]} --set max_steps=$steps \
        --max-time $seconds \
        --set eval_interval=$(( steps / 2 )) --set checkpoint_interval=$(( steps / 2 )) --no-progress \
        --out '$work/$mode'" > "$logs/distill_$mode.log" 2>&1 &
done
wait
fi

stamp "bench"
samplings=(${SAMPLINGS:-greedy 0.7,50,0.95}); remaining=${#samplings[@]}
for sampling in "${samplings[@]}"; do
    resume=$([ -f "$work/bench-${sampling//,/_}/settings.json" ] && echo --resume)  # keeps an earlier call's answers
    timeout $(( $(left) / remaining - 10 )) bash -c "$(declare -f ptp on); on 0 bench --model '$work/teacher' \
        --adapter '$work/one_hot' --independent-adapter '$work/independent' --draft-model '$work/draft' \
        --prompts '$work/bench_prompts.jsonl' --max-new-tokens $bench_tokens --sampling $sampling --repeats 1 \
        --warmup 1 --dtype float32 $resume --no-progress --out '$work/bench-${sampling//,/_}'" >> "$logs/bench_${sampling//,/_}.log" 2>&1
    tail -n 1 "$logs/bench_${sampling//,/_}.log" | cut -c1-300
    remaining=$(( remaining - 1 ))
done

stamp "packing results"
mkdir -p "$work/results"
cp -r "$logs" "$work/heldout_prompts.jsonl" "$work/results/"
for d in one_hot independent; do [ -d "$work/$d" ] && cp -r "$work/$d" "$work/results/" && cp "$work/$d.run/metrics.jsonl" "$work/results/logs/metrics_$d.jsonl"; done
for d in bench-greedy bench-0.7_50_0.95; do [ -d "$work/$d" ] && cp -r "$work/$d" "$work/results/"; done
for d in teacher draft; do [ -f "$work/$d/training_summary.json" ] && cp "$work/$d/training_summary.json" "$work/results/${d}_training.json"; done
tar -C "$work" -cf "$work/results.tar" results && split -b 15M "$work/results.tar" "$out/results.tar.part-"
ls -la "$out"; stamp done
