# 2-core CPU, float32, session 8 (2026-11-26). The shipped teacher and v1.2 adapters.
ptp pregenerate --model src/ptp/assets/default/teacher --prompts recipes/default/heldout_prompts.jsonl \
    --out .scratch/ceil/heldout_t07 --n-per-prompt 1 --max-new-tokens 128 --temperature 0.7 --top-k 50 --top-p 0.95 \
    --seed 5 --no-progress                                                     # 19 s
python recipes/default/mode_agreement.py .scratch/ceil/heldout_t07 > mode_agreement.txt   # 29 s
for a in adapter independent; do
  ptp evaluate --model src/ptp/assets/default/teacher --adapter src/ptp/assets/default/$a \
      --data .scratch/ceil/heldout_t07 --split all --device cpu --precision float32 --out eval_${a}_heldout_t07.json
done
# The same on 64 prompts cut from this machine's site-packages Python (text the teacher never saw):
python recipes/large/corpus.py .scratch/ceil_site/site --max-mb 60
ptp prompts --data .scratch/ceil_site/site --held-out-fraction 0 --split train --count 64 --max-lines 15 --seed 7 \
    --out .scratch/ceil_site/prompts.jsonl
ptp pregenerate --model src/ptp/assets/default/teacher --prompts .scratch/ceil_site/prompts.jsonl \
    --out .scratch/ceil_site/pregen --n-per-prompt 1 --max-new-tokens 128 --temperature 0.7 --top-k 50 --top-p 0.95 \
    --seed 5 --skip-long-prompts --no-progress
python recipes/default/mode_agreement.py .scratch/ceil_site/pregen > mode_agreement_site.txt
# then ptp evaluate as above on .scratch/ceil_site/pregen -> eval_{adapter,independent}_site_t07.json
