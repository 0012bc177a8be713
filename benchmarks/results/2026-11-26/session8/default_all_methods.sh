#!/usr/bin/env bash
# One GPU (session 8): all GPU tests, eager vs captured per-call cost of the default model, then issue #6
# item 1 (the default model, every method, greedy and T 0.7, heldout8 x 256 tokens) and the engine methods eagerly.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1; OUT=${OUT:?}; DEV=${DEV:-cuda}; Q=${Q:-8}; NEW=${NEW:-256}
W=.scratch/gb8; mkdir -p $W; t0=$(date +%s); stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
nvidia-smi -L 2>/dev/null; python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"
head -n $Q recipes/default/heldout_prompts.jsonl > $W/heldout8.jsonl
stamp "gpu tests"
timeout 170 python3 -m pytest -q -m gpu -p no:cacheprovider tests > $OUT/gpu_tests.log 2>&1
tail -n 12 $OUT/gpu_tests.log | cut -c1-300
stamp "engine profile"
timeout 60 python3 recipes/engine_profile.py --device $DEV --max-new-tokens $NEW > $W/profile.log 2>&1; head -n 8 $W/profile.log | tee $OUT/profile.log
for s in greedy 0.7,50,0.95; do
  stamp "bench $s"
  timeout ${LIMIT:-150} python3 -m ptp.cli bench --prompts $W/heldout8.jsonl --max-new-tokens $NEW --sampling $s --repeats 1 \
      --warmup 1 --device $DEV --dtype float32 --no-progress --out $W/bench-${s//,/_} > $W/bench-${s//,/_}.log 2>&1
  tail -n 1 $W/bench-${s//,/_}.log | cut -c1-200
done
stamp "engine methods, eager (greedy)"
timeout ${LIMIT2:-80} python3 -m ptp.cli bench --prompts $W/heldout8.jsonl --max-new-tokens $NEW --sampling greedy --repeats 1 \
    --warmup 1 --device $DEV --dtype float32 --methods ar,ptp,independent --no-cuda-graph --no-progress \
    --out $W/bench-eager-greedy > $W/bench-eager.log 2>&1
tail -n 1 $W/bench-eager.log | cut -c1-200
tar -C $W -cf $OUT/bench.tar $(cd $W && ls -d bench-* *.log) && ls -la $OUT; stamp done
