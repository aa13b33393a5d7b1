"""Parameter-efficient methods by name: peft's configs, our bottleneck adapters, and full fine-tuning.

peft has no Houlsby/Pfeiffer bottleneck adapters and the `adapters` package needs transformers 4, so
the bottleneck adapter is ours: after each decoder block's attention and MLP, a small down-projection,
a nonlinearity and an up-projection, added back to the block's output (a residual). The up-projection
starts at zero, so a freshly adapted model computes exactly what its base does. The adapters hang off
the base model through forward hooks: the base's own weight names stay unchanged, and only the
adapters' weights are saved (`save_bottleneck`) and loaded back onto a base (`load_bottleneck`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

BOTTLENECK_CONFIG = "bottleneck_config.json"
BOTTLENECK_WEIGHTS = "bottleneck_model.safetensors"
_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


@dataclass
class BottleneckConfig:
    """Where and how large the adapters are. `targets` names each decoder block's submodules whose
    output gets an adapter (Llama, Mistral, Qwen and DeepSeek call them `self_attn` and `mlp`)."""

    bottleneck_size: int = 16
    activation: str = "relu"
    scale: float = 1.0
    targets: tuple[str, ...] = ("self_attn", "mlp")
    init_std: float = 0.02
    base_model_name_or_path: str | None = None

    def __post_init__(self):
        if self.activation not in _ACTIVATIONS:
            raise ValueError(
                f"BottleneckConfig.activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}"
            )
        if self.bottleneck_size < 1:
            raise ValueError(f"BottleneckConfig.bottleneck_size must be >= 1, got {self.bottleneck_size}")
        self.targets = tuple(self.targets)


class BottleneckAdapter(nn.Module):
    """`x + scale * up(act(down(x)))`, with `up` zero-initialised: the identity until trained."""

    def __init__(self, hidden_size: int, config: BottleneckConfig, dtype: torch.dtype | None = None):
        super().__init__()
        self.down = nn.Linear(hidden_size, config.bottleneck_size, dtype=dtype)
        self.act = _ACTIVATIONS[config.activation]()
        self.up = nn.Linear(config.bottleneck_size, hidden_size, dtype=dtype)
        self.scale = config.scale
        nn.init.normal_(self.down.weight, std=config.init_std)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.up(self.act(self.down(x.to(self.down.weight.dtype)))).to(x.dtype)

    def hook(self, module, args, output):
        """A forward hook: adapt the target's output (the first element when it returns a tuple, as
        attention does: output and attention weights)."""
        if isinstance(output, tuple):
            return (self(output[0]), *output[1:])
        return self(output)


def _adapter_name(target: str) -> str:
    return f"bottleneck_{target}"


def decoder_layers(model) -> list[nn.Module]:
    """The decoder blocks: every module with an attention and an MLP child (found by name, so that any
    Llama-family model works without a per-architecture table)."""
    layers = [m for m in model.modules() if hasattr(m, "self_attn") and hasattr(m, "mlp")]
    if not layers:
        raise ValueError(f"{type(model).__name__}: no decoder block with `self_attn` and `mlp` children")
    return layers


def _float_dtype(module: nn.Module) -> torch.dtype:
    # A 4-bit base stores packed uint8 weights: take the dtype of a floating-point tensor (a norm's).
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def add_bottleneck_adapters(model, config: BottleneckConfig | None = None, freeze_base: bool = True):
    """Insert a bottleneck adapter after every target of every decoder block (in place) and, by default,
    freeze everything else. Returns the model; `model.bottleneck_config` records the config."""
    config = config or BottleneckConfig()
    if getattr(model, "bottleneck_config", None) is not None:
        raise ValueError("the model already has bottleneck adapters")
    if config.base_model_name_or_path is None:
        config.base_model_name_or_path = getattr(model.config, "_name_or_path", None)
    if freeze_base:
        for p in model.parameters():
            p.requires_grad_(False)
    hidden = model.config.hidden_size
    for i, layer in enumerate(decoder_layers(model)):
        device = next(layer.parameters()).device
        for target in config.targets:
            module = getattr(layer, target, None)
            if module is None:
                raise ValueError(f"decoder block {i} ({type(layer).__name__}) has no submodule {target!r}")
            adapter = BottleneckAdapter(hidden, config, dtype=_float_dtype(layer)).to(device)
            layer.add_module(_adapter_name(target), adapter)
            module.register_forward_hook(adapter.hook)
    model.bottleneck_config = config
    return model


def bottleneck_state_dict(model) -> dict[str, torch.Tensor]:
    """Only the adapters' weights, under the model's own parameter names."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if ".bottleneck_" in k}


def save_bottleneck(model, directory: str | Path) -> Path:
    """Write the adapters' config and weights (nothing of the base) to `directory`."""
    from safetensors.torch import save_file

    config = getattr(model, "bottleneck_config", None)
    if config is None:
        raise ValueError("the model has no bottleneck adapters (call add_bottleneck_adapters first)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / BOTTLENECK_CONFIG).write_text(json.dumps(asdict(config), indent=2) + "\n")
    save_file(bottleneck_state_dict(model), str(directory / BOTTLENECK_WEIGHTS))
    return directory


def load_bottleneck(base, directory: str | Path, trainable: bool = False):
    """Add the adapters saved in `directory` to `base` (in place) and load their weights."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path = directory / BOTTLENECK_CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing: not a bottleneck adapter folder")
    try:
        config = BottleneckConfig(**json.loads(config_path.read_text()))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{config_path}: bad bottleneck config ({e})") from None
    model = add_bottleneck_adapters(base, config, freeze_base=True)
    weights = load_file(str(directory / BOTTLENECK_WEIGHTS))
    missing = set(bottleneck_state_dict(model)) - set(weights)
    unexpected = set(weights) - set(bottleneck_state_dict(model))
    if missing or unexpected:
        raise ValueError(
            f"{directory / BOTTLENECK_WEIGHTS}: does not fit this model "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    model.load_state_dict(weights, strict=False)
    for name, p in model.named_parameters():
        p.requires_grad_(trainable and ".bottleneck_" in name)
    return model


# ---------------------------------------------------------------- the registry of methods


@dataclass(frozen=True)
class Method:
    """A method by name: its family (which sets its learning rate), what it wraps the model with, and
    whether prompt-style virtual tokens make packed batches wrong for it."""

    name: str
    family: str
    kind: str  # "peft" (a peft config), "bottleneck" (ours), "full" (every weight trains)
    build: Callable[..., object] = field(repr=False)
    packing: bool = True
    quantization: str = "none"
    description: str = ""


def _lora(**kw):
    from peft import LoraConfig

    kw = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear"} | kw
    return LoraConfig(task_type="CAUSAL_LM", **kw)


def _ia3(**kw):
    from peft import IA3Config

    return IA3Config(task_type="CAUSAL_LM", **kw)


def _loha(**kw):
    from peft import LoHaConfig

    return LoHaConfig(task_type="CAUSAL_LM", **({"r": 8, "alpha": 16, "target_modules": "all-linear"} | kw))


def _lokr(**kw):
    from peft import LoKrConfig

    return LoKrConfig(task_type="CAUSAL_LM", **({"r": 8, "alpha": 16, "target_modules": "all-linear"} | kw))


def _vera(**kw):
    from peft import VeraConfig

    return VeraConfig(task_type="CAUSAL_LM", **({"r": 64, "target_modules": "all-linear"} | kw))


def _prefix(**kw):
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(task_type="CAUSAL_LM", **({"num_virtual_tokens": 16} | kw))


def _prompt(**kw):
    from peft import PromptTuningConfig

    return PromptTuningConfig(task_type="CAUSAL_LM", **({"num_virtual_tokens": 16} | kw))


def _adaption_prompt(**kw):
    from peft import AdaptionPromptConfig

    return AdaptionPromptConfig(task_type="CAUSAL_LM", **({"adapter_len": 16, "adapter_layers": 2} | kw))


def _bottleneck(**kw):
    return BottleneckConfig(**kw)


def _full(**kw):
    if kw:
        raise ValueError(f"full fine-tuning takes no options, got {sorted(kw)}")
    return None


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("lora", "lora", "peft", _lora, description="low-rank update BA on every linear layer"),
        Method(
            "rslora",
            "lora",
            "peft",
            lambda **kw: _lora(use_rslora=True, **kw),
            description="LoRA scaled by alpha/sqrt(r) instead of alpha/r",
        ),
        Method(
            "dora",
            "lora",
            "peft",
            lambda **kw: _lora(use_dora=True, **kw),
            description="LoRA on the direction, a learned magnitude per column",
        ),
        Method("qlora", "lora", "peft", _lora, quantization="4bit", description="LoRA on a 4-bit NF4 base"),
        Method(
            "ia3", "ia3", "peft", _ia3, description="learned rescaling of keys, values and MLP activations"
        ),
        Method("loha", "lycoris", "peft", _loha, description="low-rank Hadamard product update"),
        Method("lokr", "lycoris", "peft", _lokr, description="low-rank Kronecker product update"),
        Method(
            "vera",
            "vera",
            "peft",
            _vera,
            description="frozen shared random matrices, trained scaling vectors",
        ),
        Method(
            "prefix",
            "prompt",
            "peft",
            _prefix,
            packing=False,
            description="trained keys/values in every layer",
        ),
        Method("prompt", "prompt", "peft", _prompt, packing=False, description="trained input embeddings"),
        Method(
            "adaption_prompt",
            "prompt",
            "peft",
            _adaption_prompt,
            packing=False,
            description="LLaMA-Adapter: gated prompts in the top layers",
        ),
        Method(
            "bottleneck",
            "bottleneck",
            "bottleneck",
            _bottleneck,
            description="down/up projection after attention and MLP (ours)",
        ),
        Method("full", "full", "full", _full, description="every weight trains: the reference"),
    ]
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def build_method_config(name: str, **options):
    """The method's config with `options` overriding its defaults: a peft config, a
    `BottleneckConfig`, or None (full fine-tuning)."""
    return get_method(name).build(**options)


def apply_method(model, name: str, **options):
    """Prepare `model` for training with method `name`. Returns `(model, peft_config)`: pass both to
    `train_sft`, which applies a peft config itself; our adapters and full fine-tuning are applied here."""
    method = get_method(name)
    config = method.build(**options)
    if method.kind == "bottleneck":
        return add_bottleneck_adapters(model, config), None
    if method.kind == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model, None
    return model, config


def _repoint_adaption_prompt():
    """TRL patches the base model's `forward` with its fused LM head after wrapping it with peft, but
    peft's LLaMA-Adapter wrapper kept a reference to the old `forward` (and so returns logits where TRL
    expects log-probabilities): point the wrapper at the patched one when training starts."""
    from transformers import TrainerCallback

    class RepointAdaptionPrompt(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            wrapper = getattr(model, "base_model", None)
            inner = getattr(wrapper, "model", None)
            if inner is not None and "forward" in vars(wrapper):
                wrapper.forward = inner.forward

    return RepointAdaptionPrompt()


def training_callbacks(name: str) -> tuple:
    """Trainer callbacks a method needs to train under TRL (pass them to `train_sft`)."""
    return (_repoint_adaption_prompt(),) if get_method(name).name == "adaption_prompt" else ()


def save_method(model, directory: str | Path) -> Path:
    """Save what the method trained: a peft adapter, our bottleneck adapters, or the whole model."""
    if getattr(model, "bottleneck_config", None) is not None:
        return save_bottleneck(model, directory)
    model.save_pretrained(str(directory))
    return Path(directory)
