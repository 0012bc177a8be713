cd /work/main; source /work/venv/bin/activate; W=/tmp/tinyreal; export OMP_NUM_THREADS=2
python -m ptp.cli train --objective ar --data stdlib --vocab-size 1024 --hidden-size 96 --num-layers 2 --num-heads 2 --num-kv-heads 1 --intermediate-size 256 --row-length 256 --context 512 --batch-size 16 --steps 800 --learning-rate 3e-3 --warmup-steps 50 --device cpu --no-progress --out $W/teacher > $W/teacher.log 2>&1
python -m ptp.cli prompts --split train --count 600 --max-lines 10 --out $W/prompts.jsonl
python -m ptp.cli pregenerate --model $W/teacher --prompts $W/prompts.jsonl --out $W/pregen --n-per-prompt 4 --max-new-tokens 96 --temperature 0.7 --top-k 50 --top-p 0.95 --batch-size 256 --device cpu --skip-long-prompts > $W/pregen.log 2>&1
export OMP_NUM_THREADS=1
for m in one_hot independent; do
python -m ptp.cli distill --model $W/teacher --data $W/pregen --out $W/$m --mode $m --set embedding=thermometer --set embedding_size=32 --set window_length=8 --set lora_rank=16 --set lora_alpha=32 --set row_length=256 --set windows_per_row=32 --set batch_size=4 --set max_steps=${STEPS:-1500} --set learning_rate=3e-3 --set warmup_steps=50 --set eval_interval=250 --set checkpoint_interval=0 --set eval_rows=32 --set precision=float32 --device cpu --no-progress > $W/$m.log 2>&1 &
done
wait; echo done > $W/finished
