"""The embedded model: built deterministically, cached atomically, with the skills the series relies on."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from utils.modeling import (
    TinyModelConfig,
    adapter_base,
    adapter_base_model,
    load_adapter,
    load_model,
    pick_dtype,
    quantization_config,
    resolve_model,
    tiny_model_path,
)
from utils.prompts import DEEPSEEK_CHAT_TEMPLATE, build_prompt

pytestmark = pytest.mark.slow


def test_tiny_model_is_a_llama_with_deepseek_chat_format(tiny_model):
    model, tokenizer = load_model(str(tiny_model))
    assert model.config.model_type == "llama"
    assert model.config.num_key_value_heads == model.config.num_attention_heads  # no GQA, as DeepSeek-Math-7B
    assert tokenizer.chat_template == DEEPSEEK_CHAT_TEMPLATE
    prompt = build_prompt(tokenizer, "What is 2 + 3?")
    assert prompt.startswith(tokenizer.bos_token + "User: What is 2 + 3?\nPlease reason step by step")
    assert prompt.endswith("\n\nAssistant:")
    # digits are split one per token, as in Llama and DeepSeek tokenizers
    assert [t for t in tokenizer.tokenize("123") if t.strip("Ġ")] == ["1", "2", "3"]


def test_tiny_model_has_some_single_digit_facts_but_no_big_products(tiny_model):
    """Its 'real but limited skill': most single-digit facts, no 3-digit by 2-digit products."""
    model, tokenizer = load_model(str(tiny_model))
    small = [(a, b) for a in range(2, 10) for b in range(1, 10)][::3]
    big = [(347, 28), (512, 64), (999, 11), (123, 45), (808, 77)]

    def correct(pairs, op):
        prompts = [f"{tokenizer.eos_token}Compute {a} {op} {b}. {a} {op} {b} =" for a, b in pairs]
        tokenizer.padding_side = "left"
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=7, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        truth = [a + b if op == "+" else a * b for a, b in pairs]
        return sum(t.strip().startswith(str(v)) for t, v in zip(texts, truth, strict=False)) / len(pairs)

    assert (
        correct(small, "+") >= 0.15
    )  # some facts (chance is about 0.05), no big products: fine-tuning does the rest
    assert correct(big, "*") == 0.0


def test_cache_is_reused_and_named_by_config(tiny_model, tmp_path):
    assert tiny_model_path(progress=False) == tiny_model
    report = json.loads((tiny_model / "pretraining.json").read_text())
    assert report["steps"] == TinyModelConfig().max_steps
    assert report["final_loss"] < report["first_loss"] / 3
    assert resolve_model("tiny") == str(tiny_model)
    assert TinyModelConfig(seed=1).key() != TinyModelConfig().key()


def test_a_failed_build_leaves_no_cache_behind(tmp_path, monkeypatch):
    import utils.modeling as modeling

    def broken(*args, **kwargs):
        raise RuntimeError("power cut")

    monkeypatch.setattr(modeling, "build_tiny_model", broken)
    with pytest.raises(RuntimeError, match="power cut"):
        tiny_model_path(TinyModelConfig(seed=123), cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_dtype_and_quantization_follow_the_hardware():
    assert pick_dtype("cpu") == torch.float32
    assert quantization_config("none") is None
    q4 = quantization_config("4bit", torch.float16)
    assert q4.load_in_4bit and q4.bnb_4bit_quant_type == "nf4" and q4.bnb_4bit_use_double_quant
    assert q4.bnb_4bit_compute_dtype == torch.float16
    assert quantization_config("fp4").bnb_4bit_quant_type == "fp4"
    assert not quantization_config("nf4").bnb_4bit_use_double_quant
    assert quantization_config("8bit").load_in_8bit
    with pytest.raises(ValueError, match="QUANTIZATION"):
        quantization_config("3bit")


def test_four_bit_base_loads_on_cpu(tiny_model):
    model, _ = load_model(str(tiny_model), "4bit")
    import bitsandbytes as bnb

    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def test_adapter_folder_is_recognized(tmp_path):
    assert adapter_base(str(tmp_path)) is None
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/models/base"}))
    assert adapter_base(str(tmp_path)) == "/models/base"


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory):
    """A saved LoRA adapter with random (not zero) B matrices, so that it changes the model's output."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_model(str(tiny_model))
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    folder = tmp_path_factory.mktemp("adapter")
    get_peft_model(model, config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_an_adapter_loads_one_way_frozen_for_inference_trainable_to_go_on_training(adapter, tiny_model):
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    frozen, tokenizer = load_adapter(adapter)
    via_load_model, _ = load_model(str(adapter))
    base, _ = load_model(str(tiny_model))
    with torch.no_grad():
        logits = frozen(input_ids=ids).logits
        assert torch.equal(logits, via_load_model(input_ids=ids).logits), (
            "load_model(adapter) is load_adapter"
        )
        assert not torch.allclose(logits, base(input_ids=ids).logits), "the adapter is on the base"
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    assert tokenizer.pad_token is not None
    trainable, _ = load_adapter(adapter, trainable=True)
    grads = {n for n, p in trainable.named_parameters() if p.requires_grad}
    assert grads and all("lora_" in n for n in grads), "only the adapter's weights train"


def test_the_recorded_base_wins_unless_it_is_missing_here(adapter, tiny_model, tmp_path):
    recorded = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert adapter_base_model(adapter, "some/other-model") == recorded == str(tiny_model)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/elsewhere/model"}))
    assert adapter_base_model(tmp_path, "tiny") == "tiny"
    assert adapter_base_model(tmp_path) == "/elsewhere/model"
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        adapter_base_model(tmp_path / "nothing")
    moved = tmp_path / "moved"  # an adapter trained where its base sat at another path (Kaggle)
    shutil.copytree(adapter, moved)
    config = json.loads((moved / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "/elsewhere"})
    )
    model, _ = load_adapter(moved, base=str(tiny_model))
    assert model.get_base_model().config.model_type == "llama"
