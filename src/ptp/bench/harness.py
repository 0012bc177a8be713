"""``ptp bench``: every method on the same base model, prompts, sampling, precision and device, in one run.

The run has two phases. First everything that can fail is checked and loaded (method names, the prompt file, the
adapters, the draft model's vocabulary, prompt lengths); only then does timing start. Every method first runs a few
warm-up generations that do not count (the summary's ``warmup_s`` holds their seconds, for ``hf-static`` mostly
compilation); then, question by question, each method in turn runs every turn ``repeats`` times between device
synchronisations, and the median counts. Turn t of question i uses the seed ``seed + 1000 * i + t`` for every
method, so the engine methods share their auxiliaries.

Outputs in ``out``: ``answers/<method>.jsonl`` (Spec-Bench's answer format), ``summary.json``, ``summary.md`` and
the plots ``accept_histogram.png``, ``speedup_by_category.png``, ``draft_accuracy.png``.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from ptp.bench import plots
from ptp.bench.methods import (
    BenchModels,
    build_runners,
    default_methods,
    load_models,
    parse_methods,
)
from ptp.bench.prompts import Question, load_questions, render_turn
from ptp.bench.report import QuestionRecord, TurnRecord, answer_line, markdown, record_from_answer, summarize
from ptp.bench.timing import environment, median, timed
from ptp.decode.inputs import context_length
from ptp.runtime import cpu_threads, resolve_device, resolve_dtype
from ptp.sampling import SamplingConfig

#: The settings of the run that wrote ``out`` (a resumed run must match them).
SETTINGS = "settings.json"


@dataclass
class BenchConfig:
    """One benchmark run."""

    prompts: str
    """A Spec-Bench ``question.jsonl`` or a plain JSONL file of ``{"prompt": ...}`` lines."""
    out: str
    """Directory for the answers, the summary and the plots."""
    model: str | None = None
    """Base model directory (or anything ``AutoModelForCausalLM.from_pretrained`` loads); holds the tokenizer.
    None: the default model with its PTP and independent adapters (see :func:`with_default_model`)."""
    methods: tuple[str, ...] | str | None = None
    """Methods to run (see :mod:`ptp.bench.methods`); None: every method whose inputs are given."""
    adapter: str | None = None
    """The trained PTP adapter (method ``ptp``)."""
    independent_adapter: str | None = None
    """The independent-baseline adapter (method ``independent``)."""
    draft_model: str | None = None
    """The small draft model of ``hf-assisted``; must share the base model's tokenizer."""
    drafter_adapter: str | None = None
    """A separate drafter's adapter (method ``drafter``; the base model is its teacher)."""
    drafter_model: str | None = None
    """The separate drafter's base model; None: its adapter holds its own (``--train-drafter-base``)."""
    categories: tuple[str, ...] | None = None
    """Keep only these question categories; None: all."""
    max_questions: int | None = None
    """Run at most this many questions (after the category filter), spread evenly over the file."""
    max_new_tokens: int = 256
    """New tokens per turn at most."""
    sampling: SamplingConfig | dict | None = None
    """The sampling configuration; None: the PTP adapter's training configuration, or greedy without adapters; a dict
    of some of ``temperature``, ``top_k``, ``top_p``, ``do_sample``: those values in place of that configuration's
    (:meth:`ptp.SamplingConfig.from_values`). The order of its bins is the adapters' in any case."""
    repeats: int = 3
    """Timed generations per turn; the median counts."""
    warmup: int = 1
    """Untimed generations (of the first question's first turn) per method before its timing starts."""
    seed: int = 0
    """Base seed of the per-turn seeds."""
    device: str = "auto"
    """``cpu``, ``cuda`` (or ``cuda:N``); ``auto``: CUDA when available (the resolved device is what the run
    records)."""
    dtype: str = "auto"
    """``auto`` (bfloat16 on CUDA, float32 on the CPU), ``float32``, ``bfloat16`` or ``float16``."""
    auxiliary_budget: int | None = None
    """Auxiliary slots per call of the PTP engine (default: the engine's)."""
    max_draft_length: int | None = None
    """Longest draft group of the PTP engine (default: the adapter's window length)."""
    cuda_graph: bool = True
    """On CUDA, the engine methods replay their decoding step as a CUDA graph (False: launch it eagerly)."""
    compile: bool = False
    """The engine methods compile their decoding step with ``torch.compile`` (see :func:`ptp.decode.engine.generate`).
    A shape is compiled on its first call, in the warm-up or, for a prompt whose cache needs another capacity, inside
    a timed turn: time with ``repeats`` >= 3, whose median leaves that turn's compilation out."""
    prompt_lookup_num_tokens: int = 10
    """Draft length of prompt lookup decoding (``pld``)."""
    num_assistant_tokens: int | None = None
    """Draft length of ``hf-assisted`` (default: the draft model's generation config)."""
    chat_template: bool = True
    """Render Spec-Bench turns with the tokenizer's chat template when it has one."""
    progress: bool = True
    """Show a progress bar (on stderr)."""
    resume: bool = False
    """Keep the answers that an earlier run with the same settings left in ``out`` and run only the questions they
    lack (a killed run loses at most the question in progress); without it, ``out``'s answers are replaced."""
    threads: int | str | None = "auto"
    """CPU threads of torch while the methods run: a count; ``auto``: :func:`ptp.runtime.decoding_threads` of the
    model (one on a machine of few cores, where more threads make a decoding step slower); None: torch's setting."""

    def __post_init__(self) -> None:
        self.device = str(resolve_device(self.device))


@dataclass
class _Prepared:
    methods: tuple[str, ...]
    questions: list[Question]
    models: BenchModels
    sampling: SamplingConfig
    runners: dict


def with_default_model(config: BenchConfig) -> BenchConfig:
    """``config`` with the default model, and those of its two adapters that the package ships, filled in when no
    model is given (without shipped drafters the methods that need none run)."""
    if config.model is not None:
        return config
    from ptp.default_model import adapter_paths, teacher_dir

    shipped = {name: str(path) for name, path in adapter_paths().items() if (path / "ptp_config.json").is_file()}
    return replace(
        config,
        model=str(teacher_dir()),
        adapter=config.adapter or shipped.get("adapter"),
        independent_adapter=config.independent_adapter or shipped.get("independent"),
    )


def prepare(config: BenchConfig) -> _Prepared:
    """Every check and every load, in order of cost; raises before any timing starts."""
    config = with_default_model(config)
    if config.repeats < 1 or config.warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    if config.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {config.max_new_tokens}")
    if config.methods is None:
        methods = default_methods(
            config.adapter, config.independent_adapter, config.draft_model, config.drafter_adapter
        )
    else:
        methods = parse_methods(config.methods)
    questions = load_questions(config.prompts, config.categories, config.max_questions)
    dtype = resolve_dtype(config.dtype, config.device)
    models = load_models(
        methods, config.model, config.adapter, config.independent_adapter, config.draft_model, config.device, dtype,
        config.drafter_adapter, config.drafter_model,
    )  # fmt: skip
    trained = models.engines.get("ptp") or models.engines.get("independent") or models.drafter
    default = trained.config.sampling if trained is not None else SamplingConfig.greedy()
    sampling = config.sampling
    if isinstance(sampling, dict):
        sampling = SamplingConfig.from_values(**sampling, default=default)
    if sampling is None:
        sampling = default
    elif trained is not None:  # u picks tokens in the order of the bins that the drafters learned
        sampling = replace(sampling, order=trained.config.sampling.order)
    _check_lengths(models, questions, config)
    runners = build_runners(
        models,
        methods,
        sampling,
        config.max_new_tokens,
        config.auxiliary_budget,
        config.max_draft_length,
        config.prompt_lookup_num_tokens,
        config.num_assistant_tokens,
        cuda_graph=_captures(config),
        compile=config.compile,
    )
    return _Prepared(methods, questions, models, sampling, runners)


def _captures(config: BenchConfig) -> bool:
    """Whether the engine methods replay their step as a CUDA graph (only on a CUDA device)."""
    return config.cuda_graph and config.device.startswith("cuda")


def _base(models: BenchModels):
    """The base model of a run (every method decodes with it)."""
    return models.base if models.base is not None else next(iter(models.engines.values())).base_model


def _check_lengths(models: BenchModels, questions: list[Question], config: BenchConfig) -> None:
    model = _base(models)
    limit = context_length(model)
    if limit is None:
        return
    for q in questions:
        length = len(render_turn(models.tokenizer, q, [], config.chat_template))
        if length + config.max_new_tokens > limit:
            raise ValueError(
                f"question {q.question_id}: prompt ({length} tokens) + max_new_tokens ({config.max_new_tokens}) "
                f"exceeds the model's {limit} positions"
            )


def run_bench(config: BenchConfig) -> dict:
    """Run the benchmark and write its outputs; returns the summary (also written to ``out/summary.json``)."""
    config = with_default_model(config)
    prepared = prepare(config)
    out = Path(config.out)
    (out / "answers").mkdir(parents=True, exist_ok=True)
    settings = _settings(config, prepared)
    model_id = Path(config.model).name or str(config.model)
    records = _earlier_answers(out, settings, prepared) if config.resume else {m: [] for m in prepared.methods}
    (out / SETTINGS).write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
    done = len(records[prepared.methods[0]])
    first = render_turn(prepared.models.tokenizer, prepared.questions[0], [], config.chat_template)
    warmup = config.warmup if done < len(prepared.questions) else 0
    total = len(prepared.methods) * (warmup + len(prepared.questions) - done)
    with (
        ExitStack() as stack,
        cpu_threads(config.threads, _base(prepared.models)),
        tqdm(total=total, desc="ptp bench", unit="run", disable=not config.progress) as bar,
    ):
        machine = environment(config.device)  # with the thread count the methods run with
        answers = {
            m: stack.enter_context(open(out / "answers" / f"{m}.jsonl", "w", encoding="utf-8"))
            for m in prepared.methods
        }
        for method, kept in records.items():  # a resumed run's answers, without the lines of an unfinished question
            answers[method].writelines(json.dumps(answer_line(method, model_id, r)) + "\n" for r in kept)
            answers[method].flush()
        # Every method warms up before any is timed, and the methods then take turns question by question, so that
        # a drift of the machine (clocks ramping up, other load) spreads over all of them alike.
        warmup_s = {}
        for method in prepared.methods:
            bar.set_postfix_str(f"warm-up {method}")
            warmup_s[method] = 0.0
            for _ in range(warmup):
                warmup_s[method] += timed(lambda m=method: prepared.runners[m](first, config.seed), config.device)[1]
                bar.update(1)
        for index, question in enumerate(prepared.questions[done:], start=done):
            for method in prepared.methods:
                bar.set_postfix_str(method)
                record = _run_question(prepared.runners[method], question, index, prepared.models, config)
                records[method].append(record)
                answers[method].write(json.dumps(answer_line(method, model_id, record)) + "\n")
                answers[method].flush()
                bar.update(1)
    exact = resolve_dtype(config.dtype, config.device).itemsize >= 4
    summary = summarize(records, greedy=not prepared.sampling.do_sample, exact=exact)
    summary["warmup_s"] = warmup_s
    summary["environment"] = machine
    summary["config"] = settings
    summary["files"] = {
        "answers": {m: str(out / "answers" / f"{m}.jsonl") for m in prepared.methods},
        "summary_json": str(out / "summary.json"),
        "summary_md": str(out / "summary.md"),
        "accept_histogram": str(plots.accept_histograms(summary, out / "accept_histogram.png")),
        "speedup_by_category": str(plots.speedup_by_category(summary, out / "speedup_by_category.png")),
        "draft_accuracy": str(plots.draft_accuracy(summary, out / "draft_accuracy.png")),
    }
    (out / "summary.md").write_text(markdown(summary), encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _settings(config: BenchConfig, prepared: _Prepared) -> dict:
    """What decides a run's answers (the summary's ``config``; a resumed run must have the same)."""
    return {
        "model": str(config.model),
        "adapter": config.adapter,
        "independent_adapter": config.independent_adapter,
        "draft_model": config.draft_model,
        "drafter_adapter": config.drafter_adapter,
        "prompts": str(config.prompts),
        "questions": len(prepared.questions),
        "methods": list(prepared.methods),
        "sampling": prepared.sampling.describe(),
        "max_new_tokens": config.max_new_tokens,
        "repeats": config.repeats,
        "warmup": config.warmup,
        "seed": config.seed,
        "dtype": str(resolve_dtype(config.dtype, config.device)).removeprefix("torch."),
        "auxiliary_budget": config.auxiliary_budget,
        "max_draft_length": config.max_draft_length,
        "cuda_graph": _captures(config),
        "compile": config.compile,
        "prompt_lookup_num_tokens": config.prompt_lookup_num_tokens,
        "num_assistant_tokens": config.num_assistant_tokens,
        "device": config.device,
        "chat_template": config.chat_template,
    }


def _earlier_answers(out: Path, settings: dict, prepared: _Prepared) -> dict[str, list[QuestionRecord]]:
    """The records of the leading questions that every method answered in an earlier run into ``out``.

    ValueError if that run had other settings (its answers would not be comparable).
    """
    path = out / SETTINGS
    if not path.is_file():
        raise ValueError(f"nothing to resume: {out} holds no earlier run ({SETTINGS} is missing)")
    earlier = json.loads(path.read_text(encoding="utf-8"))
    differ = [f"{k}: {earlier.get(k)!r} then, {v!r} now" for k, v in settings.items() if earlier.get(k) != v]
    if differ:
        raise ValueError(f"{out} holds a run with other settings ({'; '.join(differ)}); use another --out")
    lines = {}
    for method in prepared.methods:
        file = out / "answers" / f"{method}.jsonl"
        text = file.read_text(encoding="utf-8").splitlines() if file.is_file() else []
        lines[method] = [json.loads(line) for line in text if line.strip()]
    done = 0
    for question in prepared.questions:
        if not all(done < len(v) and v[done]["question_id"] == question.question_id for v in lines.values()):
            break
        done += 1
    questions = prepared.questions[:done]
    return {m: [record_from_answer(line, q) for line, q in zip(v, questions, strict=False)] for m, v in lines.items()}


def _run_question(runner, question: Question, index: int, models: BenchModels, config: BenchConfig):
    """All turns of one question for one method; each turn's prompt holds the method's own earlier answers."""
    answers: list[str] = []
    turns: list[TurnRecord] = []
    for turn in range(len(question.turns)):
        ids = render_turn(models.tokenizer, question, answers, config.chat_template)
        seed = config.seed + 1000 * index + turn
        stats = runner(ids, seed, record=True) if runner.needs_untimed_run else None
        times, output = [], None
        for _ in range(config.repeats):
            result, seconds = timed(lambda ids=ids, seed=seed: runner(ids, seed), config.device)
            output = output or result
            times.append(seconds)
        stats = stats or output
        text = models.tokenizer.decode(output.tokens, skip_special_tokens=True)
        turns.append(
            TurnRecord(
                output.tokens, text, median(times), times, stats.calls, stats.accept_lengths, stats.draft_accepts
            )
        )
        answers.append(text)
    return QuestionRecord(question, turns)
