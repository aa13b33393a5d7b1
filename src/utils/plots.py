"""The series' plots: one function per figure, each returning the matplotlib Figure (and saving it)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt


def _save(fig, path: str | Path | None):
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


ANSWER_AXIS_LIMIT = 6  # log10: answers beyond a million are drawn in the last bin


def distributions(
    answers_by_source: dict[str, list[int]],
    lengths_by_source: dict[str, list[int]],
    path: str | Path | None = None,
):
    """Answer magnitudes and tokens per example, per source (log scales: the sources differ by orders).

    The answer axis stops at 10^6 (larger answers fall in the last bin) and marks the competitions' ranges."""
    import math

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8))
    bins = [i / 4 for i in range(4 * ANSWER_AXIS_LIMIT + 1)]
    for source, answers in answers_by_source.items():
        logs = [min(math.log10(abs(a) + 1), ANSWER_AXIS_LIMIT) for a in answers]
        ax1.hist(logs, bins=bins, histtype="step", linewidth=1.3, label=source, density=True)
    for limit, name in ((3, "AIMO 1-2: 999"), (5, "AIMO 3: 99999")):
        ax1.axvline(limit, color="gray", linestyle="--", linewidth=0.8)
        ax1.text(limit, ax1.get_ylim()[1] * 0.95, f" {name}", fontsize=7, color="gray", va="top")
    ax1.set(xlabel="log10(|answer| + 1), clipped at 6", ylabel="density", title="Integer answers",
            xlim=(0, ANSWER_AXIS_LIMIT))  # fmt: skip
    longest = max((max(v) for v in lengths_by_source.values() if v), default=10)
    length_bins = [10 ** (1 + i * (math.log10(longest) - 1) / 40) for i in range(41)]  # even on a log axis
    for source, lengths in lengths_by_source.items():
        ax2.hist(lengths, bins=length_bins, histtype="step", linewidth=1.3, label=source)
    ax2.set(xlabel="tokens per training example", ylabel="examples", title="Example lengths", xscale="log")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def loss_curve(log_history: list[dict], path: str | Path | None = None, title: str = "Training loss"):
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    if train:
        ax.plot(*zip(*train, strict=False), label="train", marker=".")
    if evals:
        ax.plot(*zip(*evals, strict=False), label="validation", marker="o")
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def bars(labels: list[str], values: list[float], ylabel: str, title: str, path: str | Path | None = None):
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.bar(labels, values, color=plt.cm.tab10.colors[: len(labels)])
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.2f}", ha="center", va="bottom")
    ax.set(ylabel=ylabel, title=title)
    fig.tight_layout()
    return _save(fig, path)


def scatter(
    points: list[dict],
    x: str,
    y: str,
    label: str,
    path: str | Path | None = None,
    logx: bool = False,
    title: str = "",
    front: bool = False,
):
    """One point per row of `points` (dicts), labelled; with `front`, the Pareto front (max y, min x) drawn."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for p in points:
        ax.scatter(p[x], p[y], s=30)
        ax.annotate(str(p[label]), (p[x], p[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if front:
        best, line = -float("inf"), []
        for p in sorted(points, key=lambda p: (p[x], -p[y])):
            if p[y] > best:
                best = p[y]
                line.append((p[x], p[y]))
        if line:
            ax.step(
                *zip(*line, strict=False), where="post", color="gray", linestyle="--", label="Pareto front"
            )
            ax.legend(fontsize=8)
    ax.set(xlabel=x, ylabel=y, title=title, xscale="log" if logx else "linear")
    fig.tight_layout()
    return _save(fig, path)


def accuracy_intervals(table, path: str | Path | None = None, title: str = "Held-out accuracy over seeds"):
    """One row per method (a table indexed by method with `accuracy`, `accuracy_min`, `accuracy_max`, `tier`
    and `trainable_parameters`): the interval from the worst to the best seed and the mean, coloured by tier,
    against the method's name and against its trainable parameters."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(table) + 1.6))
    colours = plt.cm.tab10.colors
    rows = table.iloc[::-1]  # the best on top
    for i, (_, r) in enumerate(rows.iterrows()):
        colour = colours[(int(r["tier"]) - 1) % len(colours)]
        axes[0].plot(
            [r["accuracy_min"], r["accuracy_max"]],
            [i, i],
            color=colour,
            lw=6,
            alpha=0.5,
            solid_capstyle="butt",
        )
        axes[0].plot(r["accuracy"], i, "o", color=colour, label=f"tier {int(r['tier'])}")
    axes[0].set(yticks=range(len(rows)), yticklabels=list(rows.index), xlabel="held-out accuracy (worst to best seed; dot: mean)",
                title=title)  # fmt: skip
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    axes[0].legend(unique.values(), unique.keys(), fontsize=8, loc="lower right")
    ax = axes[1]
    for name, r in rows.iterrows():
        colour = colours[(int(r["tier"]) - 1) % len(colours)]
        ax.errorbar(r["trainable_parameters"], r["accuracy"], yerr=[[r["accuracy"] - r["accuracy_min"]], [r["accuracy_max"] - r["accuracy"]]],
                    fmt="o", color=colour, capsize=3)  # fmt: skip
        ax.annotate(
            name,
            (r["trainable_parameters"], r["accuracy"]),
            fontsize=7,
            xytext=(4, 2),
            textcoords="offset points",
        )
    ax.set(
        xscale="log",
        xlabel="trainable parameters (log)",
        ylabel="held-out accuracy",
        title="Accuracy against size",
    )
    fig.tight_layout()
    return _save(fig, path)


def rank_sweep(table, path: str | Path | None = None):
    """Accuracy, adapter size and train time against LoRA's rank (a table indexed by rank)."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, column, label in (
        (axes[0], "accuracy", "held-out accuracy"),
        (axes[1], "adapter_bytes", "adapter size, bytes (log)"),
        (axes[2], "train_seconds", "train time, s"),
    ):
        ax.plot(table.index, table[column], "o-")
        ax.set(
            xscale="log",
            xlabel="rank r (log)",
            ylabel=label,
            xticks=list(table.index),
            xticklabels=list(table.index),
        )
    axes[1].set_yscale("log")
    fig.suptitle("LoRA's rank")
    fig.tight_layout()
    return _save(fig, path)
