"""Benchmark results: per-turn records, Spec-Bench answer lines, and the summary (JSON and a markdown table).

Aggregates follow Spec-Bench: tokens/s of a method is all its new tokens over all its (median) wall time, and a
speedup is a ratio of tokens/s on the same prompts. tau is the mean number of tokens committed per forward call of
the main model (prefill included).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ptp.bench.methods import DRAFTING_METHODS, ENGINE_METHODS
from ptp.bench.prompts import Question

#: The methods every other one is compared with: the engine's one-token decoding, plain ``transformers`` and its
#: fastest path.
BASELINES = ("ar", "hf", "hf-static")


@dataclass
class TurnRecord:
    """One method on one turn."""

    tokens: list[int]
    text: str
    wall_time: float
    """Median wall time of the timed repeats, seconds."""
    wall_times: list[float]
    """Every timed repeat, seconds."""
    calls: int
    accept_lengths: list[int]
    draft_accepts: list[int] = field(default_factory=list)


@dataclass
class QuestionRecord:
    question: Question
    turns: list[TurnRecord]


def answer_line(method: str, model_id: str, record: QuestionRecord) -> dict:
    """One line of Spec-Bench's answer format (``choices[0]`` holds per-turn lists; extra keys are ignored by it)."""
    turns = record.turns
    return {
        "question_id": record.question.question_id,
        "category": record.question.category,
        "answer_id": f"{method}-{record.question.question_id}",
        "model_id": f"{model_id}-{method}",
        "method": method,
        "choices": [
            {
                "index": 0,
                "turns": [t.text for t in turns],
                "new_tokens": [len(t.tokens) for t in turns],
                "wall_time": [t.wall_time for t in turns],
                "decoding_steps": [t.calls for t in turns],
                "accept_lengths": [n for t in turns for n in t.accept_lengths],
                "wall_time_repeats": [t.wall_times for t in turns],
                "token_ids": [t.tokens for t in turns],
                "draft_accepts": [t.draft_accepts for t in turns],
            }
        ],
        "tstamp": time.time(),
    }


def record_from_answer(line: dict, question: Question) -> QuestionRecord:
    """The record that :func:`answer_line` wrote (how ``ptp bench --resume`` reads back a killed run's answers)."""
    choice = line["choices"][0]
    flat, turns = list(choice["accept_lengths"]), []
    for t, calls in enumerate(choice["decoding_steps"]):
        accepted, flat = flat[:calls], flat[calls:]
        turns.append(
            TurnRecord(
                choice["token_ids"][t], choice["turns"][t], choice["wall_time"][t], choice["wall_time_repeats"][t],
                calls, accepted, choice["draft_accepts"][t],
            )
        )  # fmt: skip
    return QuestionRecord(question, turns)


def _aggregate(turns: list[TurnRecord]) -> dict:
    tokens = sum(len(t.tokens) for t in turns)
    calls = sum(t.calls for t in turns)
    seconds = sum(t.wall_time for t in turns)
    return {
        "turns": len(turns),
        "new_tokens": tokens,
        "calls": calls,
        "wall_time": seconds,
        "tau": tokens / calls if calls else None,
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
        # What a call costs: speedup over ar = tau x (ar's ms per call / this method's).
        "ms_per_call": 1e3 * seconds / calls if calls else None,
    }


def accept_histogram(turns: list[TurnRecord]) -> list[int]:
    """Counts of main-model calls that committed n tokens, n = 0..longest."""
    lengths = [n for t in turns for n in t.accept_lengths]
    counts = [0] * (max(lengths, default=0) + 1)
    for n in lengths:
        counts[n] += 1
    return counts


def draft_acceptance(turns: list[TurnRecord]) -> dict | None:
    """Accuracy per draft position j = 1, 2, ... over the calls that verified drafts.

    ``at_least[j-1]``: fraction of those calls that accepted at least j drafts; ``conditional[j-1]``: fraction that
    accepted draft j among those that accepted drafts 1..j-1. A call that proposed fewer than j drafts counts as a
    rejection at j. None when the method verified no drafts.
    """
    accepted = [n for t in turns for n in t.draft_accepts]
    if not accepted:
        return None
    longest = max(accepted)
    reached = [sum(1 for n in accepted if n >= j) for j in range(longest + 2)]
    at_least = [reached[j] / len(accepted) for j in range(1, longest + 1)]
    conditional = [reached[j] / reached[j - 1] for j in range(1, longest + 1)]
    return {"calls": len(accepted), "at_least": at_least, "conditional": conditional}


def summarize(records: dict[str, list[QuestionRecord]], greedy: bool, exact: bool = True) -> dict:
    """Per method and category: tau, tokens/s, speedups over ``ar``, ``hf`` and ``hf-static`` (the key
    ``speedup_over_<baseline>``; None where the baseline did not run), and agreement with ``ar``.

    Args:
        records: method -> one record per question, in the same question order for every method.
        greedy: whether the sampling was greedy (then, in 32 bits, every method is expected to equal ``ar``).
        exact: whether the run computed in 32 bits or more. In 16 bits only ``ptp`` and ``independent`` are expected
            to equal ``ar``, whose calls are laid out as theirs; the other methods call the model in other shapes,
            which round otherwise.
    """
    categories = sorted({r.question.category for rows in records.values() for r in rows})
    methods: dict[str, dict] = {}
    for method, rows in records.items():
        turns = [t for r in rows for t in r.turns]
        entry = {"all": _aggregate(turns), "categories": {}}
        for category in categories:
            chosen = [t for r in rows if r.question.category == category for t in r.turns]
            entry["categories"][category] = _aggregate(chosen)
        laid_out_alike = method in ENGINE_METHODS and (exact or method != "drafter")
        entry["expected_to_match_ar"] = (greedy and exact) or laid_out_alike
        entry["accept_histogram"] = accept_histogram(turns)
        entry["draft_acceptance"] = draft_acceptance(turns) if method in DRAFTING_METHODS else None
        entry["ar_mismatches"] = mismatches(rows, records["ar"]) if "ar" in records else []
        methods[method] = entry
    for method, entry in methods.items():
        for scope, stats in [("all", entry["all"]), *entry["categories"].items()]:
            for baseline in BASELINES:
                stats[f"speedup_over_{baseline}"] = _speedup(methods, method, baseline, scope)
            stats.update(_agreement(records, method, scope))
    return {"sampling_greedy": greedy, "categories": categories, "methods": methods}


def _speedup(methods: dict, method: str, baseline: str, scope: str) -> float | None:
    if baseline not in methods:
        return None
    ours = methods[method]["all"] if scope == "all" else methods[method]["categories"][scope]
    theirs = methods[baseline]["all"] if scope == "all" else methods[baseline]["categories"][scope]
    if ours["tokens_per_s"] is None or not theirs["tokens_per_s"]:
        return None
    return ours["tokens_per_s"] / theirs["tokens_per_s"]


def _agreement(records: dict[str, list[QuestionRecord]], method: str, scope: str) -> dict:
    """Turns whose tokens equal ``ar``'s on the same question and turn."""
    if "ar" not in records:
        return {"matches_ar": None, "matching_turns": None, "compared_turns": None}
    same = compared = 0
    for ours, theirs in zip(records[method], records["ar"], strict=True):
        if scope != "all" and ours.question.category != scope:
            continue
        for a, b in zip(ours.turns, theirs.turns, strict=True):
            compared += 1
            same += a.tokens == b.tokens
    return {"matches_ar": same == compared, "matching_turns": same, "compared_turns": compared}


def mismatches(rows: list[QuestionRecord], ar_rows: list[QuestionRecord], most: int = 20) -> list[dict]:
    """The first turn of each question whose tokens differ from ``ar``'s, with the index of the first differing
    token (at most ``most`` entries). Later turns of that question are left out: their prompts hold the differing
    answer, so they differ anyway.

    A late first difference in a bf16 run points at rounding near a bin edge (docs/method.md, Numerics); a difference at
    token 0 of every turn points at a bug.
    """
    found = []
    for ours, theirs in zip(rows, ar_rows, strict=True):
        for turn, (a, b) in enumerate(zip(ours.turns, theirs.turns, strict=True)):
            if a.tokens == b.tokens:
                continue
            first = _first_difference(a.tokens, b.tokens)
            found.append(
                {
                    "question_id": ours.question.question_id,
                    "turn": turn,
                    "first_difference": first,
                    "tokens": len(a.tokens),
                    "ar_tokens": len(b.tokens),
                }
            )
            if len(found) == most:
                return found
            break
    return found


def _first_difference(a: list[int], b: list[int]) -> int:
    shorter = min(len(a), len(b))
    return next((i for i in range(shorter) if a[i] != b[i]), shorter)


def _number(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(summary: dict) -> str:
    """The summary as a markdown table, with the run's device, versions and settings above it."""
    env, config = summary["environment"], summary["config"]
    lines = [
        "# ptp bench",
        "",
        f"- device: {env['device_name']} ({env['device']}), torch {env['torch']}, transformers {env['transformers']}",
        f"- model: {config['model']}, dtype {config['dtype']}, sampling {config['sampling']}, "
        f"max_new_tokens {config['max_new_tokens']}, median of {config['repeats']} repeats after "
        f"{config['warmup']} warm-up runs",
        "- warm-up seconds (hf-static: mostly compilation): "
        + ", ".join(f"{method} {seconds:.1f}" for method, seconds in summary["warmup_s"].items()),
        "",
        "| method | category | turns | tokens | tau | ms per call | tokens/s | "
        + "".join(f"speedup vs {b} | " for b in BASELINES)
        + "matches ar |",
        "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(BASELINES) + "---|",
    ]
    for method, entry in summary["methods"].items():
        scopes = [("all", entry["all"])]
        if len(entry["categories"]) > 1:
            scopes += list(entry["categories"].items())
        for scope, s in scopes:
            match = "-"
            if s["matches_ar"] is not None:
                match = f"{'yes' if s['matches_ar'] else 'no'} ({s['matching_turns']}/{s['compared_turns']})"
                if not s["matches_ar"] and entry["expected_to_match_ar"]:
                    match += " UNEXPECTED"
            lines.append(
                f"| {method} | {scope} | {s['turns']} | {s['new_tokens']} | {_number(s['tau'])} | "
                f"{_number(s['ms_per_call'])} | {_number(s['tokens_per_s'], 1)} | "
                + "".join(f"{_number(s[f'speedup_over_{b}'])} | " for b in BASELINES)
                + f"{match} |"
            )
    for method, entry in summary["methods"].items():
        if entry["expected_to_match_ar"] and entry["ar_mismatches"]:
            shown = ", ".join(
                f"q{m['question_id']} turn {m['turn']} at token {m['first_difference']}"
                for m in entry["ar_mismatches"][:5]
            )
            lines += ["", f"{method} differs from ar: {shown}."]
    if config["dtype"] != "float32":
        lines += [
            "",
            f"In {config['dtype']}, calls of other shapes round differently, so an auxiliary within about "
            "1e-3 of a bin edge (or a greedy near-tie) can pick another token: ar's calls are laid out as ptp's, so "
            "that ptp and independent still equal ar; other methods need not (docs/method.md, Numerics). "
            "Exactness against plain sampling holds in float32.",
        ]
    lines += [
        "",
        "tau: tokens committed per forward call of the main model (prefill included); ms per call: wall time per such "
        "call, so that speedup vs ar = tau x ar's ms per call / the method's. ar, ptp and independent share "
        "their auxiliaries and must always equal ar; under sampling the transformers methods (hf, hf-static, "
        "hf-assisted, pld) "
        "draw other random numbers, so their text differs from ar's by design.",
        "",
    ]
    return "\n".join(lines)
