"""The decoding methods a benchmark compares, on one base model, and the checks that run before any timing.

=============== ===========================================================================================
``ar``          this project's engine without a drafter: one token per forward call (the speed baseline)
``ptp``         the engine with the trained PTP adapter (``--adapter``)
``independent`` the engine with the independent-baseline adapter (``--independent-adapter``, uninformative u)
``drafter``     the engine with a separate drafter (``--drafter-adapter``) next to the base model as the teacher
``hf``          plain ``transformers`` ``generate()`` on the unwrapped base model
``hf-static``   ``generate()`` on its fastest path: a static KV cache and the decoding forward compiled with
                ``torch.compile`` (the baseline to beat)
``hf-assisted`` ``transformers`` assisted generation with a small draft model (``--draft-model``)
``pld``         ``transformers`` prompt lookup decoding (``prompt_lookup_num_tokens``)
=============== ===========================================================================================

The engine methods draw the auxiliaries of a turn from the same seed, so ``ptp``, ``independent`` and ``drafter`` must
return exactly ``ar``'s tokens under any sampling configuration. The ``transformers`` methods draw from torch's global
generator (and assisted sampling is rejection sampling), so under sampling their text differs from ``ar``'s; under
greedy decoding every method must agree with ``ar``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, CompileConfig, GenerationConfig, PreTrainedModel

from ptp.decode.engine import generate
from ptp.decode.inputs import stop_tokens
from ptp.loading import load_model
from ptp.model.config import PTPConfig
from ptp.model.ptp import PTPModel
from ptp.sampling import SamplingConfig

METHODS = ("ar", "ptp", "independent", "drafter", "hf", "hf-static", "hf-assisted", "pld")
#: Methods run by this project's engine; with the same auxiliaries their output equals ``ar``'s.
ENGINE_METHODS = ("ar", "ptp", "independent", "drafter")
#: Methods whose main model proposes or verifies drafts (the others commit one token per call).
DRAFTING_METHODS = ("ptp", "independent", "drafter", "hf-assisted", "pld")


def parse_methods(methods: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Method names (a comma-separated string or a sequence) checked against :data:`METHODS`, duplicates dropped."""
    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else [m.strip() for m in methods]
    names = [m for m in names if m]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown benchmark methods {unknown}; choose from {', '.join(METHODS)}")
    if not names:
        raise ValueError(f"no benchmark method given; choose from {', '.join(METHODS)}")
    return tuple(dict.fromkeys(names))


def default_methods(
    adapter: str | None, independent_adapter: str | None, draft_model: str | None, drafter_adapter: str | None = None
) -> tuple[str, ...]:
    """Every method whose inputs were given: ar, hf, hf-static and pld always, the others when their path is set."""
    wanted = {
        "ptp": adapter,
        "independent": independent_adapter,
        "hf-assisted": draft_model,
        "drafter": drafter_adapter,
    }
    return tuple(m for m in METHODS if m not in wanted or wanted[m] is not None)


@dataclass
class TurnOutput:
    """What one method produced for one turn."""

    tokens: list[int]
    """The new token ids, cut after the first EOS (included)."""
    calls: int
    """Forward calls of the main model."""
    accept_lengths: list[int]
    """Tokens committed by each forward call of the main model (they sum to ``len(tokens)``)."""
    draft_accepts: list[int] = field(default_factory=list)
    """For each call that verified drafts: how many drafts it accepted (for accuracy per draft position)."""


class EngineRunner:
    """``ar``, ``ptp``, ``independent`` and ``drafter``: :func:`ptp.decode.engine.generate` on a :class:`PTPModel`
    (with ``drafter``: its base is the teacher and the separate drafter proposes)."""

    needs_untimed_run = False

    def __init__(
        self,
        model: PTPModel,
        use_drafter: bool,
        sampling: SamplingConfig,
        max_new_tokens: int,
        eos: list[int],
        pad: int | None,
        auxiliary_budget: int | None = None,
        max_draft_length: int | None = None,
        drafter: PTPModel | None = None,
        cuda_graph: bool = False,
        compile: bool = False,
    ):
        self.model, self.use_drafter, self.sampling, self.drafter = model, use_drafter, sampling, drafter
        self.max_new_tokens, self.eos, self.pad = max_new_tokens, eos, pad
        # ar takes the slot settings too: in 16 bits its calls are laid out as the drafting calls are
        self.options = {"cuda_graph": cuda_graph, "compile": compile, "auxiliary_budget": auxiliary_budget,
                        "max_draft_length": max_draft_length}  # fmt: skip

    def __call__(self, input_ids: list[int], seed: int, record: bool = False) -> TurnOutput:
        ids = torch.tensor([input_ids], dtype=torch.int64, device=self.model.device)
        out = generate(
            self.model,
            ids,
            max_new_tokens=self.max_new_tokens,
            sampling=self.sampling,
            seed=seed,
            eos_token_id=self.eos,
            pad_token_id=self.pad,
            use_drafter=self.use_drafter,
            drafter=self.drafter,
            **self.options,
        )
        accepts = list(out.accept_lengths[0])
        # The prefill call commits one token and verifies nothing.
        drafts = [n - 1 for n in accepts[1:]] if self.use_drafter else []
        return TurnOutput(out.rows()[0], out.num_calls, accepts, drafts)


class _CallRecorder:
    """A ``transformers`` streamer that notes how many tokens each main-model call committed."""

    def __init__(self) -> None:
        self.prompt_seen = False
        self.commits: list[int] = []

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first puts the prompt
            self.prompt_seen = True
            return
        self.commits.append(int(value.numel()))

    def end(self) -> None:
        pass


class HFRunner:
    """``hf``, ``hf-static``, ``hf-assisted`` and ``pld``: ``model.generate`` of ``transformers`` on the plain base
    model.

    Each turn of a runner with ``needs_untimed_run`` first runs once untimed (``record=True``). Per-call statistics of
    assisted and prompt-lookup decoding come from a recording streamer in that run, so that the timed runs carry no
    extra host transfers. ``hf-static`` compiles its forward again when a turn needs a longer cache than any before
    (``torch.compile`` then makes the length dynamic); that run keeps the compilation out of the timed ones.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        generation_config: GenerationConfig,
        eos: list[int],
        assistant: PreTrainedModel | None = None,
        drafts: bool = False,
    ):
        self.model, self.generation_config, self.eos = model, generation_config, set(eos)
        self.assistant, self.drafts = assistant, drafts
        self.needs_untimed_run = drafts or generation_config.compile_config is not None

    def __call__(self, input_ids: list[int], seed: int, record: bool = False) -> TurnOutput:
        ids = torch.tensor([input_ids], dtype=torch.int64, device=self.model.device)
        recorder = _CallRecorder() if record else None
        torch.manual_seed(seed)  # the sampling methods of transformers draw from the global generators
        extra = {"assistant_model": self.assistant} if self.assistant is not None else {}
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                generation_config=self.generation_config,
                streamer=recorder,
                **extra,
            )
        tokens = _cut_after_eos(out[0, ids.shape[1] :].tolist(), self.eos)
        if not self.drafts:
            return TurnOutput(tokens, len(tokens), [1] * len(tokens))
        if recorder is None:
            return TurnOutput(tokens, 0, [])
        accepts = _trim(recorder.commits, len(tokens))
        return TurnOutput(tokens, len(accepts), accepts, [n - 1 for n in accepts])


def _cut_after_eos(tokens: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[: i + 1]
    return tokens


def _trim(commits: list[int], total: int) -> list[int]:
    """Per-call commits cut so that they sum to ``total`` (assisted decoding may commit past an EOS)."""
    out, left = [], total
    for n in commits:
        if left <= 0:
            break
        out.append(min(n, left))
        left -= out[-1]
    return out


def hf_generation_config(
    sampling: SamplingConfig, max_new_tokens: int, eos: list[int], pad: int | None, **extra
) -> GenerationConfig:
    """A ``transformers`` generation config for ``sampling`` that overrides whatever the checkpoint sets.

    Unset top-k / top-p are spelled as ``transformers``' "off" values (0 and 1.0); otherwise the library would fill
    in its own defaults (top-k 50).
    """
    options = dict(
        max_new_tokens=max_new_tokens,
        min_length=0,
        num_beams=1,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        eos_token_id=list(eos),
        pad_token_id=pad,
        do_sample=sampling.do_sample,
    )
    if sampling.do_sample:
        options.update(
            temperature=sampling.temperature,
            top_k=0 if sampling.top_k is None else sampling.top_k,
            top_p=1.0 if sampling.top_p is None else sampling.top_p,
        )
    options.update({k: v for k, v in extra.items() if v is not None})
    return GenerationConfig(**options)


def static_compiled_options() -> dict:
    """The ``generate`` options of the fastest path ``transformers`` offers: a static KV cache, with which
    ``generate`` compiles the decoding forward (``torch.compile`` with its default :class:`CompileConfig`, CUDA
    graphs included on a GPU). The prefill runs eagerly; the first call, and the first one that needs a longer cache,
    pay for the compilation."""
    compile_config = CompileConfig()
    # transformers compiles only on accelerators unless a config asks for every device; on the CPU it still helps.
    compile_config._compile_all_devices = True
    return {"cache_implementation": "static", "compile_config": compile_config}


# ------------------------------------------------------------------------------------------------------ inputs
def check_inputs(
    methods: tuple[str, ...],
    model: str,
    adapter: str | None,
    independent_adapter: str | None,
    draft_model: str | None,
    drafter_adapter: str | None = None,
) -> None:
    """The cheap checks of paths and adapter kinds, before anything is loaded."""
    if not Path(model).exists():
        raise FileNotFoundError(f"--model {model} does not exist")
    needs = {
        "ptp": ("--adapter", adapter),
        "independent": ("--independent-adapter", independent_adapter),
        "hf-assisted": ("--draft-model", draft_model),
        "drafter": ("--drafter-adapter", drafter_adapter),
    }
    for method, (flag, path) in needs.items():
        if method not in methods:
            continue
        if path is None:
            raise ValueError(f"method {method!r} needs {flag}")
        if not Path(path).exists():
            raise FileNotFoundError(f"{flag} {path} does not exist")
    if "ptp" in methods:
        mode = PTPConfig.load(adapter).mode
        if mode == "independent":
            raise ValueError(
                f"--adapter {adapter} is an independent-baseline adapter; pass it as --independent-adapter"
            )
    if "independent" in methods:
        mode = PTPConfig.load(independent_adapter).mode
        if mode != "independent":
            raise ValueError(
                f"--independent-adapter {independent_adapter} was trained in mode {mode!r}, not 'independent'"
            )


def check_same_tokenizer(tokenizer, draft_tokenizer, draft_path: str) -> None:
    """Assisted generation compares token ids: the draft model must use the base model's vocabulary."""
    ours, theirs = tokenizer.get_vocab(), draft_tokenizer.get_vocab()
    if ours != theirs:
        differing = sorted(set(ours.items()) ^ set(theirs.items()))[:3]
        raise ValueError(
            f"--draft-model {draft_path} uses another tokenizer than the base model "
            f"({len(theirs)} vs {len(ours)} vocabulary entries; e.g. {differing}); "
            "assisted generation needs the same one"
        )


@dataclass
class BenchModels:
    """Everything the methods run on, loaded once before timing starts."""

    tokenizer: object
    engines: dict[str, PTPModel]
    """``ar``, ``ptp``, ``independent`` -> the PTPModel each runs on (``ar`` shares one of the others)."""
    base: PreTrainedModel | None
    """The plain base model for the ``transformers`` methods."""
    draft: PreTrainedModel | None
    eos: list[int]
    pad: int | None
    drafter: PTPModel | None = None
    """The separate drafter of ``drafter`` (its teacher is ``engines["drafter"]``'s base)."""


def load_models(
    methods: tuple[str, ...],
    model: str,
    adapter: str | None,
    independent_adapter: str | None,
    draft_model: str | None,
    device: str | torch.device,
    dtype: torch.dtype,
    drafter_adapter: str | None = None,
    drafter_model: str | None = None,
) -> BenchModels:
    """Load the tokenizer, the models the methods need, and check the draft model's vocabulary.

    Each adapter wraps its own copy of the base model (installing an adapter modifies the model in place), loaded by
    :func:`ptp.loading.load_model` as ``ptp.load`` loads it; the ``transformers`` methods get an unwrapped copy so
    that they pay no adapter overhead. ``drafter_model`` is the separate drafter's base (None: the adapter holds its
    own).
    """
    check_inputs(methods, model, adapter, independent_adapter, draft_model, drafter_adapter)
    tokenizer = AutoTokenizer.from_pretrained(model)
    draft_tokenizer = None
    if "hf-assisted" in methods:
        try:
            draft_tokenizer = AutoTokenizer.from_pretrained(draft_model)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"--draft-model {draft_model} has no loadable tokenizer to check against: {error}"
            ) from error
        check_same_tokenizer(tokenizer, draft_tokenizer, draft_model)

    def load(path: str) -> PreTrainedModel:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()

    def engine(adapter_path: str | None) -> PTPModel:
        return load_model(model, adapter_path, device=device, dtype=dtype)

    engines: dict[str, PTPModel] = {}
    if "ptp" in methods:
        engines["ptp"] = engine(adapter)
    if "independent" in methods:
        engines["independent"] = engine(independent_adapter)
    if "ar" in methods:
        # ar never runs the adapter (the teacher's positions have it switched off), so any wrapper serves.
        shared = engines.get("ptp") or engines.get("independent")
        engines["ar"] = shared if shared is not None else engine(None)
    drafter = None
    if "drafter" in methods:
        drafter = load_model(drafter_model, drafter_adapter, device=device, dtype=dtype)
        shared = engines.get("ar") or engines.get("ptp") or engines.get("independent")
        engines["drafter"] = shared if shared is not None else engine(None)
    base = load(model) if any(m in methods for m in ("hf", "hf-static", "hf-assisted", "pld")) else None
    draft = None
    if "hf-assisted" in methods:
        draft = load(draft_model)
        rows = (base.get_output_embeddings().weight.shape[0], draft.get_output_embeddings().weight.shape[0])
        if rows[0] != rows[1]:
            raise ValueError(
                f"--draft-model {draft_model} predicts {rows[1]} token ids but the base model {rows[0]}; "
                "assisted generation needs the same vocabulary"
            )
    eos, pad = stop_tokens(base or next(iter(engines.values())).base_model, tokenizer)
    return BenchModels(tokenizer, engines, base, draft, eos, pad, drafter)


def build_runners(
    models: BenchModels,
    methods: tuple[str, ...],
    sampling: SamplingConfig,
    max_new_tokens: int,
    auxiliary_budget: int | None = None,
    max_draft_length: int | None = None,
    prompt_lookup_num_tokens: int = 10,
    num_assistant_tokens: int | None = None,
    *,
    cuda_graph: bool = False,
    compile: bool = False,
) -> dict:
    """One callable per method: ``runner(input_ids, seed, record=False) -> TurnOutput``; ``cuda_graph``: the engine
    methods replay their step as a CUDA graph, ``compile``: they compile it (see :func:`ptp.decode.engine.generate`)."""
    runners = {}
    for method in methods:
        if method in ENGINE_METHODS:
            runners[method] = EngineRunner(
                models.engines[method],
                method != "ar",
                sampling,
                max_new_tokens,
                models.eos,
                models.pad,
                auxiliary_budget,
                max_draft_length,
                models.drafter if method == "drafter" else None,
                cuda_graph,
                compile,
            )
            continue
        extra = {}
        if method == "pld":
            extra["prompt_lookup_num_tokens"] = prompt_lookup_num_tokens
        if method == "hf-assisted":
            extra["num_assistant_tokens"] = num_assistant_tokens
        if method == "hf-static":
            extra |= static_compiled_options()
        config = hf_generation_config(sampling, max_new_tokens, models.eos, models.pad, **extra)
        assistant = models.draft if method == "hf-assisted" else None
        drafts = method in DRAFTING_METHODS
        runners[method] = HFRunner(models.base, config, models.eos, assistant, drafts)
    return runners
