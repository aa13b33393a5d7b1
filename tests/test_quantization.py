"""Quantized inference: variants load and generate, memory falls with bits, merging is exact only in 16 bits."""

from __future__ import annotations

import json

import pytest
import torch

from utils.generation import GenerationConfig, sample_reasoning
from utils.modeling import load_model
from utils.quantization import (
    VARIANTS,
    Choice,
    agreement,
    compare_variants,
    free_memory,
    gpu_reference,
    load_choice,
    load_variant,
    logit_shift,
    logits_for,
    merge_adapter,
    merge_shift,
    read_choice,
    save_choice,
    weight_memory,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning"),
]

TEXTS = ["User: Tom has 3 apples and buys 4 more. How many apples?\n\nAssistant: 3 + 4 = 7", "5 * 6 = 30"]


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory):
    """A LoRA adapter with random (not zero) B matrices, so that merging changes the weights."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_model(str(tiny_model))
    torch.manual_seed(0)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, config)
    folder = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def merged(adapter, tmp_path_factory):
    return merge_adapter(adapter, tmp_path_factory.mktemp("merged") / "model")


def _generates(model, tokenizer) -> bool:
    samples = sample_reasoning(
        model,
        tokenizer,
        ["User: What is 2 + 3?\n\nAssistant:"] * 2,
        GenerationConfig(max_new_tokens=4, batch_size=2),
    )
    return all(s[0].new_tokens > 0 for s in samples)


def test_every_variant_loads_generates_and_weight_memory_falls_with_bits(merged):
    import bitsandbytes as bnb

    memory, layer_types = {}, {}
    for variant in VARIANTS:
        model, tokenizer = load_variant(variant, merged)
        memory[variant] = weight_memory(model)
        q_proj = model.model.layers[0].self_attn.q_proj
        layer_types[variant] = type(q_proj)
        if variant in ("nf4", "fp4", "nf4-dq"):
            assert q_proj.weight.quant_state.quant_type == variant[:3]
            assert q_proj.weight.quant_state.nested == (variant == "nf4-dq")
        assert _generates(model, tokenizer), variant
        del model
        free_memory()
    assert layer_types["16bit"] is torch.nn.Linear
    assert layer_types["8bit"] is bnb.nn.Linear8bitLt and layer_types["nf4"] is bnb.nn.Linear4bit
    total = {v: m["weight_bytes"] for v, m in memory.items()}
    linear = {v: m["linear_bytes"] for v, m in memory.items()}
    assert total["16bit"] > total["8bit"] > total["nf4"] > total["nf4-dq"]
    assert total["fp4"] == total["nf4"]
    # the quantized layers themselves: int8 is a quarter of fp32 plus row scales, 4-bit about half of int8
    assert 3.5 < linear["16bit"] / linear["8bit"] <= 4
    assert 1.6 < linear["8bit"] / linear["nf4"] < 2
    assert all(m["footprint_bytes"] <= m["weight_bytes"] and m["adapter_bytes"] == 0 for m in memory.values())
    assert memory["16bit"]["linear_bytes"] == 4 * memory["16bit"]["per_layer_linear_bytes"]  # 4 layers


def test_separate_adapter_sits_on_the_quantized_base(adapter):
    import bitsandbytes as bnb

    model, tokenizer = load_variant("nf4", adapter_dir=adapter, deployment="separate")
    memory = weight_memory(model)
    base_layer = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(base_layer, bnb.nn.Linear4bit)
    assert memory["adapter_bytes"] > 0 and memory["linear_bytes"] > memory["adapter_bytes"]
    assert _generates(model, tokenizer)
    with pytest.raises(ValueError, match="adapter_dir"):
        load_variant("nf4", deployment="separate")
    with pytest.raises(ValueError, match="variant"):
        load_variant("3bit", adapter_dir=adapter)


def test_merging_is_exact_in_16_bits_and_shifts_logits_onto_a_4bit_base(adapter, merged):
    separate, tokenizer = load_variant("16bit", adapter_dir=adapter, deployment="separate")
    merged_model, _ = load_variant("16bit", merged)
    saved = logit_shift(logits_for(separate, tokenizer, TEXTS), logits_for(merged_model, tokenizer, TEXTS))
    assert saved["relative"] < 1e-5 and saved["top1_agreement"] == 1.0
    base, _ = load_model(
        str(json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"])
    )
    moved = logit_shift(logits_for(base, tokenizer, TEXTS), logits_for(merged_model, tokenizer, TEXTS))
    assert moved["max_abs"] > 1e-2  # the adapter does change the model: the check above is not vacuous

    in_16bit = merge_shift(adapter, "16bit", TEXTS)
    onto_4bit = merge_shift(adapter, "nf4", TEXTS)
    assert in_16bit["max_abs"] < 1e-3 and in_16bit["relative"] < 1e-5  # float rounding only
    assert onto_4bit["relative"] > 1e-3 and onto_4bit["relative"] > 100 * in_16bit["relative"]


def test_compare_variants_measures_the_16bit_reference_first(merged, adapter):
    from utils.data import Problem

    problems = [
        Problem(
            id=f"p{i}",
            source="embedded",
            problem=f"What is {i} + 2?",
            solution=f"{i} + 2 = {i + 2}.",
            answer=i + 2,
            metadata={"kind": "mental"},
        )
        for i in range(3)
    ]
    reports = compare_variants(
        problems,
        merged,
        adapter,
        variants=("nf4",),
        deployments=("merged", "separate"),
        generation=GenerationConfig(max_new_tokens=4),
    )
    assert [(r.deployment, r.variant) for r in reports] == [
        ("merged", "16bit"),
        ("merged", "nf4"),
        ("separate", "nf4"),
    ]
    assert reports[0].agreement_with_16bit == 1.0 and len(reports[0].predictions) == 3
    for r in reports:
        m = r.metrics()
        assert "predictions" not in m and all(v is not None for v in m.values()), m
        assert r.new_tokens > 0 and r.latency_seconds > 0 and r.perplexity > 1 and m["weight_memory_mb"] > 0
    assert (
        reports[1].weight_bytes < reports[2].weight_bytes < reports[0].weight_bytes
    )  # the adapter costs memory


def test_agreement_compares_extracted_answers():
    assert agreement([1, 2, None, 4], [1, 3, None, 5]) == 0.5
    with pytest.raises(ValueError, match="equal lengths"):
        agreement([1], [1, 2])


def test_choice_round_trips_and_loads_the_chosen_variant(tmp_path, merged):
    import bitsandbytes as bnb

    path = save_choice(tmp_path, "nf4-dq", model_dir=str(merged), metrics={"accuracy": 0.5})
    choice = read_choice(tmp_path)
    assert choice == Choice(
        variant="nf4-dq", quantization="nf4-dq", model_dir=str(merged), metrics={"accuracy": 0.5}
    )
    assert json.loads(path.read_text())["quantization"] == "nf4-dq"
    model, tokenizer, loaded = load_choice(tmp_path)
    assert loaded == choice and isinstance(model.model.layers[0].mlp.down_proj, bnb.nn.Linear4bit)
    assert _generates(model, tokenizer)

    save_choice(tmp_path, "16bit")
    assert (
        read_choice(tmp_path).quantization == "none"
        and read_choice(tmp_path).model_path(tmp_path) == tmp_path / "model"
    )
    bad = json.loads(path.read_text()) | {"quantization": "8bit"}
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"choice\.json: field 'variant'"):
        read_choice(tmp_path)
    path.write_text(json.dumps(bad | {"quantization": "none", "model_dir": 3}))
    with pytest.raises(ValueError, match="field 'model_dir'"):
        read_choice(tmp_path)
    path.write_text('{"variant": "16bit",\n oops}')
    with pytest.raises(ValueError, match=r"choice\.json:2"):
        read_choice(tmp_path)
    with pytest.raises(FileNotFoundError, match="notebook 04"):
        read_choice(tmp_path / "nowhere")


def test_gpu_reference_reads_the_h100_figures():
    rows = {r["variant"]: r for r in gpu_reference()}
    assert set(rows) == {"16bit (bf16)", "8bit", "nf4", "fp4", "nf4-dq"}
    footprint = [rows[v]["footprint_gib"] for v in ("16bit (bf16)", "8bit", "nf4")]
    assert footprint == sorted(footprint, reverse=True)
    assert rows["nf4-dq"]["allocated_after_load_gib"] < rows["nf4"]["allocated_after_load_gib"]
    assert rows["16bit (bf16)"]["tokens_per_s_warm"] > rows["16bit (bf16)"]["tokens_per_s"]
    assert gpu_reference("/nonexistent/gpu.json") == []
