"""The project's bottleneck adapter, which peft lacks, and saving what any method trained.

peft has no Houlsby/Pfeiffer bottleneck adapters and the `adapters` package needs transformers 4, so
the bottleneck adapter is ours: after each decoder block's attention and MLP, a small down-projection,
a nonlinearity and an up-projection, added back to the block's output (a residual). The up-projection
starts at zero, so a freshly adapted model computes exactly what its base does. The adapters hang off
the base model through forward hooks: the base's own weight names stay unchanged, and only the
adapters' weights are saved (`save_bottleneck`) and loaded back onto a base (`load_bottleneck`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
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


def save_method(model, directory: str | Path) -> Path:
    """Save what the method trained: a peft adapter, our bottleneck adapters, or the whole model."""
    if getattr(model, "bottleneck_config", None) is not None:
        return save_bottleneck(model, directory)
    model.save_pretrained(str(directory))
    return Path(directory)
