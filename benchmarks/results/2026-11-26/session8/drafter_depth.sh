#!/usr/bin/env bash
# One GPU (session 8): does a drafter with spare depth get closer to the ceilings of BENCHMARKS.md section 21, and
# does it then read u? Three drafters on the same fresh site-packages completions, same steps, side by side: the
# LoRA drafter of v1.2 (rank 64, from scratch), and a separate drafter = the teacher with every layer doubled
# (deepen.py, all 22M weights training), O-PTP and independent. Then tau on 16 held-out-module prompts x 256 tokens.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1; OUT=${OUT:?}; W=/tmp/depth; P=recipes/default/heldout_prompts.jsonl
nvidia-smi -L; python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"
PROMPTS=site TOTAL=${TOTAL:-440} RATE=${RATE:-2.2} VARIANTS="one_hot:0.7:1 one_hot:0.7:1::deep2 independent:0.7:1::deep2" \
    bash recipes/default/drafters_v2.sh $W $OUT
bench() {  # NAME METHODS ARGS...
    local name=$1 methods=$2; shift 2
    timeout 100 python3 -m ptp.cli bench "$@" --methods $methods --prompts $P --max-questions 16 --max-new-tokens 256 \
        --sampling 0.7,50,0.95 --repeats 1 --warmup 1 --device cuda --dtype float32 --no-progress \
        --out $W/bench_$name > $W/bench_$name.log 2>&1
    sed -n 6,12p $W/bench_$name/summary.md
}
bench optp ar,ptp,drafter --adapter $W/one_hot_g0.7_t1 --drafter-adapter $W/one_hot_g0.7_t1_deep2
bench indep ar,drafter --drafter-adapter $W/independent_g0.7_t1_deep2
tar -C $W -cf $OUT/bench.tar $(cd $W && ls -d bench_*); ls -la $OUT
