"""The scaling study of separate drafters (METHOD.md section 3): drafters of four sizes, each a Llama with the
teacher's vocabulary trained from scratch (all weights) on one teacher's bins, and their mean correct prefix.

    python recipes/scaling.py --teacher DIR --data DIR --out DIR     # GPU: a teacher and its `ptp pregenerate` data
    python recipes/scaling.py --small --out DIR                      # a seconds-long CPU smoke run of the same path

``--sizes 64x2,128x2`` trains only those drafters (hidden x layers); several such processes may share one ``--out``
(each drafter's result is its own ``drafter-HxL.json`` there, and each process plots every result found).

``--small`` builds everything itself: a tiny teacher trained on the word language of
:mod:`ptp.data.synthetic`, its completions, and four tiny drafters. Each drafter is distilled through
``ptp.train.distill`` (the same trainer as ``ptp distill --drafter-model ... --train-drafter-base``), then decodes
a few prompts next to the teacher, which must return exactly the teacher's plain sampling. Writes ``scaling.json``
and ``scaling.png`` (mean correct prefix against drafter parameters) to ``--out``; the JSON is also the last line
printed.
"""

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

import ptp
from ptp.data import Document, PregenerateConfig, load_dataset, pack_documents, pregenerate
from ptp.data.synthetic import WordLanguage
from ptp.decode import engine
from ptp.train import DistillConfig, distill, train_autoregressive

#: (hidden size, layers) of the four drafters; the GPU sizes span ~1M to ~110M parameters at a 32k vocabulary.
SIZES = {"small": [(8, 1), (16, 1), (32, 1), (64, 2)], "gpu": [(64, 2), (192, 4), (384, 6), (768, 12)]}
SMALL_RUN = dict(window_length=8, embedding="thermometer", embedding_size=32, lora_rank=8, windows_per_row=32,
                 batch_size=8, max_steps=150, learning_rate=3e-3, min_lr_ratio=1.0, warmup_steps=5,
                 row_length=128, eval_fraction=0.1, device="cpu")  # fmt: skip
GPU_RUN = dict(window_length=16, embedding="binary", lora_rank=32, windows_per_row=64, batch_size=16, max_steps=4000,
               learning_rate=1e-3, row_length=1024, device="cuda", precision="bf16")  # fmt: skip


def drafter_model(vocab_size: int, hidden: int, layers: int, context: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    heads = max(2, hidden // 32)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 8 // 3,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                         max_position_embeddings=context, tie_word_embeddings=True)  # fmt: skip
    return LlamaForCausalLM(config)


def small_teacher(out: Path):
    """A tiny Llama trained on the word language, and its completions."""
    language = WordLanguage(num_words=4, word_length=4)
    teacher = drafter_model(language.vocab_size, 64, 2, 256, seed=0)
    corpus = [Document(torch.tensor(d), 1, i) for i, d in enumerate(language.sample(512, 12, seed=1))]
    train_autoregressive(teacher, pack_documents(corpus, 128)[0], steps=200, batch_size=8, learning_rate=1e-2)
    prompts = [d[: 1 + language.word_length] for d in language.sample(128, 1, seed=2)]
    sampling = ptp.SamplingConfig(temperature=1.0)
    config = PregenerateConfig(n_per_prompt=4, max_new_tokens=100, sampling=sampling, batch_size=128, eos_token_id=[])
    data = pregenerate(teacher, prompts, out / "data", config, progress=False)
    return teacher.eval(), data, [d[: 1 + language.word_length] for d in language.sample(8, 1, seed=3)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="CPU smoke run on the word language")
    parser.add_argument("--teacher", help="teacher model directory (GPU run)")
    parser.add_argument("--data", help="its `ptp pregenerate` data directory (GPU run)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, help="distillation steps per drafter")
    parser.add_argument("--max-time", type=float, help="seconds of training per drafter at most")
    parser.add_argument("--sizes", help="drafters to train, e.g. 64x2,192x4 (default: the run's four)")
    parser.add_argument("--device", default="cuda", help="device of the run without --small (bf16 on CUDA)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.small:
        torch.set_num_threads(1)  # tiny models: more threads only spin
        teacher, data, prompts = small_teacher(out)
        run = dict(SMALL_RUN)
    else:
        if not (args.teacher and args.data):
            parser.error("--teacher and --data are needed without --small")
        cuda = args.device == "cuda"
        dtype = torch.bfloat16 if cuda else torch.float32
        teacher = AutoModelForCausalLM.from_pretrained(args.teacher, dtype=dtype).to(args.device).eval()
        data = Path(args.data)
        prompts = [d.tokens[: d.prompt_length].tolist() for d in load_dataset(data).documents[:8]]
        run = dict(GPU_RUN, device=args.device, precision="bf16" if cuda else "float32")
    run["max_steps"] = args.steps or run["max_steps"]
    run["max_time"] = args.max_time
    sizes = SIZES["small" if args.small else "gpu"]
    if args.sizes:
        sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes.split(",")]
    vocab = teacher.get_output_embeddings().weight.shape[0]
    context = teacher.config.max_position_embeddings
    run["row_length"] = min(run["row_length"], context)

    for hidden, layers in sizes:
        name = f"drafter-{hidden}x{layers}"
        small = drafter_model(vocab, hidden, layers, context, seed=1)
        started = time.perf_counter()
        config = DistillConfig(data=str(data), out=str(out / name), mode="one_hot", drafter_model=name,
                               train_drafter_base=True, eval_interval=0, checkpoint_interval=0, progress=False,
                               **run)  # fmt: skip
        result = distill(config, base_model=teacher, drafter_model=small)
        drafter = result.model.eval()
        exact, tau = decode_check(teacher, drafter, prompts)
        record = {
            "drafter": name,
            "parameters": sum(p.numel() for p in small.parameters()),
            "steps": result.steps,
            "correct_prefix": result.evaluation["correct_prefix"],
            "accuracy": result.evaluation["accuracy"],
            "tokens_per_call": tau,
            "exact": exact,
            "seconds": time.perf_counter() - started,
        }  # fmt: skip
        (out / f"{name}.json").write_text(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)
    results = sorted((json.loads(p.read_text()) for p in out.glob("drafter-*.json")), key=lambda r: r["parameters"])
    plot(results, run["window_length"], out / "scaling.png")
    summary = {"window_length": run["window_length"], "max_steps": run["max_steps"], "drafters": results}
    (out / "scaling.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))


def decode_check(teacher, drafter, prompts: list[list[int]]) -> tuple[bool, float]:
    """Decode the prompts with the drafter next to the teacher: (equal to plain sampling, tokens per call).

    Both run in float32 copies: equality is a float32 property (in bf16, batch shapes round differently and a u
    near a bin edge flips somewhere over a few hundred sampled tokens).
    """
    teacher, drafter = copy.deepcopy(teacher).float(), copy.deepcopy(drafter).float()
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=teacher.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=teacher.device)
    u = torch.rand(len(prompts), 64, generator=torch.Generator().manual_seed(0))
    sampling = drafter.config.sampling
    got = engine.generate(teacher, ids, mask, drafter=drafter, max_new_tokens=64, auxiliaries=u, sampling=sampling,
                          eos_token_id=[])  # fmt: skip
    expected = ptp.sample_autoregressive(teacher, ids, mask, auxiliaries=u, max_new_tokens=64, eos_token_id=[],
                                         **sampling.to_dict())  # fmt: skip
    return bool(torch.equal(got.sequences, expected.sequences)), got.tokens_per_call


def plot(results: list[dict], window_length: int, path: Path) -> None:
    fig = Figure(figsize=(5, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.plot([r["parameters"] for r in results], [r["correct_prefix"] for r in results], "o-")
    ax.set_xscale("log")
    ax.set_ylim(0, window_length)
    ax.set_xlabel("drafter parameters")
    ax.set_ylabel(f"mean correct prefix (of {window_length})")
    ax.set_title("separate O-PTP drafters distilled from one teacher", fontsize=9)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
