#!/usr/bin/env bash
# Session 5's last GPU call (~4 min): call costs of random 1.1B / 7B bf16 shapes with the slots-only LoRA (fbde173),
# then the default model's ar / ptp cost per call (8 held-out prompts, greedy, float32).
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1; OUT=${OUT:?}; t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
nvidia-smi -L; git log --oneline -1 2>/dev/null
for p in 7b 1.1b; do
  stamp "engine on $p"
  timeout 100 python3 recipes/engine_profile.py --device cuda --preset $p --no-profile --max-new-tokens 128 2>&1 | grep -v Loading | tee $OUT/engine_$p.log
done
stamp "default model, ar and ptp, greedy, 8 held-out prompts"
timeout 80 python3 -m ptp.cli bench --prompts recipes/default/heldout_prompts.jsonl --max-questions 8 --methods ar,ptp \
    --max-new-tokens 256 --sampling greedy --repeats 1 --warmup 1 --device cuda --dtype float32 --no-progress --out $OUT/bench > $OUT/bench.log 2>&1
sed -n 7,9p $OUT/bench/summary.md; stamp done
