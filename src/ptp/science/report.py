"""An experiment's results: the runs' numbers gathered per variant (mean and standard deviation over the seeds),
``results.md`` (markdown tables) and ``<name>.png`` (matplotlib's object API, no display needed).

Every number of :func:`aggregate` is ``{"mean", "std", "n"}`` over the finished seeds of a variant; ``std`` is the
sample standard deviation (0 for one seed), the error bar of the plots.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure


def stats(values: list[float | None]) -> dict | None:
    """Mean, sample standard deviation and count of the values that are not None (None if there are none)."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "n": len(values)}


def _per_position(lists: list[list[float] | None]) -> list[dict] | None:
    lists = [x for x in lists if x]
    if not lists:
        return None
    return [stats([x[i] for x in lists if i < len(x)]) for i in range(max(len(x) for x in lists))]


def aggregate(kind: str, runs: list[dict]) -> dict:
    """The numbers of one variant over its finished runs (``result.json`` of each seed)."""
    if kind == "train":
        return {
            "perplexity_by_position": _per_position([r["perplexity_by_position"] for r in runs]),
            **{
                name: stats([r[name] for r in runs])
                for name in ("next_token_perplexity", "slot_perplexity", "ar_perplexity", "agreement_with_ar")
            },
        }
    evaluation, bench = [r["evaluation"] for r in runs], [r["bench"] for r in runs if r.get("bench")]
    categories = sorted({c for b in bench for c in b["categories"]})
    return {
        "correct_prefix": stats([e["correct_prefix"] for e in evaluation]),
        "window_tokens_per_call": stats([e["tokens_per_call"] for e in evaluation]),
        "accuracy": _per_position([e["accuracy"] for e in evaluation]),
        "first_slot_curve": _first_slot_curve([r.get("curve") for r in runs]),
        "tokens_per_call": stats([b["tokens_per_call"] for b in bench]),
        "categories": {c: stats([b["categories"].get(c) for b in bench]) for c in categories},
        "call_cost": stats([b["call_cost"] for b in bench]),
        "speedup_over_ar": stats([b["speedup_over_ar"] for b in bench]),
        "trained_parameters": runs[0]["parameters"]["trained"] if runs else None,
        "drafting_parameters": runs[0]["parameters"]["drafting"] if runs else None,
        "matches_ar": all(b["matches_ar"] for b in bench) if bench else None,
    }


def _first_slot_curve(curves: list[list[dict] | None]) -> list[dict]:
    """Slot 1's held-out accuracy during training, over the seeds, at the steps every seed evaluated."""
    curves = [c for c in curves if c]
    if not curves:
        return []
    steps = sorted(set.intersection(*({p["step"] for p in c} for c in curves)))
    at = [{p["step"]: p["accuracy"][0] for p in c} for c in curves]
    return [{"step": step, "accuracy": stats([a[step] for a in at])} for step in steps]


def failures(runs: list[dict]) -> list[dict]:
    """Runs whose engine output differed from one-token decoding (a bug: the engine must be exact in float32)."""
    return [
        {"variant": r["variant"], "seed": r["seed"], "mismatches": r["bench"]["ar_mismatches"]}
        for r in runs
        if r.get("bench") and not r["bench"]["matches_ar"]
    ]


def _cell(value: dict | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if value["n"] < 2:
        return f"{value['mean']:.{digits}f}"
    return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.2f}M" if value >= 1e5 else str(value)


def _table_head(names: list[str]) -> list[str]:
    """A markdown table's head: the first column left-aligned, the numbers right-aligned."""
    return ["| " + " | ".join(names) + " |", "|---|" + "---:|" * (len(names) - 1)]


def markdown(results: dict) -> str:
    """``results.md``: the claim, the settings, one row per variant, and the failures if any."""
    config, kind = results["config"], results["kind"]
    lines = [
        f"# Experiment `{results['experiment']}`",
        "",
        f"Claim: {results['claim']}.",
        "",
        f"- teacher: {results['teacher']}; seeds: {list(config['seeds'])}; steps: "
        f"{config['steps'] or 'as in the base settings'}",
        f"- complete: {'yes' if results['complete'] else 'no (rerun the same command to continue)'}",
        "",
    ]
    if len(config["seeds"]) < results["min_seeds"]:
        lines += [f"Fewer seeds than the claim needs for its error bars ({results['min_seeds']}).", ""]
    variants = results["variants"]
    if kind == "train":
        lines += _table_head(["variant", "seeds", "next-token perplexity", "slot perplexity", "ar model's perplexity",
                              "agreement with ar sampling (leading tokens)"])  # fmt: skip
        for name, v in variants.items():
            n = len(v["seeds"])
            lines.append(
                f"| {name} | {n} | {_cell(v['next_token_perplexity'])} | {_cell(v['slot_perplexity'])} | "
                f"{_cell(v['ar_perplexity'])} | {_cell(v['agreement_with_ar'])} |"
            )
        lines += ["", "Perplexity by window position (ptp):", ""]
        for name, v in variants.items():
            if v.get("perplexity_by_position"):
                lines.append(f"- {name}: " + ", ".join(_cell(p) for p in v["perplexity_by_position"]))
    elif not results["bench"]:
        lines += _table_head(["variant", "seeds", "slot 1 right", "correct prefix", "window tokens/call",
                              "trained params"])  # fmt: skip
        for name, v in variants.items():
            first = v["accuracy"][0] if v.get("accuracy") else None
            cells = [name, str(len(v["seeds"])), _cell(first, 3), _cell(v.get("correct_prefix")),
                     _cell(v.get("window_tokens_per_call")), _count(v.get("trained_parameters"))]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Slot 1 right on held-out windows during training (step: accuracy):", ""]
        for name, v in variants.items():
            if v.get("first_slot_curve"):
                points = ", ".join(f"{p['step']}: {_cell(p['accuracy'], 3)}" for p in v["first_slot_curve"])
                lines.append(f"- {name}: {points}")
        lines += ["", "Held-out windows only: this experiment does not decode Spec-Bench. Mean ± standard deviation "
                  "over seeds."]  # fmt: skip
    else:
        head = ["variant", "seeds", "correct prefix", "window tokens/call", "Spec-Bench tokens/call",
                "call cost (x ar)", "trained params", "drafting params", "matches ar"]  # fmt: skip
        lines += _table_head(head)
        for name, v in variants.items():
            if not v["seeds"]:
                lines.append(f"| {name} | 0 |" + " - |" * (len(head) - 2))
                continue
            cells = [name, str(len(v["seeds"])), _cell(v["correct_prefix"]), _cell(v["window_tokens_per_call"]),
                     _cell(v["tokens_per_call"]), _cell(v["call_cost"]), _count(v["trained_parameters"]),
                     _count(v["drafting_parameters"]), "yes" if v["matches_ar"] else "NO"]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        categories = sorted({c for v in variants.values() for c in v.get("categories", {})})
        lines += ["", "Spec-Bench tokens per call by category:", "", *_table_head(["variant", *categories])]
        for name, v in variants.items():
            if v["seeds"]:
                lines.append(f"| {name} | " + " | ".join(_cell(v["categories"].get(c)) for c in categories) + " |")
        lines += ["", "Accuracy per slot (held-out windows):", ""]
        for name, v in variants.items():
            if v.get("accuracy"):
                lines.append(f"- {name}: " + ", ".join(_cell(a) for a in v["accuracy"]))
        lines += [
            "",
            "correct prefix: mean number of leading draft slots equal to the teacher's token on held-out windows; "
            "window tokens/call: 1 + the correct run from the second slot on (the window estimate of a call's "
            "gain); Spec-Bench tokens/call: tokens committed per forward call of the engine (prefill included) "
            "on held-out Spec-Bench questions; call cost: wall time of a drafting call over a one-token call. "
            "Mean ± standard deviation over seeds.",
        ]
    if results["failures"]:
        lines += ["", "## FAILURES: engine output differs from one-token decoding", ""]
        lines += [f"- {f['variant']} seed {f['seed']}: {f['mismatches'][:3]}" for f in results["failures"]]
    return "\n".join(lines) + "\n"


def _errorbar(ax, xs, values, label):
    points = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
    if points:
        ax.errorbar([p[0] for p in points], [p[1]["mean"] for p in points], yerr=[p[1]["std"] for p in points],
                    marker="o", capsize=3, label=label)  # fmt: skip


def _accuracy_panel(ax, variants: dict) -> None:
    for name, v in variants.items():
        if v.get("accuracy"):
            _errorbar(ax, list(range(1, len(v["accuracy"]) + 1)), v["accuracy"], name)
    ax.set_xlabel("draft slot")
    ax.set_ylabel("accuracy (held-out windows)")
    ax.legend(fontsize=6)


def plot(results: dict, variants_meta: list, x_label: str, path: str | Path) -> Path:
    """``<name>.png``: tokens per call by variant (error bars over seeds) next to a second view of the claim."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    variants = results["variants"]
    done = [m for m in variants_meta if variants[m.name]["seeds"]]
    if results["kind"] == "train":
        for name, v in variants.items():
            if v.get("perplexity_by_position"):
                _errorbar(left, list(range(1, len(v["perplexity_by_position"]) + 1)), v["perplexity_by_position"],
                          f"{name}: C-PTP slot")  # fmt: skip
            ar = v.get("ar_perplexity")
            if ar is not None:
                left.axhline(ar["mean"], color="gray", linestyle="--", label="ar model, next token")
        left.set_xlabel("window position")
        left.set_ylabel("held-out perplexity")
        left.legend(fontsize=7)
        names = [m.name for m in done]
        values = [variants[n]["next_token_perplexity"] for n in names]
        right.bar(names, [v["mean"] if v else 0 for v in values], yerr=[v["std"] if v else 0 for v in values],
                  capsize=3)  # fmt: skip
        right.set_ylabel("held-out next-token perplexity")
    elif not results["bench"]:
        names = [m.name for m in done]
        firsts = [variants[n]["accuracy"][0] if variants[n].get("accuracy") else None for n in names]
        left.bar(names, [v["mean"] if v else 0 for v in firsts], yerr=[v["std"] if v else 0 for v in firsts],
                 capsize=3)  # fmt: skip
        low = min((v["mean"] for v in firsts if v), default=0.0)
        left.set_ylim(max(0.0, low - 0.05), 1.0)
        left.tick_params(axis="x", labelrotation=30, labelsize=7)
        left.set_ylabel("slot 1 right (held-out windows)")
        for name in names:
            curve = variants[name].get("first_slot_curve") or []
            _errorbar(right, [p["step"] for p in curve], [p["accuracy"] for p in curve], name)
        baseline = variants.get("independent", {}).get("accuracy")
        if baseline:  # a drafter that ignores u: at most the teacher's mode rate
            for ax in (left, right):
                ax.axhline(baseline[0]["mean"], color="gray", linestyle="--", label="independent (ignores u)")
        right.set_xlabel("training step")
        right.set_ylabel("slot 1 right (held-out windows)")
        if right.get_legend_handles_labels()[0]:
            right.legend(fontsize=7)
    else:
        if results["experiment"] == "size":
            for m in done:
                v = variants[m.name]
                if v["drafting_parameters"] is not None:
                    _errorbar(left, [v["drafting_parameters"]], [v["tokens_per_call"]], m.name)
            left.set_xscale("log")
            left.set_xlabel("parameters of the drafting network")
            for m in done:
                v = variants[m.name]
                if v["call_cost"] is not None and v["tokens_per_call"] is not None:
                    right.errorbar([v["call_cost"]["mean"]], [v["tokens_per_call"]["mean"]],
                                   xerr=[v["call_cost"]["std"]], yerr=[v["tokens_per_call"]["std"]], marker="o",
                                   capsize=3, label=m.name)  # fmt: skip
            right.set_xlabel("cost of a drafting call (x one-token call)")
            right.set_ylabel("Spec-Bench tokens per call")
            right.legend(fontsize=7)
        elif x_label and all(m.x is not None for m in done):
            for group in dict.fromkeys(m.group for m in done):
                members = [m for m in done if m.group == group]
                _errorbar(left, [m.x for m in members], [variants[m.name]["tokens_per_call"] for m in members], group)
            left.set_xlabel(x_label)
            _accuracy_panel(right, {m.name: variants[m.name] for m in done})
        else:
            names = [m.name for m in done]
            values = [variants[n]["tokens_per_call"] for n in names]
            left.bar(names, [v["mean"] if v else 0 for v in values], yerr=[v["std"] if v else 0 for v in values],
                     capsize=3)  # fmt: skip
            left.tick_params(axis="x", labelrotation=60, labelsize=7)
            _accuracy_panel(right, {n: variants[n] for n in names})
        left.set_ylabel("Spec-Bench tokens per call")
        if left.get_legend_handles_labels()[0]:
            left.legend(fontsize=7)
    fig.suptitle(f"{results['experiment']}: {results['teacher']}", fontsize=9)
    fig.savefig(path, dpi=120)
    return Path(path)
