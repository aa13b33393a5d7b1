"""Our bottleneck adapters (identity at init, only they train, save/load exact) and every experiment folder of notebook 03."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from utils.adapters import (
    BOTTLENECK_WEIGHTS,
    BottleneckAdapter,
    BottleneckConfig,
    add_bottleneck_adapters,
    load_bottleneck,
    save_bottleneck,
    save_method,
)

HIDDEN, LAYERS, BOTTLENECK = 32, 2, 4


def _llama(layers: int = LAYERS):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def _logits(model, seed: int = 1):
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(input_ids=ids).logits


def _perturb(model):
    """Give the zero-initialised up-projections random values, as training would."""
    gen = torch.Generator().manual_seed(3)
    for name, p in model.named_parameters():
        if ".bottleneck_" in name and ".up." in name:
            p.data = torch.randn(p.shape, generator=gen) * 0.5


def test_adapter_shapes_and_identity_at_init():
    adapter = BottleneckAdapter(HIDDEN, BottleneckConfig(bottleneck_size=BOTTLENECK))
    assert adapter.down.weight.shape == (BOTTLENECK, HIDDEN) and adapter.up.weight.shape == (
        HIDDEN,
        BOTTLENECK,
    )
    x = torch.randn(3, 5, HIDDEN)
    assert adapter(x).shape == x.shape
    torch.testing.assert_close(adapter(x), x, rtol=0, atol=0)
    torch.nn.init.normal_(adapter.up.weight)
    assert not torch.allclose(adapter(x), x)


def test_adapted_model_computes_the_base_at_init_and_differs_once_trained():
    base = _llama()
    expected = _logits(base)
    model = add_bottleneck_adapters(base, BottleneckConfig(bottleneck_size=BOTTLENECK))
    torch.testing.assert_close(_logits(model), expected, rtol=0, atol=0)
    _perturb(model)
    assert (_logits(model) - expected).abs().max() > 1e-3


def test_only_adapter_parameters_train_and_receive_gradients():
    model = add_bottleneck_adapters(_llama(), BottleneckConfig(bottleneck_size=BOTTLENECK))
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    per_adapter = (HIDDEN * BOTTLENECK + BOTTLENECK) + (BOTTLENECK * HIDDEN + HIDDEN)
    assert all(".bottleneck_" in n for n in trainable)
    assert sum(trainable.values()) == LAYERS * 2 * per_adapter  # after attention and after the MLP
    ids = torch.randint(0, 64, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None for n, g in grads.items() if ".bottleneck_" not in n)
    # The up-projection starts at zero but its gradient does not; every adapter of every layer gets one.
    ups = [g for n, g in grads.items() if ".up.weight" in n]
    assert len(ups) == LAYERS * 2 and all(g is not None and g.abs().sum() > 0 for g in ups)


def test_save_then_load_gives_identical_logits(tmp_path):
    base = _llama()
    fresh = copy.deepcopy(base)
    model = add_bottleneck_adapters(base, BottleneckConfig(bottleneck_size=BOTTLENECK, activation="gelu"))
    _perturb(model)
    expected = _logits(model)
    save_bottleneck(model, tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter" / BOTTLENECK_WEIGHTS)
    assert saved and all(".bottleneck_" in k for k in saved)  # nothing of the base
    loaded = load_bottleneck(fresh, tmp_path / "adapter")
    assert loaded.bottleneck_config.activation == "gelu"
    torch.testing.assert_close(_logits(loaded), expected, rtol=0, atol=0)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_loading_onto_a_different_model_names_the_file(tmp_path):
    model = add_bottleneck_adapters(_llama(), BottleneckConfig(bottleneck_size=BOTTLENECK))
    save_bottleneck(model, tmp_path)
    with pytest.raises(ValueError, match=BOTTLENECK_WEIGHTS):
        load_bottleneck(_llama(layers=3), tmp_path)
    with pytest.raises(FileNotFoundError, match="bottleneck_config.json"):
        load_bottleneck(_llama(), tmp_path / "missing")


def test_bad_config_and_double_insertion_are_refused():
    with pytest.raises(ValueError, match="activation"):
        BottleneckConfig(activation="swishy")
    model = add_bottleneck_adapters(_llama())
    with pytest.raises(ValueError, match="already"):
        add_bottleneck_adapters(model)
    with pytest.raises(ValueError, match="no_such"):
        add_bottleneck_adapters(_llama(), BottleneckConfig(targets=("no_such",)))


EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments" / "03_adapter_comparison"
FOLDERS = sorted(p for p in EXPERIMENTS.glob("*/*") if p.is_dir())


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_experiment_folder_wraps_a_llama_trains_a_share_of_it_and_saves(folder, tmp_path):
    """Each of notebook 03's folders, on a toy Llama: the method applies, a backward pass is finite, and
    what it trains (everything for full fine-tuning, an adapter beside a frozen base otherwise) saves to safetensors."""
    from peft import get_peft_model

    from utils.comparison import load_experiment

    exp = load_experiment(folder)
    base = _llama()
    total = sum(p.numel() for p in base.parameters())
    if exp.kind == "peft":
        model = get_peft_model(base, copy.deepcopy(exp.config))
    elif exp.kind == "bottleneck":
        model = add_bottleneck_adapters(base, copy.deepcopy(exp.config))
    else:
        model = base.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if exp.kind == "full":
        assert trainable == total
    else:  # the base stays frozen (on this toy model, hidden size 32, LoRA r=64 outgrows it)
        assert trainable > 0 and not model.get_input_embeddings().weight.requires_grad
    ids = torch.randint(0, 64, (2, 8))
    loss = model.train()(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    saved = save_method(model, tmp_path / exp.name)
    assert any(saved.glob("*.safetensors"))
