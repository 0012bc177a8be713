# 2-core CPU, float32, session 8 (2026-11-26). The shipped teacher and v1.2 adapters.
ptp pregenerate --model src/ptp/assets/default/teacher --prompts recipes/default/heldout_prompts.jsonl \
    --out .scratch/ceil/heldout_t07 --n-per-prompt 1 --max-new-tokens 128 --temperature 0.7 --top-k 50 --top-p 0.95 \
    --seed 5 --no-progress                                                     # 19 s
python recipes/default/mode_agreement.py .scratch/ceil/heldout_t07 > mode_agreement.txt   # 29 s
for a in adapter independent; do
  ptp evaluate --model src/ptp/assets/default/teacher --adapter src/ptp/assets/default/$a \
      --data .scratch/ceil/heldout_t07 --split all --device cpu --precision float32 --out eval_${a}_heldout_t07.json
done
