"""`benchmarks/README.md`, generated from `benchmarks/results/*.json` (never typed by hand).

python -m benchmarks.report     # rewrite the README from the stored results
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks import REPO, RESULTS_DIR
from benchmarks.common import bar_status, fmt

ORDER = ("training", "generation", "sandbox", "series", "engines")

HOW_TO_RUN = """\
## How to run

```
make bench                                        # every benchmark (the series alone takes minutes)
.venv/bin/python -m benchmarks.run --only training  # one, or a comma-separated list
.venv/bin/python -m benchmarks.run --skip series    # all but the series (about 3 minutes on 2 cores)
.venv/bin/python -m benchmarks.run --quick          # tiny sizes, saves nothing: checks the code path
.venv/bin/python -m benchmarks.report               # rewrite this README from results/*.json
```

Each benchmark times the project's way and a plain baseline in the same run, on the same model and data:
a warm-up first, then timed repeats (the sides alternate; the median repeat is reported). Its JSON in
`results/` holds the settings, every repeat's raw figures and the machine. The ratio column is always
project / baseline. The CPU figures come from a shared 2-core machine: read the load average beside them.
"""

NOTES = {
    "training": "Every side is `train_sft` with one `SFTConfig` (batch 16 rows, max_length 256, loss on "
    "answers only) and one `LoraConfig` (r=16, alpha=32, dropout 0.05, all-linear); only the packing differs. "
    "`packed-bfd` packs examples best-fit into padding-free rows whose positions restart per example; "
    "`packed-wrapped` concatenates examples and cuts rows of max_length (attention runs across examples). "
    "The project packs with notebook 02's `packing_strategy` (TRL's default, `bfd`), on a GPU only. "
    "Each run is a fresh process, so its peak memory (resident set on a CPU) is its own. Tokens are real "
    "(non-padding) tokens. A packed batch holds more tokens than a padded one of the same row count, hence "
    "its higher memory.",
    "generation": "`sample_reasoning` with `n_samples=8` in one call (the solver's wave), against 8 calls "
    "with `n_samples=1`. Both use the same prompts, the same temperature and top_p, and the same "
    "max_new_tokens. A batched call lasts as long as its longest sample.",
    "sandbox": "The baseline has no limits, no audit hook, no temporary folder and no cleanup of the process group. "
    "The sandbox starts its interpreter with `-I -S` (no site import), which wins back part of that cost.",
    "engines": "`sample_reasoning` with `n_samples=8` per problem, decoded by vLLM (`utils.engine_vllm`, the adapter "
    "as a LoRA request) and by transformers' `generate` (the adapter through peft), both in the vLLM environment "
    "(`make vllm`; transformers 5.19 there), in one process, on the same prompts and settings. On a CPU with the "
    "0.9M-parameter model, a decoding step costs next to nothing and vLLM's scheduling per step dominates; "
    "on a GPU with a 7B model the step dominates and vLLM's batching and paged KV cache are what pay.",
    "series": "Each `notebooks/NN_*.py`, converted with jupytext and executed with papermill from `notebooks/`, "
    "in order, with the Makefile's environment, writing to a temporary OUTPUT_DIR. Times include each "
    "kernel's start, as `make run-all` prints them.",
}


def load_results(results_dir: Path = RESULTS_DIR) -> dict[str, dict]:
    """The stored results by benchmark name (the GPU scripts' files are read separately: their own layouts)."""
    found = {}
    for path in sorted(results_dir.glob("*.json")):
        if path.stem in ("gpu_7b", "gpu_series", "gpu_grpo"):
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if "benchmark" not in data or "rows" not in data:
            raise ValueError(f"{path}: not a benchmark result (no 'benchmark' or 'rows' field)")
        found[data["benchmark"]] = data
    return found


def _omp(settings: dict) -> dict:
    """The series records the wait policy its notebooks ran with, which differs from its own process's."""
    return {"omp_wait_policy": settings["omp_wait_policy"]} if "omp_wait_policy" in settings else {}


def machine_line(m: dict) -> str:
    end = m.get("load_average_1min_at_end")
    load = f"load average {m['load_average_1min']} at the start" + (
        f", {end} at the end" if end is not None else ""
    )
    return (
        f"Measured {m['date_utc']} on {m['cpu']} ({m['cpus_usable']} usable cores, {m['torch_threads']} torch "
        f"threads, OMP_WAIT_POLICY={m.get('omp_wait_policy')}, {load}), device {m['device']}, Python "
        f"{m['python']}, torch {m['torch']}, transformers {m['transformers']}, peft {m['peft']}, "
        f"trl {m['trl']}, commit {m['git_commit']}."
    )


def rows_table(rows: list[dict], project: str = "project", baseline: str = "baseline") -> list[str]:
    if all(r["baseline"] is None for r in rows):  # figures without a baseline (the series)
        return ["| what | figure |", "| --- | --- |"] + [
            f"| {r['metric']} | {fmt(r['project'])} {r['unit']} |" for r in rows
        ]
    lines = [f"| metric | {project} | {baseline} | project / baseline |", "| --- | --- | --- | --- |"]
    for r in rows:
        unit = f" ({r['unit']})" if r["unit"] else ""
        ratio = "" if r["ratio"] is None else f"**{fmt(r['ratio'])}x**"
        lines.append(f"| {r['metric']}{unit} | {fmt(r['project'])} | {fmt(r['baseline'])} | {ratio} |")
    return lines


SIDE_NAMES = {
    "training": ("packed", "padded (baseline)"),
    "generation": ("batched (project)", "one at a time (baseline)"),
    "sandbox": ("run_python (project)", "bare subprocess (baseline)"),
    "engines": ("vLLM", "transformers"),
}


def section(name: str, result: dict | None) -> list[str]:
    lines = [f"## {name}", ""]
    if result is None:
        return lines + [f"Not run yet: `python -m benchmarks.run --only {name}`.", ""]
    lines += [
        f"{result['description']}.",
        "",
        *rows_table(result["rows"], *SIDE_NAMES.get(name, ("project", "baseline"))),
    ]
    if result.get("bar"):
        lines += ["", f"Bar: {bar_status(result['bar'])}."]
    lines += extra_lines(name, result["raw"])
    lines += [
        "",
        NOTES.get(name, ""),
        "",
        f"Settings: `{json.dumps(result['settings'])}`.",
        "",
        machine_line(result["machine"] | _omp(result["settings"])),
        "",
    ]
    return lines


def extra_lines(name: str, raw: dict) -> list[str]:
    """Figures that explain a benchmark's ratio, beyond its table."""
    if name == "sandbox":
        return ["", f"Overhead: {fmt(raw['overhead_ms_per_execution'])} ms per execution."]
    if name == "engines":
        same = raw["greedy_agreement"]
        return [
            "",
            f"Greedy completions identical between the engines: {same['identical']}/{same['prompts']}.",
        ]
    padding = raw.get("sides", {}).get("padded", {}).get("padding") if name == "training" else None
    if not padding:
        return []
    low, mean, high = padding["example_tokens_min_mean_max"]
    return [
        "",
        f"The examples are {low}-{high} tokens long (mean {fmt(mean)}), so a padded batch is about "
        f"{padding['padding_share']:.0%} padding (estimated from their lengths) and removing padding can "
        f"gain at most {fmt(padding['padding_ceiling'])}x. Beyond that, packing's gain comes only from "
        "fewer, fuller steps; its longer rows cost more attention per token.",
        *_real_padding_lines(raw.get("real_data_padding") or {}),
    ]


def _real_padding_lines(real: dict) -> list[str]:
    """The same estimate on real training rows: where packing has padding to remove."""
    found = {k: v for k, v in real.items() if "padding_share" in v}
    if not found:
        return []
    parts = [
        f"{name} {v['padding_share']:.0%} padding (at most {fmt(v['padding_ceiling'])}x)"
        for name, v in found.items()
    ]
    return [
        "",
        "On real training rows (notebook 01's, the same estimate, no truncation): " + ", ".join(parts) + ". "
        "That is where packing pays, on a GPU whose variable-length attention kernel (flash-attention) makes a "
        "packed row cost no more per token than its examples would alone.",
    ]


def bars_table(results: dict[str, dict], gpu: dict | None) -> list[str]:
    lines = [
        "## The bars",
        "",
        "| bar | target | measured | holds | where |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in ORDER:
        result = results.get(name) or {}
        where = f"{name}, {result.get('machine', {}).get('device')}, {result.get('machine', {}).get('date_utc', '')[:10]}"
        for b in [result["bar"]] if result.get("bar") else []:
            lines.append(_bar_line(b, where))
        for b in result.get("raw", {}).get("other_bars", []):  # variants that are not the project's default
            lines.append(_bar_line(b, where))
    for b in gpu_bars(gpu, project_side(results)):
        lines.append(
            _bar_line(
                b, f"GPU: {gpu['meta']['env'].get('gpu', '?')}, {gpu['meta'].get('started_utc', '?')[:10]}"
            )
        )
    return lines + [""]


def _bar_line(b: dict, where: str) -> str:
    sign = ">=" if b["higher_is_better"] else "<="
    holds = {True: "yes", False: "**no**", None: "not measured"}[b["holds"]]
    return f"| {b['text']} | {sign} {fmt(b['target'])} | {fmt(b['measured'])} | {holds} | {where} |"


# gpu_7b.py's packed layouts, and the TRL strategy each behaves like: (phase key, speed-up key, what it does).
GPU_LAYOUTS = {
    "wrapped": ("packed_concat", "speedup_packed_concat_vs_padded", "plain concatenation"),
    "bfd": ("packed_restart_positions", "speedup_packed_restart_vs_padded", "positions restart per example"),
}


def gpu_layout_label(strategy: str, project_side: str | None) -> str:
    mark = ", the project's" if project_side == f"packed-{strategy}" else ""
    return f"packed, {GPU_LAYOUTS[strategy][2]} (like TRL's `{strategy}`{mark})"


def gpu_bars(gpu: dict | None, project_side: str | None = None) -> list[dict]:
    """The same bars, applied to the H100 figures where they were measured."""
    from benchmarks.common import bar

    phases, found = (gpu or {}).get("phases", {}), []
    packing = phases.get("packed_vs_padded", {})
    for strategy, (_, key, _) in GPU_LAYOUTS.items():
        if key in packing:
            label = gpu_layout_label(strategy, project_side)
            found.append(bar(f"training throughput, {label} / padded", packing[key], 1.5))
    if "generation_batched_vs_sequential" in phases:
        g = phases["generation_batched_vs_sequential"]
        text = f"answers/s, batched / sequential at {g['samples']} samples"
        found.append(bar(text, g["speedup_batched_vs_sequential"], 3.0))
    return found


def gpu_section(gpu: dict | None, project_side: str | None = None) -> list[str]:
    """The H100 run of `gpu_7b.py` (DeepSeek-Math-7B's architecture, random weights), from its JSON."""
    lines = ["## GPU: DeepSeek-Math-7B's architecture on an H100", ""]
    if not gpu:
        return lines + ["No `results/gpu_7b.json` yet (see GPU.md).", ""]
    env, phases = gpu["meta"]["env"], gpu.get("phases", {})
    lines += [
        f"Card: **{env.get('gpu', 'unknown')}** ({env.get('nvidia_smi', '')}); torch {env.get('torch')}, "
        f"transformers {env.get('transformers')}, peft {env.get('peft')}; started {gpu['meta'].get('started_utc')}; "
        f"{gpu['meta'].get('params', 0) / 1e9:.2f} B parameters, random bf16 weights, LoRA r=16 on all "
        "linear layers. Figures from `results/gpu_7b.json`; how they were taken: [GPU.md](GPU.md).",
        "",
    ]
    if "packed_vs_padded" in phases:
        p = phases["packed_vs_padded"]
        lines += [
            f"Training, one step on {len(p['lengths'])} examples of {min(p['lengths'])}-{max(p['lengths'])} "
            f"tokens ({p['real_tokens']} real tokens, {p['padded_tokens']} when padded):",
            "",
            "| layout | s/step | real tokens/s | vs padded | peak allocated (GiB) |",
            "| --- | --- | --- | --- | --- |",
        ]
        base = p["padded"]["real_tokens_per_s"]
        layouts = [("padded", "padded (baseline)")]
        layouts += [
            (key, gpu_layout_label(strategy, project_side)) for strategy, (key, _, _) in GPU_LAYOUTS.items()
        ]
        for key, label in layouts:
            if key in p:
                r = p[key]
                lines.append(
                    f"| {label} | {fmt(r['s_per_step_median'])} | {fmt(r['real_tokens_per_s'])} | "
                    f"{fmt(r['real_tokens_per_s'] / base)}x | {fmt(r.get('peak_alloc_gib'))} |"
                )
        lines.append("")
    if "generation_batched_vs_sequential" in phases:
        g = phases["generation_batched_vs_sequential"]
        lines += [
            f"Sampling {g['samples']} answers of {g['new_tokens']} new tokens to one prompt:",
            "",
            "| how | seconds | answers/s |",
            "| --- | --- | --- |",
            f"| one call, {g['samples']} samples (project) | {fmt(g['batched_seconds'])} | {fmt(g['batched_answers_per_s'])} |",
            f"| {g['samples']} calls, one sample each (baseline) | {fmt(g['sequential_seconds'])} | "
            f"{fmt(g['sequential_answers_per_s'])} |",
            f"| **batched / sequential** | | **{fmt(g['speedup_batched_vs_sequential'])}x** |",
            "",
            "GPU.md explains why the batched time probably includes first-call costs (its warm-up was short).",
            "",
        ]
    return lines


def project_side(results: dict[str, dict]) -> str | None:
    """The project's packed side as the training benchmark recorded it (e.g. `packed-bfd`)."""
    return results.get("training", {}).get("settings", {}).get("project_side")


def render_readme(results_dir: Path = RESULTS_DIR) -> str:
    results = load_results(results_dir)
    gpu_path = results_dir / "gpu_7b.json"
    gpu = json.loads(gpu_path.read_text()) if gpu_path.is_file() else None
    lines = [
        "# Benchmarks: the project's way against the plain way",
        "",
        "<!-- Generated by `python -m benchmarks.report` from results/*.json: edit report.py, not this file. -->",
        "",
        HOW_TO_RUN,
        *bars_table(results, gpu),
    ]
    for name in ORDER:
        lines += section(name, results.get(name))
    lines += gpu_section(gpu, project_side(results))
    return "\n".join(lines).rstrip() + "\n"


def write_readme(results_dir: Path = RESULTS_DIR, path: Path | None = None) -> Path:
    path = path or REPO / "benchmarks" / "README.md"
    path.write_text(render_readme(results_dir))
    return path


if __name__ == "__main__":
    print(write_readme())
    sys.exit(0)
