"""The vLLM engine on the embedded model, against the transformers engine: `make test-vllm` runs these in the
vLLM environment (`make vllm` builds it); in the project's environment, which has no vLLM, they are skipped.

One vLLM engine serves the embedded model with LoRA enabled: the base alone, and a random LoRA adapter as a
request. Greedy decoding is compared token for token with transformers on the same prompts (both in fp32).
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip(
    "vllm",
    reason="vLLM is not installed in this environment: `make vllm` builds .venv-vllm, `make test-vllm` runs these",
)

from utils.engine_vllm import VLLMEngine, VLLMOptions, load_vllm, make_llm  # noqa: E402
from utils.generation import GenerationConfig, past, sample_reasoning, sample_with_tools  # noqa: E402
from utils.prompts import build_prompt  # noqa: E402
from utils.solver import Solver, SolverConfig, seed_for_problem  # noqa: E402
from utils.synthetic import generate_problems  # noqa: E402

GREEDY = GenerationConfig(max_new_tokens=48, scores=True)


@pytest.fixture(scope="module")
def adapter_dir(tiny_model, tmp_path_factory):
    """A LoRA adapter on the embedded model with random (non-zero) weights: it changes what the model says."""
    import torch
    from peft import LoraConfig, get_peft_model

    from utils.modeling import load_model

    torch.manual_seed(0)
    model, tokenizer = load_model(str(tiny_model), device="cpu")
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    path = tmp_path_factory.mktemp("adapter")
    get_peft_model(model, config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def engines(adapter_dir):
    """(base engine, adapter engine, tokenizer): `load_vllm` on the adapter serves it as a LoRA request; the
    same loaded engine without the request serves the base."""
    tuned, tokenizer = load_vllm(str(adapter_dir))
    assert tuned.lora_request is not None
    return tuned.with_lora(None), tuned, tokenizer


@pytest.fixture(scope="module")
def hf_models(tiny_model, adapter_dir):
    from utils.modeling import load_model

    return load_model(str(tiny_model), device="cpu")[0], load_model(str(adapter_dir), device="cpu")[0]


@pytest.fixture(scope="module")
def prompts(engines):
    tokenizer = engines[2]
    return [
        build_prompt(tokenizer, p.problem, "reasoning") for p in generate_problems(12, seed=0, split="bench")
    ]


def compute_prompts(tokenizer, n: int = 6) -> list[str]:
    """Raw prompts the base model continues with a program (it was pretrained on `Compute ...` snippets)."""
    return [f"{tokenizer.bos_token}Compute {10 + 7 * i} * {31 + 5 * i}.\n" for i in range(n)]


def texts(samples) -> list[str]:
    return [s.text for group in samples for s in group]


def test_loads_the_embedded_model_and_greedy_decoding_matches_transformers(engines, hf_models, prompts):
    base, _, tokenizer = engines
    got = sample_reasoning(base, tokenizer, prompts, GREEDY)
    want = sample_reasoning(hf_models[0], tokenizer, prompts, GREEDY)
    agree = sum(a == b for a, b in zip(texts(got), texts(want), strict=True))
    print(f"greedy texts equal to transformers': {agree}/{len(prompts)}")
    assert agree >= len(prompts) - 1  # fp32 on both sides: a rare near-tie may flip one token
    for (g,), (w,) in zip(got, want, strict=True):
        if g.text == w.text:
            assert g.new_tokens == w.new_tokens
            # the raw log-probabilities, as transformers gives them
            assert g.logprob == pytest.approx(w.logprob, abs=1e-3)


def test_sampling_is_deterministic_from_the_seed(engines, prompts):
    base, _, tokenizer = engines
    config = GenerationConfig(max_new_tokens=32, temperature=1.0, top_p=0.95)

    def draw(seed: int) -> list[str]:
        seed_for_problem("problem", seed)  # as the solver seeds each problem
        return texts(sample_reasoning(base, tokenizer, prompts[:2], config, n_samples=8))

    first = draw(0)
    assert draw(0) == first
    assert draw(1) != first
    assert len(set(first[:8])) > 1  # each sample has its own seed: a vote of copies would be worthless


def test_tool_rounds_run_code_and_feed_its_output_back(engines, hf_models):
    base, _, tokenizer = engines
    prompts = compute_prompts(tokenizer)
    got = sample_with_tools(base, tokenizer, prompts, GREEDY)
    want = sample_with_tools(hf_models[0], tokenizer, prompts, GREEDY)
    ran = [s for group in got for s in group if s.code_runs]
    assert len(ran) >= len(prompts) // 2, texts(got)
    for s in ran:  # the sandbox's real output follows the program, then the model went on
        assert s.code_runs[0]["stdout"].strip() in s.text.split("```output", 1)[1]
    assert texts(got) == texts(want)


def test_the_solver_votes_through_the_engine(engines, hf_models):
    base, _, tokenizer = engines
    problem = generate_problems(1, seed=3, split="bench")[0].problem
    config = SolverConfig(
        mode="mixed", samples=6, wave_size=2, max_new_tokens=40, temperature=0.8, weighted=True
    )
    first = Solver(base, tokenizer, config).solve(problem)
    again = Solver(base, tokenizer, config).solve(problem)
    assert first.samples == 6 or first.stopped_early
    assert sum(first.votes.values()) == sum(a is not None for a in first.answers)
    assert all(c is not None and 0 < c <= 1 for c in first.confidences)  # weighted: every sample scored
    assert (first.answer, first.outputs) == (again.answer, again.outputs)  # the problem's seed decides
    greedy = SolverConfig(mode="tools", samples=1, max_new_tokens=40)
    via_vllm = Solver(base, tokenizer, greedy).solve(problem, deadline=time.monotonic() + 60)
    via_hf = Solver(hf_models[0], tokenizer, greedy).solve(problem, deadline=time.monotonic() + 60)
    assert (via_vllm.answer, via_vllm.outputs) == (via_hf.answer, via_hf.outputs)


def test_the_deadline_stops_a_long_generation_in_time(engines):
    base, _, tokenizer = engines
    prompts = [tokenizer.bos_token + "Compute"] * 192
    config = GenerationConfig(max_new_tokens=400, temperature=1.0)
    seed_for_problem("long", 0)
    start = time.monotonic()
    full = sample_reasoning(base, tokenizer, prompts, config)
    full_seconds = time.monotonic() - start
    assert full_seconds > 0.5, "the uncut generation must be long enough to cut"
    seed_for_problem("long", 0)
    deadline = time.monotonic() + full_seconds / 4
    cut = sample_reasoning(base, tokenizer, prompts, config, deadline=deadline)
    late = time.monotonic() - deadline
    print(
        f"uncut: {full_seconds:.2f} s; cut at {full_seconds / 4:.2f} s, returned {late:+.3f} s after the deadline"
    )
    assert late < 0.5, f"returned {late:.2f} s after the deadline"
    assert all(s.timed_out for s in texts_of(cut))
    assert sum(s.new_tokens for s in texts_of(cut)) < sum(s.new_tokens for s in texts_of(full))
    for c, f in zip(texts_of(cut), texts_of(full), strict=True):  # the same seeds: cut samples are prefixes
        assert f.text.startswith(c.text)
    assert not base.llm.llm_engine.has_unfinished_requests()  # aborted, not left running
    assert sample_reasoning(base, tokenizer, prompts[:1], GREEDY)[0][0].new_tokens > 0  # usable after
    assert past(deadline)


def texts_of(samples):
    return [s for group in samples for s in group]


def test_a_deadline_already_past_returns_at_once(engines, prompts):
    base, _, tokenizer = engines
    out = sample_reasoning(base, tokenizer, prompts[:3], GREEDY, deadline=time.monotonic() - 1)
    assert [(s.text, s.timed_out) for s in texts_of(out)] == [("", True)] * 3


def test_the_adapter_served_as_a_lora_request_matches_peft(engines, hf_models, prompts):
    base, tuned, tokenizer = engines
    got = texts(sample_reasoning(tuned, tokenizer, prompts, GREEDY))
    want = texts(sample_reasoning(hf_models[1], tokenizer, prompts, GREEDY))
    agree = sum(a == b for a, b in zip(got, want, strict=True))
    print(f"LoRA request: greedy texts equal to peft's: {agree}/{len(prompts)}")
    assert agree >= len(prompts) - 1
    assert got != texts(sample_reasoning(base, tokenizer, prompts, GREEDY))  # the adapter is applied


def test_the_adapter_merged_first_serves_the_same(engines, adapter_dir, prompts):
    _, tuned, tokenizer = engines
    merged, _ = load_vllm(str(adapter_dir), options={"lora": "merge"})
    assert merged.lora_request is None
    got = texts(sample_reasoning(merged, tokenizer, prompts, GREEDY))
    want = texts(sample_reasoning(tuned, tokenizer, prompts, GREEDY))
    assert sum(a == b for a, b in zip(got, want, strict=True)) >= len(prompts) - 1


def test_an_engine_made_directly_takes_the_options(tiny_model):
    llm = make_llm(str(tiny_model), VLLMOptions(max_model_len=256, max_num_seqs=8))
    engine = VLLMEngine(llm)
    assert engine.max_model_len == 256
    assert llm.llm_engine.vllm_config.scheduler_config.max_num_seqs == 8


def test_the_engines_benchmark_measures_both_engines_on_the_same_work(tiny_model):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.bench_engines import EnginesBench, measure

    result = measure(EnginesBench(model=str(tiny_model), problems=1, repeats=1, samples=4, max_new_tokens=8))
    raw = result["raw"]
    assert raw["vllm"]["repeats"][0]["answers"] == raw["hf"]["repeats"][0]["answers"] == 4
    assert result["rows"][0]["metric"] == "answers per second" and result["rows"][0]["ratio"] > 0
    assert raw["greedy_agreement"]["prompts"] == 2
