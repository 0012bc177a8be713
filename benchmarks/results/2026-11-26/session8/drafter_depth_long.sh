#!/usr/bin/env bash
# One GPU (session 8): the doubled-depth separate drafters of drafter_depth.sh again, O-PTP and independent only, with
# the GPU shared two ways instead of three (more steps): does O-PTP pull away from its independent twin with training?
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1; OUT=${OUT:?}; W=/tmp/depth; P=recipes/default/heldout_prompts.jsonl
nvidia-smi -L; python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"
PROMPTS=site TOTAL=${TOTAL:-480} RATE=${RATE:-2.8} VARIANTS="one_hot:0.7:1::deep2 independent:0.7:1::deep2" \
    bash recipes/default/drafters_v2.sh $W $OUT
for name in one_hot independent; do
    timeout 60 python3 -m ptp.cli bench --drafter-adapter $W/${name}_g0.7_t1_deep2 --methods ar,drafter --prompts $P \
        --max-questions 16 --max-new-tokens 256 --sampling 0.7,50,0.95 --repeats 1 --warmup 1 --device cuda \
        --dtype float32 --no-progress --out $W/bench_$name > $W/bench_$name.log 2>&1
    sed -n 8,9p $W/bench_$name/summary.md
done
tar -C $W -cf $OUT/bench.tar $(cd $W && ls -d bench_*); ls -la $OUT
