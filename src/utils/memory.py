"""The memory plan: the peak memory a notebook is about to need, printed before the work starts.

From a model's config (exact parameter counts from a model built on the `meta` device, as accelerate does,
so nothing is allocated), the quantization, the adapter and the batch, it adds up:

- weights: 2 bytes a parameter in bf16/fp16; LLM.int8 1 byte for the linear layers; nf4/fp4 half a byte
  plus the blockwise constants (one fp32 absmax per 64 weights; double quantization stores them in 8 bits).
  Embeddings, norms and `lm_head` stay in 16 bits, and `prepare_model_for_kbit_training` upcasts them to fp32;
- the adapter, its gradients and AdamW's two moments: 16 bytes a trainable parameter (fp32);
  full fine-tuning keeps fp32 weights, gradients and moments: 16 bytes a parameter;
- activations: with gradient checkpointing, each layer's input plus one layer recomputed at a time;
  without, every layer's intermediates; and the logits, upcast to fp32 for the loss with their gradient;
- for generation, the KV cache: 2 (keys, values) x layers x KV heads x head size x 2 bytes a token, for
  every sample in flight times (prompt + new tokens).

Calibrated on `benchmarks/gpu_7b.py`'s H100 figures for DeepSeek-Math-7B's architecture (LoRA r=16, 2048
tokens): the estimate is within 2% of the measured peak for bf16 LoRA, QLoRA and generation (see
`benchmarks/GPU.md` and `tests/test_memory.py`). A plan that cannot fit stops the notebook with the knob to turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

GIB = 2**30
CARD_GIB = {  # what torch reports as a card's total memory
    "T4": 14.7,  # 16 GB GDDR6; no bf16
    "P100": 15.9,  # 16 GB HBM2; no bf16
    "L4": 22.0,  # 24 GB
    "A100": 79.1,
    "H100": 79.1,  # 80 GB HBM3: AIMO 3's machine
    "H200": 139.8,
}
CARDS_WITHOUT_BF16 = frozenset({"T4", "P100"})
BIG_MODEL = 1_000_000_000  # parameters: above it, gradient checkpointing is on (utils.training) and recipes
# are checked against a real model's ranges
RESERVE_GIB = 0.8  # per card: the CUDA context, the allocator's fragmentation
LOGIT_BYTES_16BIT = 10  # per vocabulary entry and token: 16-bit logits, their fp32 upcast and its gradient
LOGIT_BYTES_FP32 = 12  # fp32 logits (an upcast lm_head), fp32 log-softmax, gradient


class MemoryPlanError(RuntimeError):
    """The plan cannot fit on the card; the message names the knob to turn."""


@dataclass(frozen=True)
class Card:
    """The hardware a plan is for: `count` cards of `name` ("cpu": the machine's RAM, never refused)."""

    name: str
    count: int = 1

    @property
    def capacity_gib(self) -> float:
        return CARD_GIB[self.name] * self.count if self.name in CARD_GIB else float("inf")

    def __str__(self) -> str:
        return self.name if self.count == 1 else f"{self.count}x{self.name}"


def parse_card(spec: str) -> Card:
    """ "T4", "2xT4", "4xL4", "H100", "cpu", or "auto" (the CUDA cards present, else the CPU)."""
    spec = spec.strip()
    if spec == "auto":
        return detect_card()
    m = re.fullmatch(r"(?:(\d+)\s*[xX]\s*)?([A-Za-z0-9]+)", spec)
    name = m and next((c for c in [*CARD_GIB, "cpu"] if c.lower() == m.group(2).lower()), None)
    if not name:
        raise ValueError(f"GPU {spec!r}: expected auto, cpu, or [Nx]{'|'.join(CARD_GIB)} (e.g. 2xT4)")
    return Card(name, int(m.group(1) or 1))


def detect_card() -> Card:
    import torch

    if not torch.cuda.is_available():
        return Card("cpu")
    full = torch.cuda.get_device_name(0)
    name = next((c for c in CARD_GIB if c in full.upper()), full)
    return Card(name, torch.cuda.device_count())


@dataclass(frozen=True)
class Architecture:
    """What memory depends on, read from a transformers config."""

    params: int  # all parameters
    linear_params: int  # in the decoder's linear layers (what bitsandbytes quantizes)
    layers: int
    hidden: int
    intermediate: int
    kv_heads: int
    head_dim: int
    vocab: int
    linear_shapes: dict = field(default_factory=dict)  # module name suffix -> (in, out), one layer's

    def lora_params(self, r: int, targets: str | list = "all-linear") -> int:
        """Trainable parameters of LoRA at rank r: r x (in + out) for every targeted linear layer."""
        names = list(self.linear_shapes) if targets == "all-linear" else _names(targets)
        return self.layers * sum(r * sum(self.linear_shapes[n]) for n in names if n in self.linear_shapes)


def _names(targets) -> list[str]:
    return [t.strip() for t in targets.split(",")] if isinstance(targets, str) else list(targets)


def architecture(config) -> Architecture:
    """Count parameters exactly on a model built on the `meta` device (no memory is allocated)."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    linear, shapes = 0, {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in name:
            linear += module.weight.numel()
            if ".layers.0." in name:
                shapes[name.rsplit(".", 1)[-1]] = (module.in_features, module.out_features)
    heads = config.num_attention_heads
    return Architecture(
        params=sum(p.numel() for p in model.parameters()),
        linear_params=linear,
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        intermediate=config.intermediate_size,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        vocab=config.vocab_size,
        linear_shapes=shapes,
    )


def weight_bytes(
    arch: Architecture, quantization: str, dtype_bytes: int = 2, kbit_training: bool = False
) -> int:
    """The base model's weights; `kbit_training`: `prepare_model_for_kbit_training` upcast the rest to fp32."""
    rest = arch.params - arch.linear_params
    per_linear = {"none": dtype_bytes, "8bit": 1.0, "4bit": 0.5 + 1 / 64 + 4 / (64 * 256)}
    per_linear |= {"nf4": 0.5 + 4 / 64, "fp4": 0.5 + 4 / 64, "nf4-dq": per_linear["4bit"]}
    if quantization not in per_linear:
        raise ValueError(f"quantization {quantization!r}: expected one of {sorted(per_linear)}")
    rest_bytes = 4 if (kbit_training and quantization != "none") else dtype_bytes
    return int(arch.linear_params * per_linear[quantization] + rest * rest_bytes)


@dataclass
class MemoryPlan:
    """The estimated peak, part by part, against what the card holds."""

    what: str
    card: Card
    parts: dict  # name -> bytes
    knobs: str  # what to turn when it does not fit

    @property
    def total_gib(self) -> float:
        return sum(self.parts.values()) / GIB

    @property
    def usable_gib(self) -> float:
        return self.card.capacity_gib - RESERVE_GIB * self.card.count

    @property
    def fits(self) -> bool:
        return self.total_gib <= self.usable_gib

    def __str__(self) -> str:
        parts = ", ".join(f"{k} {v / GIB:.2f}" for k, v in self.parts.items())
        room = (
            "no limit (CPU)"
            if self.card.name == "cpu"
            else f"{self.usable_gib:.1f} GiB usable on {self.card}"
        )
        verdict = "fits" if self.fits else "DOES NOT FIT"
        return f"memory plan ({self.what}): {self.total_gib:.2f} GiB peak [{parts}] against {room}: {verdict}"

    def require_fit(self) -> MemoryPlan:
        if not self.fits:
            biggest = max(self.parts, key=self.parts.get)
            raise MemoryPlanError(f"{self}. The largest part is {biggest}: {self.knobs}")
        return self


def training_plan(
    arch: Architecture,
    card: Card,
    *,
    quantization: str = "none",
    lora_r: int | None = 16,
    target_modules: str | list = "all-linear",
    batch_size: int = 1,
    max_length: int = 2048,
    checkpointing: bool = True,
    dtype_bytes: int = 2,
) -> MemoryPlan:
    """One training step's peak. `lora_r=None` is full fine-tuning (fp32 weights, gradients, moments)."""
    tokens = batch_size * max_length
    parts = {}
    if lora_r is None:
        parts["weights+gradients+AdamW (full)"] = 16 * arch.params
    else:
        parts["weights"] = weight_bytes(arch, quantization, dtype_bytes, kbit_training=True)
        parts["adapter+gradients+AdamW"] = 16 * arch.lora_params(lora_r, target_modules)
    parts["activations"] = tokens * _activation_bytes_per_token(arch, checkpointing, dtype_bytes)
    upcast = quantization != "none" or dtype_bytes == 4
    parts["logits"] = tokens * arch.vocab * (LOGIT_BYTES_FP32 if upcast else LOGIT_BYTES_16BIT)
    if quantization != "none":  # one layer's weights dequantized at a time for the matmuls
        parts["dequantized layer"] = 3 * arch.hidden * arch.intermediate * dtype_bytes
    knobs = (
        "lower BATCH_SIZE (raise GRAD_ACCUM to keep the batch) or MAX_LENGTH"
        + ("" if quantization != "none" else ", or set QUANTIZATION='4bit' (QLoRA)")
        + ("; full fine-tuning needs 16 bytes a parameter: use LoRA" if lora_r is None else "")
    )
    return MemoryPlan(f"training, {tokens} tokens a step", card, parts, knobs)


def _activation_bytes_per_token(arch: Architecture, checkpointing: bool, dtype_bytes: int) -> int:
    one_layer = (4 * arch.hidden + 3 * arch.intermediate) * dtype_bytes * 2  # outputs and their gradients
    if checkpointing:  # each layer's input is kept; one layer is recomputed at a time
        return arch.layers * arch.hidden * dtype_bytes + one_layer
    return arch.layers * one_layer


def generation_plan(
    arch: Architecture,
    card: Card,
    *,
    quantization: str = "none",
    in_flight: int = 1,
    prompt_tokens: int = 512,
    new_tokens: int = 1024,
    dtype_bytes: int = 2,
    adapter_params: int = 0,
) -> MemoryPlan:
    """Generating `in_flight` samples at once: the weights and the KV cache of every sample's full length."""
    kv_per_token = 2 * arch.layers * arch.kv_heads * arch.head_dim * dtype_bytes
    parts = {
        "weights": weight_bytes(arch, quantization, dtype_bytes) + adapter_params * dtype_bytes,
        "KV cache": in_flight * (prompt_tokens + new_tokens) * kv_per_token,
        "prefill": in_flight * prompt_tokens * (arch.hidden + arch.intermediate) * dtype_bytes,
    }
    knobs = "lower SAMPLES (or WAVE_SIZE, the samples generated at once) or MAX_NEW_TOKENS" + (
        ", or set QUANTIZATION='4bit'" if quantization == "none" else ""
    )
    what = f"generation, {in_flight} samples x {prompt_tokens}+{new_tokens} tokens"
    return MemoryPlan(what, card, parts, knobs)


# The architectures the recipes name, for a machine that cannot read their config.json (no hub here; on
# Kaggle the attached model's own config is read instead). Values from the models' published configs.
KNOWN_ARCHITECTURES = {
    "deepseek-math-7b": (  # base, instruct and rl share it: a Llama with full multi-head attention (no GQA)
        "llama",
        dict(num_hidden_layers=30, hidden_size=4096, num_attention_heads=32, num_key_value_heads=32,
             intermediate_size=11008, vocab_size=102400, max_position_embeddings=4096, rope_theta=10000.0,
             rms_norm_eps=1e-6, bos_token_id=100000, eos_token_id=100001, tie_word_embeddings=False),
    ),
    "qwen3-8b": (
        "qwen3",
        dict(num_hidden_layers=36, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
             head_dim=128, intermediate_size=12288, vocab_size=151936, max_position_embeddings=40960,
             rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False),
    ),
}  # fmt: skip


def known_config(model: str):
    """The transformers config of a model the recipes name, matched on its id or Kaggle handle."""
    from transformers import AutoConfig

    key = model.lower().replace("_", "-")
    for name, (model_type, values) in KNOWN_ARCHITECTURES.items():
        if name in key or name.replace("-", "") in key.replace("-", ""):
            return AutoConfig.for_model(model_type, **values)
    return None


def model_config(model: str):
    """`model`'s config: its own config.json where the model is on this machine, else a known one."""
    from transformers import AutoConfig

    from utils.modeling import resolve_model

    path = resolve_model(model)
    if (Path(path) / "config.json").is_file():
        return AutoConfig.from_pretrained(path)
    config = known_config(model)  # before the hub: no network is needed for the models the recipes name
    if config is not None:
        return config
    try:
        return AutoConfig.from_pretrained(path)
    except OSError:
        raise MemoryPlanError(
            f"no config for {model!r}: not on this machine, not known, hub unreachable"
        ) from None


def notebook_plans(notebook: str, values: dict, arch: Architecture, card: Card) -> list[MemoryPlan]:
    """The plans for a notebook's work, from its parameter values (the notebooks' cells and the recipe checks)."""
    dtype_bytes = 4 if card.name == "cpu" else 2  # fp32 on a CPU; fp16 or bf16 on a card
    quant = str(values.get("QUANTIZATION", "none"))
    if notebook == "02_lora_sft":
        return [
            training_plan(arch, card, quantization=quant, lora_r=int(values["LORA_R"]),
                          target_modules=values["TARGET_MODULES"], batch_size=int(values["BATCH_SIZE"]),
                          max_length=int(values["MAX_LENGTH"]), checkpointing=arch.params > BIG_MODEL, dtype_bytes=dtype_bytes)
        ]  # fmt: skip
    if notebook == "03_adapter_comparison":
        full = values.get("METHODS") == "all" or "full" in str(values.get("METHODS", "")).split(",")
        return [
            training_plan(arch, card, lora_r=None if full else 16, batch_size=int(values["BATCH_SIZE"]),
                          max_length=int(values["MAX_LENGTH"]), checkpointing=arch.params > BIG_MODEL, dtype_bytes=dtype_bytes)
        ]  # fmt: skip
    if notebook == "04_quantized_inference":
        return [
            generation_plan(
                arch, card, in_flight=1, new_tokens=int(values["MAX_NEW_TOKENS"]), dtype_bytes=dtype_bytes
            )
        ]
    if notebook == "06_grpo":  # one forward pass holds PROMPTS_PER_STEP groups of NUM_GENERATIONS completions
        completions = int(values["PROMPTS_PER_STEP"]) * int(values["NUM_GENERATIONS"])
        new = int(values["MAX_COMPLETION_LENGTH"])
        return [
            training_plan(arch, card, quantization=quant, lora_r=16, batch_size=completions, max_length=512 + new,
                          checkpointing=arch.params > BIG_MODEL, dtype_bytes=dtype_bytes),
            generation_plan(arch, card, quantization=quant, in_flight=int(values.get("GENERATION_BATCH") or completions),
                            new_tokens=new, dtype_bytes=dtype_bytes),
        ]  # fmt: skip
    if notebook == "05_submission":
        new = int(values["MAX_NEW_TOKENS"]) * (1 + int(values.get("MAX_CODE_ROUNDS", 0)))
        return [
            generation_plan(
                arch,
                card,
                quantization=quant,
                in_flight=int(values["WAVE_SIZE"]),
                new_tokens=new,
                dtype_bytes=dtype_bytes,
            )
        ]
    return []


def print_plans(notebook: str, values: dict, model: str, gpu: str = "auto") -> list[MemoryPlan]:
    """What a notebook prints before its work starts; stops it (MemoryPlanError) if a plan cannot fit."""
    arch = architecture(model_config(model))
    plans = notebook_plans(notebook, values, arch, parse_card(gpu))
    for plan in plans:
        print(plan)
    for plan in plans:
        plan.require_fit()
    return plans
