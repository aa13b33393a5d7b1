"""The memory plan: calibrated on the H100's measured figures, and refusing what cannot fit with the knob to turn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from utils.memory import (
    Card,
    MemoryPlanError,
    architecture,
    generation_plan,
    known_config,
    model_config,
    parse_card,
    print_plans,
    training_plan,
)

MEASURED = json.loads((Path(__file__).resolve().parents[1] / "benchmarks/results/gpu_7b.json").read_text())
H100 = Card("H100")
TOLERANCE = 0.15  # the plan's promise against benchmarks/gpu_7b.py's peak allocated memory


@pytest.fixture(scope="module")
def deepseek():
    return architecture(known_config("deepseek-ai/deepseek-math-7b-rl"))


def close(estimate_gib: float, measured_gib: float) -> bool:
    return abs(estimate_gib - measured_gib) <= TOLERANCE * measured_gib


def test_deepseek_math_7b_counts_match_its_published_size(deepseek):
    assert deepseek.params == 6_910_365_696  # what the H100 run built from the same config
    assert deepseek.lora_params(16) == MEASURED["phases"]["train_lora_bf16"]["trainable_params"]


@pytest.mark.parametrize(
    ("phase", "quantization"), [("train_lora_bf16", "none"), ("train_qlora_nf4_dq", "4bit")]
)
def test_training_estimate_within_15_percent_of_the_h100(deepseek, phase, quantization):
    measured = MEASURED["phases"][phase]
    plan = training_plan(deepseek, H100, quantization=quantization, lora_r=16, batch_size=measured["batch"],
                         max_length=measured["seq_len"], checkpointing=True)  # fmt: skip
    assert close(plan.total_gib, measured["peak_alloc_gib"]), (plan, measured["peak_alloc_gib"])


def test_padded_batch_estimate_within_15_percent(deepseek):
    padded = MEASURED["phases"]["packed_vs_padded"]
    plan = training_plan(deepseek, H100, lora_r=16, batch_size=8, max_length=max(padded["lengths"]))
    assert close(plan.total_gib, padded["padded"]["peak_alloc_gib"]), plan


@pytest.mark.parametrize(
    ("phase", "quantization", "samples"),
    [("infer_bf16", "none", 1), ("infer_int8", "8bit", 1), ("infer_nf4_dq", "nf4-dq", 1), ("infer_nf4", "nf4", 1),
     ("generation_batched_vs_sequential", "none", 8)],
)  # fmt: skip
def test_generation_estimate_within_15_percent(deepseek, phase, quantization, samples):
    shapes = MEASURED["meta"]["shapes"]
    plan = generation_plan(deepseek, H100, quantization=quantization, in_flight=samples,
                           prompt_tokens=shapes["prompt_len"], new_tokens=shapes["new_tokens"])  # fmt: skip
    measured = MEASURED["phases"][phase]
    peak = measured.get("gen_peak_alloc_gib") or measured["batched_peak_alloc_gib"]
    assert close(plan.total_gib, peak), (plan, peak)


def test_full_fine_tuning_of_a_7b_on_t4s_is_refused_naming_the_knob(deepseek):
    plan = training_plan(deepseek, parse_card("2xT4"), lora_r=None, batch_size=1, max_length=1024)
    assert not plan.fits
    with pytest.raises(MemoryPlanError, match="use LoRA"):
        plan.require_fit()


def test_a_batch_too_large_names_batch_size_and_quantization(deepseek):
    plan = training_plan(deepseek, parse_card("T4"), lora_r=16, batch_size=16, max_length=2048)
    with pytest.raises(MemoryPlanError, match=r"BATCH_SIZE.*QUANTIZATION='4bit'"):
        plan.require_fit()
    qlora = training_plan(
        deepseek, parse_card("T4"), quantization="4bit", lora_r=16, batch_size=1, max_length=1024
    )
    assert qlora.fits  # QLoRA on one T4: the 2xT4 recipe's premise


def test_too_many_samples_name_samples_and_new_tokens(deepseek):
    plan = generation_plan(deepseek, parse_card("T4"), in_flight=64, new_tokens=4096)
    with pytest.raises(MemoryPlanError, match="SAMPLES.*MAX_NEW_TOKENS"):
        plan.require_fit()


def test_a_notebook_stops_before_loading_when_its_parameters_cannot_fit(capsys):
    values = {"QUANTIZATION": "none", "LORA_R": 16, "TARGET_MODULES": "all-linear", "BATCH_SIZE": 32,
              "MAX_LENGTH": 4096}  # fmt: skip
    with pytest.raises(MemoryPlanError, match="BATCH_SIZE"):
        print_plans("02_lora_sft", values, "deepseek-ai/deepseek-math-7b-base", "T4")
    assert "DOES NOT FIT" in capsys.readouterr().out


def test_cards_parse_and_cpu_never_refuses(tiny_model):
    assert parse_card("2xT4") == Card("T4", 2) and parse_card("4 x l4") == Card("L4", 4)
    with pytest.raises(ValueError, match="GPU"):
        parse_card("V100")
    tiny = architecture(model_config("tiny"))
    assert training_plan(tiny, Card("cpu"), lora_r=None, batch_size=10**4, max_length=10**4).fits


def test_qwen3_8b_has_grouped_query_attention():
    qwen = architecture(known_config("Qwen/Qwen3-8B"))
    assert 8.0e9 < qwen.params < 8.3e9 and qwen.kv_heads == 8 and qwen.head_dim == 128
