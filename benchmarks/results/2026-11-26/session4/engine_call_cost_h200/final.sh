#!/usr/bin/env bash
# One GPU: kernels per engine call of the default model (AR vs PTP, eager kernel time vs captured wall time), then the
# captured engine's per-call cost on random 1.1B and 7B Llama shapes (bf16) next to the weights' floor.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1; OUT=${OUT:?}; DEV=${DEV:-cuda}; t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
nvidia-smi -L 2>/dev/null
stamp "kernel profile"
timeout 150 python3 devrun/kernel_profile.py $OUT/kernels.json > $OUT/kernels.log 2>&1; grep -v Loading $OUT/kernels.log | head -45 | cut -c1-160
for p in ${PRESETS:-1.1b 7b}; do
  stamp "engine on $p"
  timeout ${PLIMIT:-150} python3 recipes/engine_profile.py --device $DEV --preset $p --dtype ${DT:-bfloat16} --no-profile --max-new-tokens ${NEW:-128} > $OUT/engine_$p.log 2>&1
  grep -v Loading $OUT/engine_$p.log | tail -8
done
stamp done
