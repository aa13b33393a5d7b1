"""The README's measured results, generated from the notebooks' metrics.json and the benchmark JSON files.

`python -m utils.report` (or `make readme`) rewrites the part of README.md between the markers
`<!-- results:start -->` and `<!-- results:end -->`; nothing in that part is typed by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from utils.io import atomic_write_text
from utils.paths import project_root

START, END = "<!-- results:start -->", "<!-- results:end -->"


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def section_notebooks(outputs: Path) -> str:
    parts = []
    m1 = _load(outputs / "01_data_prep" / "metrics.json")
    if m1:
        parts.append(
            "**01 data prep**: "
            + ", ".join(f"{k} {m1[k]:,}" for k in ("train", "validation", "evaluation"))
            + f" examples/problems; {m1.get('decontaminated', 0):,} training problems dropped by decontamination."
        )
    m2 = _load(outputs / "02_lora_sft" / "metrics.json")
    if m2:
        rows = [
            ["base", m2["base_accuracy"], *[m2["base_by_kind"].get(k, "") for k in ("mental", "compute")]],
            [
                "LoRA-tuned",
                m2["tuned_accuracy"],
                *[m2["tuned_by_kind"].get(k, "") for k in ("mental", "compute")],
            ],
        ]
        parts.append(
            f"**02 LoRA SFT** ({m2['eval_problems']} held-out embedded problems, greedy, each in its trained style; "
            f"{m2['trainable_parameters']:,} trainable of {m2['total_parameters']:,} parameters, "
            f"{m2['steps']} steps):\n\n" + _table(["model", "accuracy", "mental", "compute"], rows)
        )
    m3 = _load(outputs / "03_adapter_comparison" / "metrics.json")
    if m3 and isinstance(m3.get("methods"), dict):
        keys = "accuracy accuracy_std trainable_share train_seconds final_train_loss forgetting".split()
        rows = [[name, *[r.get(k, "") for k in keys]] for name, r in m3["methods"].items()]
        budget = m3.get("budget", {})
        parts.append(
            f"**03 adapter comparison** (mean over seeds {m3.get('seeds')}; {budget.get('max_steps')} steps of "
            f"batch {budget.get('batch_size')} each):\n\n" + _table(["method", *keys], rows)
        )
    m4 = _load(outputs / "04_quantized_inference" / "metrics.json")
    if m4 and isinstance(m4.get("variants"), list):
        keys = "variant deployment weight_memory_mb accuracy perplexity agreement_with_16bit tokens_per_second".split()
        rows = [[r.get(k, "") for k in keys] for r in m4["variants"]]
        parts.append("**04 quantized inference**:\n\n" + _table(keys, rows))
    m5 = _load(outputs / "05_submission" / "metrics.json")
    if m5 and isinstance(m5.get("accuracy"), dict):
        by_kind = m5.get("by_kind", {})
        rows = [[mode, acc, by_kind.get(mode, {}).get("compute", "")] for mode, acc in m5["accuracy"].items()]
        parts.append(
            "**05 submission** (same held-out problems):\n\n"
            + _table(["mode", "accuracy", "compute problems"], rows)
        )
    m6 = _load(outputs / "06_grpo" / "metrics.json")
    if m6 and "grpo_accuracy" in m6:
        rows = [
            ["SFT adapter (notebook 02)", m6["sft_accuracy"], m6.get("sft_vote_accuracy", "")],
            ["after GRPO", m6["grpo_accuracy"], m6.get("grpo_vote_accuracy", "")],
        ]
        parts.append(
            f"**06 GRPO** ({m6['eval_problems']} held-out problems; {m6.get('steps')} steps of "
            f"{m6.get('num_generations')}-completion groups, trained on {', '.join(m6.get('trained_groups', []))}):"
            "\n\n" + _table(["adapter", "greedy", f"vote of {m6.get('vote_samples')}"], rows)
        )
    return "\n\n".join(parts) if parts else "_Run `make run-all` to produce results._"


def section_benchmarks(benchmarks_readme: Path) -> str:
    """The bars table of `benchmarks/README.md` (which `python -m benchmarks.report` generates from the
    results), with a pointer to the rest: every figure, and the machine each came from."""
    if not benchmarks_readme.is_file():
        return ""
    text = benchmarks_readme.read_text()
    if "## The bars" not in text:
        return ""
    bars = text.split("## The bars", 1)[1].split("\n## ", 1)[0].strip()
    return (
        f"{bars}\n\nEvery figure, the settings and the machine each came from (CPU rows: this project's 2-core "
        "machine): [benchmarks/README.md](benchmarks/README.md); `make bench` measures them again."
    )


def render(root: Path | None = None) -> str:
    root = root or project_root()
    text = "### Measured on the embedded default\n\n" + section_notebooks(root / "outputs")
    bench = section_benchmarks(root / "benchmarks" / "README.md")
    if bench:
        text += "\n\n### Benchmarks\n\n" + bench
    return text


def update_readme(root: Path | None = None) -> Path:
    root = root or project_root()
    readme = root / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return atomic_write_text(readme, f"{head}{START}\n{render(root)}\n{END}{tail}")


if __name__ == "__main__":
    print(f"updated {update_readme()}", file=sys.stderr)
