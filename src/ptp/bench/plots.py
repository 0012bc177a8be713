"""PNG plots of benchmark results, drawn with matplotlib's object API (no pyplot, no display needed)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

#: Draft positions that fewer calls reached are left out of :func:`draft_accuracy`.
MIN_CALLS = 10


def accept_histograms(summary: dict, path: str | Path) -> Path:
    """Per method, the fraction of main-model calls that committed n tokens."""
    methods = list(summary["methods"].items())
    fig = Figure(figsize=(7, 1.8 * len(methods) + 0.6), layout="constrained")
    axes = fig.subplots(len(methods), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (method, entry) in zip(axes, methods, strict=True):
        counts = entry["accept_histogram"][1:]  # no call commits 0 tokens
        total = max(sum(counts), 1)
        ax.bar(range(1, len(counts) + 1), [c / total for c in counts], color="tab:blue")
        tau = entry["all"]["tau"]
        ax.set_title(f"{method} (tau {tau:.2f})" if tau is not None else method, fontsize=9, loc="left")
        ax.set_ylabel("share of calls")
    axes[-1].set_xlabel("tokens committed per forward call")
    axes[-1].xaxis.get_major_locator().set_params(integer=True)
    fig.savefig(path, dpi=120)
    return Path(path)


def speedup_by_category(summary: dict, path: str | Path) -> Path:
    """Grouped bars: speedup over ``ar`` (tokens/s ratio) per category and overall, one bar per method."""
    categories = [*summary["categories"], "all"]
    methods = [m for m, e in summary["methods"].items() if m != "ar" and e["all"]["speedup_over_ar"] is not None]
    fig = Figure(figsize=(max(6, 1.2 * len(categories) * max(len(methods), 1) / 2), 4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(methods), 1)
    for i, method in enumerate(methods):
        entry = summary["methods"][method]
        values = [
            (entry["all"] if c == "all" else entry["categories"][c])["speedup_over_ar"] or 0.0 for c in categories
        ]
        ax.bar([x + i * width for x in range(len(categories))], values, width, label=method)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(categories))], categories, rotation=30, ha="right")
    ax.set_ylabel("speedup over ar (tokens/s)")
    return _save(fig, ax, path, drawn=bool(methods), note="no speedups (ar was not run)")


def draft_accuracy(summary: dict, path: str | Path) -> Path:
    """Per drafting method, the acceptance rate of draft j given that drafts 1..j-1 were accepted, at the positions
    that at least :data:`MIN_CALLS` calls reached (a rate over fewer calls is noise)."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    drawn = 0
    for method, entry in summary["methods"].items():
        acceptance = entry.get("draft_acceptance")
        if not acceptance:
            continue
        rates = supported_rates(acceptance)
        ax.plot(range(1, len(rates) + 1), rates, marker="o", label=f"{method} ({acceptance['calls']} calls)")
        drawn += 1
    ax.set_xlabel(f"draft position j (where at least {MIN_CALLS} calls tried it)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("P(draft j accepted | drafts < j accepted)")
    ax.set_ylim(0, 1.05)
    return _save(fig, ax, path, drawn=drawn > 0, note="no drafting method was run")


def supported_rates(acceptance: dict) -> list[float]:
    """The conditional acceptance rates of :func:`ptp.bench.report.draft_acceptance` at draft positions 1, 2, ...
    that at least :data:`MIN_CALLS` calls tried (those that accepted every draft before it)."""
    calls = acceptance["calls"]
    tried = [calls] + [round(calls * share) for share in acceptance["at_least"]]
    return [rate for j, rate in enumerate(acceptance["conditional"]) if tried[j] >= MIN_CALLS]


def _save(fig: Figure, ax, path: str | Path, drawn: bool, note: str) -> Path:
    """A legend when something was drawn, else ``note`` in the middle of the axes; then the PNG."""
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center")
    fig.savefig(path, dpi=120)
    return Path(path)


def forward_cost(results: list[dict], path: str | Path) -> Path:
    """Time of one forward call against the new tokens in it, one line per model and mask, with the floors and the
    decoding step of ``transformers``' fastest path where it was timed."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, result in enumerate(results):
        color = f"C{i}"
        points = result["points"]
        n = [p["new_tokens"] for p in points]
        for key, style in (("causal_ms", "-o"), ("bool_mask_ms", "--s"), ("causal_kernel_ms", "-.^")):
            if all(key in p for p in points):
                label = f"{result['preset']} ({key.removesuffix('_ms').replace('_', ' ')})"
                ax.plot(n, [p[key] for p in points], style, color=color, label=label, markersize=4)
        ax.axhline(result["floor_ms"], color=color, linestyle=":", label=f"{result['preset']} bandwidth floor")
        if "hf_static" in result:
            ms = result["hf_static"]["ms_per_token"]
            ax.axhline(ms, color=color, linestyle="-.", label=f"{result['preset']} transformers static + compile, step")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(f"new tokens in the call (after a {results[0]['context']}-token context)")
    ax.set_ylabel("ms per forward call")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    return Path(path)
