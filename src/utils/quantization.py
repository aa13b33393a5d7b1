"""Quantized inference: deploy a LoRA adapter at 16, 8 or 4 bits, and measure what each choice costs.

Two ways to deploy an adapter on a quantized model:
- **merged**: merge the adapter into the 16-bit (fp32 on a CPU) base, save that model, and quantize it
  when loading. The adapter's update is folded in exactly; quantization then rounds the merged weights
  like any other model's.
- **separate**: quantize the base and keep the adapter's low-rank matrices beside it, in high precision.
  Exactly what QLoRA trains, at the price of extra matrix products at every step.

Merging *onto* a quantized base (`merge_and_unload` on a 4-bit model) is the wrong third way: peft
dequantizes each weight, adds the update and quantizes the sum again, so the rounding error of a fresh
quantization lands on top of the adapter's small update. `merge_shift` measures it.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from utils.data import Problem
from utils.generation import GenerationConfig, sample_reasoning
from utils.io import atomic_write_json
from utils.likelihood import completion_perplexity
from utils.modeling import (
    cpu_4bit_fallback,
    load_adapter,
    load_model,
    pick_dtype,
    quiet_peft_loading,
)
from utils.profiling import measure
from utils.prompts import build_prompt, solution_for

# Variant name -> `load_model` quantization. "16bit" is the hardware's 16-bit dtype (fp32 on a CPU).
VARIANTS = {"16bit": "none", "8bit": "8bit", "nf4": "nf4", "fp4": "fp4", "nf4-dq": "nf4-dq"}
DEPLOYMENTS = ("merged", "separate")
CHOICE_FILE = "choice.json"


def load_kind(variant: str) -> str:
    """The `load_model` quantization name of a variant (`16bit` -> `none`)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {variant!r}")
    return VARIANTS[variant]


# ---------------------------------------------------------------- loading


def merge_adapter(
    adapter_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    base: str | None = None,
    device: str | None = None,
) -> Path:
    """Merge a saved LoRA adapter into its full-precision base and save model + tokenizer to `out_dir`.

    `base` is used only when the adapter's recorded base is not on this machine. Written to a temporary
    folder and renamed, so a crash never leaves a half-saved model behind.
    """
    model, tokenizer = load_adapter(adapter_dir, "none", base, device)
    merged = model.merge_and_unload()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def load_variant(
    variant: str,
    merged_dir: str | os.PathLike | None = None,
    adapter_dir: str | os.PathLike | None = None,
    deployment: str = "merged",
    device: str | None = None,
    base: str | None = None,
):
    """(model, tokenizer) for one variant: the merged model quantized at load, or the quantized base with
    the adapter kept separate on top (`base`: see `adapter_base_model`)."""
    kind = load_kind(variant)
    if deployment not in DEPLOYMENTS:
        raise ValueError(f"deployment must be one of {DEPLOYMENTS}, got {deployment!r}")
    source = merged_dir if deployment == "merged" else adapter_dir
    if source is None:
        raise ValueError(
            f"the {deployment} deployment needs {'merged_dir' if deployment == 'merged' else 'adapter_dir'}"
        )
    if deployment == "separate":
        model, tokenizer = load_adapter(source, kind, base, device)
    else:
        with quiet_peft_loading():
            model, tokenizer = load_model(str(source), kind, device)
    if kind != "none":
        cpu_4bit_fallback(model)
    return model.eval(), tokenizer


def free_memory() -> None:
    """Return freed models' memory (call after `del model`, before loading the next one)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- weight memory


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _quant_tensors(param) -> list[torch.Tensor]:
    """The quantization constants stored beside a bitsandbytes weight (not parameters, so
    `get_memory_footprint` misses them): 4-bit block scales (themselves quantized with double quant) and
    code tables, or 8-bit row scales."""
    state = getattr(param, "quant_state", None)
    if state is not None:
        tensors = [state.absmax, state.code]
        if state.nested:
            tensors += [state.state2.absmax, state.state2.code, state.offset]
        return [t for t in tensors if isinstance(t, torch.Tensor)]
    scb = getattr(param, "SCB", None)
    return [scb] if isinstance(scb, torch.Tensor) else []


def _is_linear(module) -> bool:
    import bitsandbytes as bnb

    return isinstance(module, (torch.nn.Linear, bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))


def _decoder_layers(model):
    """The transformer blocks of a (possibly peft-wrapped) causal LM."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(getattr(inner, "model", inner), "layers", None)
    if layers is None:
        raise ValueError(f"cannot find the decoder layers of {type(inner).__name__}")
    return layers


def weight_memory(model) -> dict:
    """Bytes the weights take: every parameter and buffer plus bitsandbytes' quantization constants,
    each storage counted once. Also `footprint_bytes` (transformers' `get_memory_footprint`, which omits
    the constants), the decoder layers' linear weights in total and per layer (what quantization acts on;
    embeddings, `lm_head` and norms stay in high precision), and the separate adapter's share.

    Measure right after loading: on some CPUs bitsandbytes repacks 4-bit weights at the first call.
    """
    seen: set[int] = set()

    def count(tensors) -> int:
        total = 0
        for t in tensors:
            key = t.untyped_storage().data_ptr() if t.numel() else id(t)
            if key not in seen:
                seen.add(key)
                total += _tensor_bytes(t)
        return total

    params = list(model.parameters())
    adapter = sum(_tensor_bytes(p) for n, p in model.named_parameters() if "lora_" in n)
    total = count(params) + count(model.buffers()) + count(t for p in params for t in _quant_tensors(p))
    seen.clear()
    layers = _decoder_layers(model)
    linear = 0
    for module in layers.modules():
        if _is_linear(module):
            weights = [p for p in module.parameters(recurse=False)]
            linear += count(weights) + count(t for p in weights for t in _quant_tensors(p))
    footprint = model.get_memory_footprint() if hasattr(model, "get_memory_footprint") else total
    return {
        "weight_bytes": total,
        "footprint_bytes": int(footprint),
        "linear_bytes": linear,
        "per_layer_linear_bytes": linear // max(1, len(layers)),
        "adapter_bytes": adapter,
    }


# ---------------------------------------------------------------- perplexity, agreement, logits


def solution_perplexity(
    model, tokenizer, problems: list[Problem], mode: str = "reasoning", batch_size: int = 16
) -> float:
    """Perplexity of the held-out problems' worked solutions, formatted as in training (`mode="auto"`:
    each problem in the style it is trained in)."""
    from utils.evaluation import problem_modes

    pairs = [
        (build_prompt(tokenizer, p.problem, m), " " + solution.strip() + (tokenizer.eos_token or ""))
        for p, m in zip(problems, problem_modes(problems, mode), strict=True)
        if (solution := solution_for(p, m))
    ]
    return completion_perplexity(model, tokenizer, pairs, batch_size)


def agreement(predicted: list, reference: list) -> float:
    """Fraction of problems where two models' extracted answers are equal (both unreadable counts as equal:
    the variant behaves as the reference does)."""
    if len(predicted) != len(reference):
        raise ValueError(f"agreement needs equal lengths, got {len(predicted)} and {len(reference)}")
    return (
        sum(a == b for a, b in zip(predicted, reference, strict=True)) / len(reference) if reference else 0.0
    )


def logits_for(model, tokenizer, texts: list[str]) -> torch.Tensor:
    """Next-token logits at every real position of every text (padding dropped), in fp32, flattened."""
    tokenizer.padding_side = "right"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=True)
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(**enc.to(device)).logits.float()
    return logits[enc["attention_mask"].bool()].cpu()


def logit_shift(a: torch.Tensor, b: torch.Tensor) -> dict:
    """How far logits `b` are from `a`: max and mean absolute difference, the difference's norm relative
    to `a`'s, and how often the top token is the same."""
    diff = (a - b).abs()
    return {
        "max_abs": diff.max().item(),
        "mean_abs": diff.mean().item(),
        "relative": (torch.linalg.norm(a - b) / torch.linalg.norm(a)).item(),
        "top1_agreement": (a.argmax(-1) == b.argmax(-1)).float().mean().item(),
    }


def merge_shift(
    adapter_dir: str | os.PathLike,
    variant: str,
    texts: list[str],
    base: str | None = None,
    device: str | None = None,
) -> dict:
    """The logit shift `merge_and_unload` causes on a `variant` base: the adapter kept separate, against
    the same load merged in place. Zero up to float rounding on a 16-bit base; on a quantized base the
    merged weights are quantized afresh, and the shift is the damage done.

    The merge runs on a fresh load, before any forward call: on AVX512-BF16 CPUs bitsandbytes repacks
    4-bit weights at the first call, and peft's merge would then dequantize the repacked layout as garbage.
    """
    model, tokenizer = load_variant(
        variant, adapter_dir=adapter_dir, deployment="separate", device=device, base=base
    )
    separate = logits_for(model, tokenizer, texts)
    del model
    free_memory()
    model, tokenizer = load_variant(
        variant, adapter_dir=adapter_dir, deployment="separate", device=device, base=base
    )
    with warnings.catch_warnings():  # peft warns that this merge rounds: that is what we measure
        warnings.simplefilter("ignore", UserWarning)
        merged = model.merge_and_unload()
    if load_kind(variant) != "none":
        cpu_4bit_fallback(merged)
    shift = logit_shift(separate, logits_for(merged, tokenizer, texts))
    del merged
    free_memory()
    return shift


# ---------------------------------------------------------------- one variant, measured


@dataclass
class VariantReport:
    """Everything measured for one (variant, deployment)."""

    variant: str
    deployment: str
    quantization: str
    compute_dtype: str
    weight_bytes: int
    footprint_bytes: int
    linear_bytes: int
    per_layer_linear_bytes: int
    adapter_bytes: int
    load_seconds: float
    peak_memory_mb: float
    memory_kind: str
    generate_seconds: float
    seconds_per_problem: float
    latency_seconds: float
    new_tokens: int
    tokens_per_second: float
    accuracy: float
    by_kind: dict
    perplexity: float
    agreement_with_16bit: float = 1.0
    predictions: list = field(default_factory=list, repr=False)

    def metrics(self) -> dict:
        """All fields but the per-problem predictions, and the weight memory in MiB (for metrics.json)."""
        fields = {k: v for k, v in asdict(self).items() if k != "predictions"}
        return fields | {"weight_memory_mb": self.weight_bytes / 2**20}


def _warm_up(model, tokenizer, prompt: str) -> None:
    """One short call, so that lazy work (4-bit repacking, kernel selection) is not timed."""
    sample_reasoning(model, tokenizer, [prompt], GenerationConfig(max_new_tokens=2, batch_size=1))


def measure_variant(
    model,
    tokenizer,
    problems: list[Problem],
    mode: str = "reasoning",
    generation: GenerationConfig | None = None,
    reference: list | None = None,
    variant: str = "16bit",
    deployment: str = "merged",
    load_seconds: float = 0.0,
    latency_problems: int = 4,
) -> VariantReport:
    """Weight memory; generation on `problems` in batches (timed, peak memory sampled); the latency of one
    problem alone (batch 1, mean over the first `latency_problems`); accuracy, agreement with the
    `reference` predictions (None: this model is the reference), and perplexity of the worked solutions."""
    from utils.evaluation import generate_answers, problem_modes, score

    generation = generation or GenerationConfig()
    memory = weight_memory(model)  # before the first call: bitsandbytes may repack weights then
    _warm_up(
        model, tokenizer, build_prompt(tokenizer, problems[0].problem, problem_modes(problems[:1], mode)[0])
    )
    device = next(model.parameters()).device
    with measure(device) as m:
        samples = generate_answers(model, tokenizer, problems, mode, generation)
    alone = replace(generation, batch_size=1)
    with measure(device) as single:
        generate_answers(model, tokenizer, problems[:latency_problems], mode, alone)
    result = score(problems, [s.text for s in samples])
    predictions = [r["predicted"] for r in result.records]
    tokens = sum(s.new_tokens for s in samples)
    return VariantReport(
        variant=variant,
        deployment=deployment,
        quantization=load_kind(variant),
        compute_dtype=str(pick_dtype(device)).replace("torch.", ""),
        **memory,
        load_seconds=load_seconds,
        peak_memory_mb=m.peak_memory_mb,
        memory_kind=m.memory_kind,
        generate_seconds=m.seconds,
        seconds_per_problem=m.seconds / len(problems),
        latency_seconds=single.seconds / len(problems[:latency_problems]),
        new_tokens=tokens,
        tokens_per_second=tokens / m.seconds if m.seconds else 0.0,
        accuracy=result.accuracy,
        by_kind=result.by_kind,
        perplexity=solution_perplexity(model, tokenizer, problems, mode),
        agreement_with_16bit=agreement(predictions, predictions if reference is None else reference),
        predictions=predictions,
    )


def compare_variants(
    problems: list[Problem],
    merged_dir=None,
    adapter_dir=None,
    variants: tuple = tuple(VARIANTS),
    deployments: tuple = ("merged",),
    mode: str = "reasoning",
    generation: GenerationConfig | None = None,
    device: str | None = None,
    base: str | None = None,
) -> list[VariantReport]:
    """Load and measure every (deployment, variant), one model in memory at a time. The 16-bit model of
    the first deployment is always measured, first: it is the reference the others' answers are compared with."""
    import time

    reference = (deployments[0], "16bit")
    pairs = [reference] + [(d, v) for d in deployments for v in variants if (d, v) != reference]
    reports: list[VariantReport] = []
    for deployment, variant in pairs:
        start = time.perf_counter()
        model, tokenizer = load_variant(variant, merged_dir, adapter_dir, deployment, device, base)
        loaded = time.perf_counter() - start
        predictions = reports[0].predictions if reports else None
        reports.append(
            measure_variant(
                model, tokenizer, problems, mode, generation, predictions, variant, deployment, loaded
            )
        )
        del model
        free_memory()
    return reports


# ---------------------------------------------------------------- the choice notebook 05 reads


@dataclass
class Choice:
    """The model chosen for submission: a merged full-precision folder (`model_dir`, relative to the
    choice file) and the quantization to load it with (a `load_model` name: none, 8bit, nf4, ...)."""

    variant: str
    quantization: str
    model_dir: str = "model"
    deployment: str = "merged"
    adapter_dir: str | None = None
    metrics: dict = field(default_factory=dict)

    def model_path(self, folder: str | os.PathLike) -> Path:
        path = Path(self.model_dir)
        return path if path.is_absolute() else Path(folder) / path


def save_choice(
    folder: str | os.PathLike,
    variant: str,
    model_dir: str = "model",
    adapter_dir: str | None = None,
    metrics: dict | None = None,
) -> Path:
    """Write `folder/choice.json` naming the merged model folder and the variant to load it as."""
    choice = Choice(
        variant=variant,
        quantization=load_kind(variant),
        model_dir=str(model_dir),
        adapter_dir=str(adapter_dir) if adapter_dir else None,
        metrics=metrics or {},
    )
    return atomic_write_json(Path(folder) / CHOICE_FILE, asdict(choice))


def read_choice(folder: str | os.PathLike) -> Choice:
    """`folder/choice.json`, checked: errors name the file and the field."""
    path = Path(folder) / CHOICE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run notebook 04 first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    for key in ("variant", "quantization", "model_dir"):
        if not isinstance(data.get(key), str):
            raise ValueError(f"{path}: field {key!r} must be a string, got {data.get(key)!r}")
    if data["variant"] not in VARIANTS or VARIANTS[data["variant"]] != data["quantization"]:
        raise ValueError(
            f"{path}: field 'variant' {data['variant']!r} with quantization {data['quantization']!r} "
            f"is not one of {VARIANTS}"
        )
    unknown = set(data) - set(Choice.__dataclass_fields__)
    if unknown:
        raise ValueError(f"{path}: unknown fields {sorted(unknown)}")
    return Choice(**data)


def load_choice(folder: str | os.PathLike, device: str | None = None):
    """(model, tokenizer, choice): the submission model as notebook 04 chose it."""
    choice = read_choice(folder)
    path = choice.model_path(folder)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{Path(folder) / CHOICE_FILE}: field 'model_dir' points to {path}, which holds no model"
        )
    model, tokenizer = load_variant(choice.variant, merged_dir=path, device=device)
    return model, tokenizer, choice


# ---------------------------------------------------------------- reference figures from a GPU


def gpu_reference(path: str | os.PathLike | None = None) -> list[dict]:
    """The 7B-architecture inference figures measured on an H100 (benchmarks/results/gpu_7b.json), one
    row per variant; [] when the file is absent (e.g. on Kaggle without the benchmarks folder)."""
    from utils.paths import project_root

    path = Path(path) if path else project_root() / "benchmarks" / "results" / "gpu_7b.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    phases = data.get("phases", {})
    names = {
        "infer_bf16": "16bit (bf16)",
        "infer_int8": "8bit",
        "infer_nf4": "nf4",
        "infer_fp4": "fp4",
        "infer_nf4_dq": "nf4-dq",
    }
    rows = []
    for key, name in names.items():
        if key in phases:
            p = phases[key]
            rows.append(
                {
                    "variant": name,
                    "footprint_gib": p.get("footprint_gib"),
                    "allocated_after_load_gib": p.get("weights_alloc_gib"),
                    "peak_generating_gib": p.get("gen_peak_alloc_gib"),
                    "tokens_per_s": p.get("tokens_per_s"),
                }
            )
    # bf16 was timed cold (its first calls compiled new shapes); the same model's later batch-1 calls are
    # the warm figure (see benchmarks/GPU.md, section 3).
    seq = phases.get("generation_batched_vs_sequential", {})
    if rows and rows[0]["variant"].startswith("16bit") and seq.get("sequential_seconds"):
        rows[0]["tokens_per_s_warm"] = round(
            seq["samples"] * seq["new_tokens"] / seq["sequential_seconds"], 1
        )
    return rows
