"""Generation: the solver's batched sampling (8 samples in one call) against one sample at a time.

Both sides call `utils.generation.sample_reasoning` on the same model and prompts with the same sampling
settings (temperature > 0, as the solver samples); the batched side asks for `samples` completions of a
problem in one call, the baseline makes `samples` calls of one completion each. Problems are solved one
after another, as the solver does. Sides alternate within each repeat; the median repeat is reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import REPO
from benchmarks.common import bar, make_result, median, row, timed_repeats


@dataclass(frozen=True)
class GenerationBench:
    """Sizes of one generation benchmark (the defaults take under a minute on 2 cores)."""

    model: str = "auto"  # as notebook 05: notebook 02's tuned adapter if it exists, else the embedded model
    problems: int = 4
    samples: int = 8
    repeats: int = 5
    max_new_tokens: int = 96  # GenerationConfig's and SolverConfig's default
    temperature: float = 0.7  # SolverConfig's default
    top_p: float = 0.95
    seed: int = 0


def resolve_model(name: str) -> str:
    """`auto` -> notebook 02's adapter (`outputs/02_lora_sft/adapter/final`) when it exists, else `tiny`:
    the tuned model answers at the length the solver meets; the base model barely answers at all."""
    if name != "auto":
        return name
    adapter = REPO / "outputs" / "02_lora_sft" / "adapter" / "final"
    return str(adapter) if (adapter / "adapter_config.json").is_file() else "tiny"


def _prompts(tokenizer, bench: GenerationBench) -> list[str]:
    """Embedded held-out-style problems in the reasoning prompt; the first one is kept for the warm-up."""
    from utils.prompts import build_prompt
    from utils.synthetic import generate_problems

    problems = generate_problems(bench.problems + 1, seed=bench.seed, split="bench")
    return [build_prompt(tokenizer, p.problem, "reasoning") for p in problems]


def _sides(model, tokenizer, prompts: list[str], bench: GenerationBench) -> dict:
    """The two ways to get `samples` answers per prompt; each returns its answer and token counts."""
    import torch

    from utils.generation import GenerationConfig, sample_reasoning

    config = GenerationConfig(
        max_new_tokens=bench.max_new_tokens,
        temperature=bench.temperature,
        top_p=bench.top_p,
        batch_size=bench.samples,
    )

    def solve(per_call: int) -> dict:
        torch.manual_seed(bench.seed)  # the same random stream for both sides' every repeat
        samples = []
        for prompt in prompts:
            for _ in range(bench.samples // per_call):
                samples += sample_reasoning(model, tokenizer, [prompt], config, n_samples=per_call)[0]
        return {"answers": len(samples), "new_tokens": sum(s.new_tokens for s in samples)}

    return {"batched": lambda: solve(bench.samples), "sequential": lambda: solve(1)}


def bench_generation(bench: GenerationBench | None = None) -> dict:
    """Batched vs one-at-a-time sampling; returns the result dict (see common)."""
    from utils.modeling import load_model, quiet_libraries, seed_everything

    bench = bench or GenerationBench()
    quiet_libraries()
    seed_everything(bench.seed)
    model_used = resolve_model(bench.model)
    model, tokenizer = load_model(model_used)
    prompts = _prompts(tokenizer, bench)
    warm = _sides(model, tokenizer, prompts[:1], bench)
    for side in warm.values():  # first calls build kernels and caches: not timed
        side()
    runs = timed_repeats(_sides(model, tokenizer, prompts[1:], bench), bench.repeats)
    figures = {name: sampling_figures(rs, bench.samples) for name, rs in runs.items()}
    rows = sampling_rows(figures["batched"], figures["sequential"], bench.samples)
    return make_result(
        "generation",
        f"{bench.samples} samples per problem: one batched call vs {bench.samples} calls",
        asdict(bench) | {"model_used": relative_to_repo(model_used)},
        rows,
        bar(f"answers/s, batched / sequential at {bench.samples} samples", rows[0]["ratio"], 3.0),
        batched=figures["batched"],
        sequential=figures["sequential"],
    )


def sampling_figures(repeats: list[dict], samples: int) -> dict:
    """The median repeat's rates; every repeat's raw figures are kept beside them."""
    problems = repeats[0]["answers"] / samples
    return {
        "answers_per_second": median([r["answers"] / r["seconds"] for r in repeats]),
        "seconds_per_problem": median([r["seconds"] for r in repeats]) / problems,
        "new_tokens_per_second": median([r["new_tokens"] / r["seconds"] for r in repeats]),
        "new_tokens_per_answer": median([r["new_tokens"] / r["answers"] for r in repeats]),
        "repeats": repeats,
    }


def sampling_rows(proj: dict, base: dict, samples: int) -> list[dict]:
    """The table rows of two sampling sides' `sampling_figures` (this bench's and the engines')."""
    return [
        row("answers per second", proj["answers_per_second"], base["answers_per_second"], "answers/s"),
        row(
            f"seconds for {samples} answers to one problem",
            proj["seconds_per_problem"],
            base["seconds_per_problem"],
            "s",
        ),
        row(
            "new tokens per second", proj["new_tokens_per_second"], base["new_tokens_per_second"], "tokens/s"
        ),
        row("new tokens per answer", proj["new_tokens_per_answer"], base["new_tokens_per_answer"]),
    ]


def relative_to_repo(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return path
