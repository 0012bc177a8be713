#!/usr/bin/env bash
# The large recipe: a 102M-parameter Llama teacher trained here on the Python of the installed packages, its O-PTP
# drafter and independent baseline, a small draft model for transformers' assisted generation, and `ptp bench` with
# every method on held-out prompts (BENCHMARKS.md, "A teacher trained here").
#
#   corpus (site-packages Python) -> prompts (train / held-out split) -> teacher (`ptp train --objective ar`,
#   data-parallel over GPUS) -> draft model -> pregeneration -> both drafters (`ptp distill`) -> `ptp bench`
#
# Usage: bash recipes/large/run.sh WORK OUT
#   WORK: corpus, models, data, adapters and their runs; OUT: the benchmark summaries and training summaries.
#   A stage whose output exists is skipped and a stopped training resumes from its latest checkpoint: rerun the same
#   command after a kill.
# Settings (environment): GPUS (processes of the teacher's data-parallel run, default 1), DEV (cuda or cpu), SMALL=1
#   (tiny sizes: a smoke run on a CPU), TEACHER_STEPS (default 6000), DISTILL_STEPS (default 2000), PER_PROMPT
#   (completions per prompt, 4), BENCH_PROMPTS (6), SAMPLINGS ("greedy 0.7,50,0.95"), CORPUS_MB (60), PTP (the
#   command, default "python3 -m ptp.cli").
set -euo pipefail
work=${1:?usage: run.sh WORK OUT}; out=${2:?usage: run.sh WORK OUT}
here=$(cd "$(dirname "$0")" && pwd)
GPUS=${GPUS:-1} DEV=${DEV:-cuda} SMALL=${SMALL:-0}
ptp=${PTP:-python3 -m ptp.cli}
mkdir -p "$work" "$out"
step() { echo "[large $(date +%T)] $*"; }
resume() { compgen -G "$1.run/checkpoints/step-*" > /dev/null && echo --resume || true; }
device=(--device "$DEV")
parallel=($ptp)
if [ "$GPUS" -gt 1 ]; then
    parallel=(torchrun --nproc_per_node "$GPUS" -m ptp.cli)
fi

teacher_steps=${TEACHER_STEPS:-6000} distill_steps=${DISTILL_STEPS:-2000} per_prompt=${PER_PROMPT:-4}
prompt_count=1500 max_lines=15 new_tokens=160 pregen_batch=512 bench_prompts=${BENCH_PROMPTS:-6} bench_tokens=128
teacher_set=() draft_set=() distill_set=()
if [ "$SMALL" = 1 ]; then
    teacher_set=(--hidden-size 64 --num-layers 2 --num-heads 2 --num-kv-heads 1 --intermediate-size 128 --vocab-size 512
                 --row-length 128 --context 256 --batch-size 2 --warmup-steps 2 --precision float32)
    draft_set=(--row-length 128 --batch-size 2 --warmup-steps 2 --steps 4)
    distill_set=(--set row_length=128 --set windows_per_row=8 --set batch_size=2 --set warmup_steps=2 --set eval_rows=2
                 --set precision=float32)
    teacher_steps=6 distill_steps=4 prompt_count=12 max_lines=2 per_prompt=1 new_tokens=24 pregen_batch=12
    bench_prompts=1 bench_tokens=16
fi

step corpus and prompts
if [ ! -f "$work/bench_prompts.jsonl" ]; then
    python3 "$here/corpus.py" "$work/corpus" --max-mb "${CORPUS_MB:-60}"
    $ptp prompts --data "$work/corpus" --held-out-fraction 0.02 --split train --count "$prompt_count" \
        --max-lines "$max_lines" --out "$work/train_prompts.jsonl"
    $ptp prompts --data "$work/corpus" --held-out-fraction 0.02 --split held-out --count 64 --seed 1 \
        --max-lines "$max_lines" --out "$work/heldout_prompts.jsonl"
    head -n "$bench_prompts" "$work/heldout_prompts.jsonl" > "$work/bench_prompts.jsonl"
fi

step teacher
[ -f "$work/teacher/tokenizer.json" ] || "${parallel[@]}" train --objective ar --config "$here/teacher.json" \
    --data "$work/corpus" --steps "$teacher_steps" "${teacher_set[@]}" "${device[@]}" $(resume "$work/teacher") \
    --no-progress --out "$work/teacher"

step draft model
[ -f "$work/draft/tokenizer.json" ] || $ptp train --objective ar --config "$here/draft.json" --data "$work/corpus" \
    --tokenizer "$work/teacher" "${draft_set[@]}" "${device[@]}" $(resume "$work/draft") --no-progress \
    --out "$work/draft"

step pregenerate
$ptp pregenerate --model "$work/teacher" --prompts "$work/train_prompts.jsonl" --out "$work/pregen" \
    --n-per-prompt "$per_prompt" --max-new-tokens "$new_tokens" --batch-size "$pregen_batch" --temperature 0.7 \
    --top-k 50 --top-p 0.95 --prompts-per-shard 256 --seed 0 --skip-long-prompts "${device[@]}" --no-progress

step distill
for mode in one_hot independent; do
    [ -f "$work/$mode/adapter_config.json" ] || $ptp distill --model "$work/teacher" --data "$work/pregen" \
        --config "$here/distill.json" --mode "$mode" --max-steps "$distill_steps" "${distill_set[@]}" "${device[@]}" \
        $(resume "$work/$mode") --no-progress --out "$work/$mode"
done

step bench
for sampling in ${SAMPLINGS:-greedy 0.7,50,0.95}; do
    name=bench-${sampling//,/_}
    $ptp bench --model "$work/teacher" --adapter "$work/one_hot" --independent-adapter "$work/independent" \
        --draft-model "$work/draft" --prompts "$work/bench_prompts.jsonl" --max-new-tokens "$bench_tokens" \
        --sampling "$sampling" --repeats 1 --warmup 1 --dtype float32 "${device[@]}" $([ -f "$work/$name/settings.json" ] && echo --resume) --no-progress \
        --out "$work/$name" | tail -n 1 > "$out/$name.json"
done
for name in teacher draft; do cp "$work/$name/training_summary.json" "$out/${name}_training.json"; done
step done
