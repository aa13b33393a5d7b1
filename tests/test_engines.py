"""The engine seam, in the project's environment (no vLLM needed): an `Engine` takes the place of the model in
the tool loop and the solver, ENGINE is checked, vLLM is never imported for the hf engine, and the vLLM
engine's options are resolved and checked before vLLM is asked for anything.
(The vLLM engine itself is tested in tests/test_engine_vllm.py, in the vLLM environment.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_generation import byte_tokenizer

from utils.engine_vllm import VLLMOptions, adapter_rank, lora_rank_for, vllm_quantization
from utils.engines import Engine
from utils.generation import OUTPUT_OPEN, GenerationConfig, sample_with_tools
from utils.solver import Solver, SolverConfig, build_solver, load_submission_model

REPO = Path(__file__).resolve().parents[1]


class ScriptedEngine(Engine):
    """Answers each call from a script: a program and its opened output block, then the final answer."""

    def __init__(self):
        self.calls = []

    def generate_scored(self, tokenizer, prompts, config, stop_strings, deadline):
        self.calls.append({"prompts": list(prompts), "stop_strings": stop_strings, "deadline": deadline})
        out = []
        for prompt in prompts:
            if OUTPUT_OPEN in prompt:  # the code ran: its output was fed back into the prompt
                value = prompt.rsplit(OUTPUT_OPEN, 1)[1].split("```")[0].strip()
                out.append((f"The answer is \\boxed{{{value}}}.", 6, -0.5))
            else:
                out.append((f"```python\nprint(6 * 7)\n```\n{OUTPUT_OPEN}", 9, -1.0))
        return out


def test_an_engine_takes_the_models_place_in_the_tool_loop():
    engine, tok = ScriptedEngine(), byte_tokenizer()
    deadline = time.monotonic() + 30
    config = GenerationConfig(scores=True, max_code_rounds=2)
    [[sample]] = sample_with_tools(engine, tok, ["Q: 6 times 7?\n"], config, deadline=deadline)
    assert [r["stdout"].strip() for r in sample.code_runs] == ["42"]  # the sandbox ran the engine's program
    assert sample.text.endswith("The answer is \\boxed{42}.")
    assert (sample.new_tokens, sample.logprob, sample.scored_tokens) == (15, -1.5, 15)
    assert engine.calls[0]["stop_strings"] == [OUTPUT_OPEN] and engine.calls[0]["deadline"] == deadline


def test_the_solver_votes_on_an_engines_samples():
    engine = ScriptedEngine()
    solution = Solver(engine, byte_tokenizer(), SolverConfig(mode="tools", samples=4, wave_size=2)).solve(
        "What is 6 times 7?", deadline=time.monotonic() + 60
    )
    assert solution.answer == 42
    assert solution.votes == {42: 2} and solution.stopped_early  # 2 of 4 agree: the vote cannot change


def test_engine_is_checked_and_options_belong_to_vllm():
    with pytest.raises(ValueError, match="ENGINE: expected one of"):
        build_solver("tiny", engine="tensorrt", lazy=True)
    with pytest.raises(ValueError, match="apply to the vllm engine"):
        load_submission_model("tiny", engine="hf", engine_options={"kv_cache_dtype": "fp8"})


def test_the_hf_engine_never_imports_vllm():
    code = (
        "import sys, utils.solver, utils.engine_vllm\n"
        "utils.solver.build_solver('tiny', lazy=True)\n"
        "print('vllm' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(REPO / "src")}
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_vllm_options_fill_in_the_cpu_settings_and_reject_unknown_ones():
    cpu = VLLMOptions().resolved(on_cpu=True)
    assert (cpu.dtype, cpu.enforce_eager, cpu.multiprocessing, cpu.kv_cache_memory_bytes) == (
        "float32",
        True,
        False,
        2**29,
    )
    gpu = VLLMOptions(kv_cache_dtype="fp8").resolved(on_cpu=False)
    assert (gpu.dtype, gpu.enforce_eager, gpu.gpu_memory_utilization, gpu.kv_cache_memory_bytes) == (
        "auto",
        False,
        0.90,
        None,
    )
    kwargs = gpu.llm_kwargs()
    assert kwargs["kv_cache_dtype"] == "fp8" and "kv_cache_memory_bytes" not in kwargs
    assert VLLMOptions(extra={"swap_space": 0}).resolved(True).llm_kwargs()["swap_space"] == 0
    with pytest.raises(ValueError, match=r"unknown vLLM option\(s\) \['gpu_memory'\]"):
        VLLMOptions.from_dict({"gpu_memory": 0.5})
    with pytest.raises(ValueError, match="'request' or 'merge'"):
        VLLMOptions(lora="fuse")


def test_quantization_and_lora_ranks_map_to_what_vllm_accepts(tmp_path):
    assert vllm_quantization("nf4", VLLMOptions()).quantization == "bitsandbytes"
    assert vllm_quantization("none", VLLMOptions()).quantization is None
    assert vllm_quantization("8bit", VLLMOptions(quantization="fp8")).quantization == "fp8"  # theirs wins
    with pytest.raises(ValueError, match="'8bit' has no vLLM equivalent"):
        vllm_quantization("8bit", VLLMOptions())
    assert [lora_rank_for(r) for r in (4, 8, 9, 64)] == [8, 8, 16, 64]
    with pytest.raises(ValueError, match="above vLLM's largest"):
        lora_rank_for(1024)
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 8, "rank_pattern": {"q": 32}})
    )
    assert adapter_rank(tmp_path) == 32
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(ValueError, match="vLLM serves LoRA adapters only"):
        adapter_rank(tmp_path)


def test_without_vllm_a_submission_warns_and_decodes_with_transformers(tiny_model):
    """A Kaggle kernel whose recipe says vllm but whose wheels are missing still answers, and says why."""
    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed here: the engine loads (tests/test_engine_vllm.py)")
    except ImportError:
        pass
    with pytest.warns(UserWarning, match="make vllm"):
        model, tokenizer = load_submission_model(
            str(tiny_model), engine="vllm", engine_options={"max_model_len": 512}
        )
    assert not isinstance(model, Engine) and hasattr(model, "generate")
    assert tokenizer.eos_token_id is not None


def test_the_engines_benchmark_says_why_it_is_skipped_without_a_vllm_environment(monkeypatch, tmp_path):
    sys.path.insert(0, str(REPO))
    import benchmarks.bench_engines as bench_engines
    from benchmarks import run

    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed here: the benchmark measures in this process")
    except ImportError:
        pass
    monkeypatch.setattr(bench_engines, "VLLM_PYTHON", tmp_path / "no-venv" / "bin" / "python")
    with pytest.raises(bench_engines.Skipped, match="make vllm"):
        bench_engines.bench_engines()
    assert run.BENCHMARKS["engines"](True, None) is None  # `make bench` goes on to the next one
