# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Quantized inference: memory, speed and accuracy
#
# A 7B model in bf16 takes 13–14 GB for its weights alone; a Kaggle T4 has 16 GB, and the KV cache of
# many parallel samples needs room too. **Quantization** stores the weights in fewer bits and
# dequantizes them on the fly, block by block, inside each matrix product (computing in bf16/fp16):
# - **LLM.int8** (8-bit): each row of a weight matrix is scaled to int8; the few input features with
#   outlier magnitudes (above 6.0) are multiplied in 16 bits instead, so that they do not wreck the rest.
# - **NF4** (4-bit NormalFloat): 16 levels placed at the quantiles of a normal distribution, which is how
#   trained weights are distributed; one scale (absmax) per block of 64 weights.
# - **FP4**: 16 levels of a tiny floating-point format instead; same size, usually a little less accurate.
# - **Double quantization**: the per-block scales (32 bits per 64 weights = 0.5 bit per weight) are
#   themselves quantized to 8 bits, saving about 0.37 bit per weight: 0.3 GB on a 7B model.
#
# Notebook 02 trained a LoRA adapter. To deploy it on a quantized model there are two ways, and one
# wrong one:
# 1. **merged, then quantized**: add $\frac{\alpha}{r}BA$ into the 16-bit weights (exact), save that model,
#    quantize it when loading. One model, no extra compute per token. (On a CPU, "16-bit" is fp32.)
# 2. **separate**: quantize the base, keep the adapter beside it in high precision. This is exactly the
#    model QLoRA trains, but every adapted layer does two extra small matrix products per token.
# 3. *wrong*: `merge_and_unload()` onto an already-quantized base. peft dequantizes the weight, adds the
#    update and quantizes the sum afresh: the update is small next to the rounding step of 4 bits, so it is
#    partly rounded away, and the rest of the weight is rounded a second time. We measure the damage.
#
# For every variant we measure weight memory, peak memory while generating, latency and tokens per
# second, held-out accuracy (each problem prompted as it was trained: compute problems with tools, so that
# quantization's effect on writing and reading code shows too), perplexity of the held-out worked
# solutions, and how often the variant's answer agrees with the 16-bit model's. Last, we save the variant chosen for submission, where
# notebook 05 reads it.

# %% tags=["parameters"]
MODEL = "tiny"  # the base model, used only when the base the adapter records is not on this machine
ADAPTER = ""  # a saved adapter folder, or "" for OUTPUT_DIR/02_lora_sft/adapter/final (notebook 02)
DATA_DIR = "../shared/data"
OUTPUT_DIR = "outputs"
SEED = 0
EVAL_SOURCE = "embedded"
EVAL_LIMIT = 300
MODE = "auto"  # "auto" (each problem in its trained style: tools for compute problems), "reasoning" or "tools"
MAX_NEW_TOKENS = 48
VARIANTS = "16bit,8bit,nf4,fp4,nf4-dq"
DEPLOYMENTS = "merged,separate"
SUBMIT_VARIANT = "16bit"  # the variant notebook 05 loads: 16bit, 8bit, nf4, fp4 or nf4-dq
GPU = "auto"  # the card(s) the memory plan checks: "auto" (those present), "2xT4", "4xL4", "H100"

# %%
import sys
from pathlib import Path

sys.path[:0] = [str(p) for p in [Path("../src"), *Path("/kaggle/input").glob("*/src")] if p.is_dir()]

# %%
import pandas as pd

from utils import notebooks, plots
from utils.evaluation import held_out
from utils.generation import GenerationConfig
from utils.io import write_metrics
from utils.modeling import adapter_base_model
from utils.quantization import (
    compare_variants,
    gpu_reference,
    merge_adapter,
    merge_shift,
    save_choice,
)

run = notebooks.start("04_quantized_inference", OUTPUT_DIR, DATA_DIR, SEED)

# %% [markdown]
# ## The memory plan
# Before anything loads, the estimated peak memory of generation with the 16-bit model (the largest variant) on the card `GPU`, from the model's config
# alone (`utils.memory`: weights and the KV cache of
# the prompt and new tokens). A plan that cannot fit stops here and names the knob to turn.

# %%
from utils.memory import print_plans

plans = print_plans("04_quantized_inference", globals(), MODEL, GPU)  # globals(): the parameters cell's values

# %% [markdown]
# ## The tuned model, merged once in full precision
# The merged model is saved to `OUTPUT_DIR/04_quantized_inference/model`: every "merged" variant below
# loads this one folder with a different quantization setting, and notebook 05 will too.

# %%
adapter_dir = Path(ADAPTER) if ADAPTER else run.root_output_dir / "02_lora_sft" / "adapter" / "final"
if not (adapter_dir / "adapter_config.json").is_file():
    raise FileNotFoundError(f"{adapter_dir} holds no adapter: run notebook 02 first, or set ADAPTER")
base = adapter_base_model(adapter_dir, MODEL)
merged_dir = merge_adapter(adapter_dir, run.output_dir / "model", base=MODEL)
problems = held_out(run.root_output_dir, EVAL_SOURCE, EVAL_LIMIT)
print(f"adapter on {Path(base).name}, merged into {merged_dir.relative_to(run.root_output_dir)}")
print(f"{len(problems)} held-out problems, prompt mode {MODE!r}, greedy decoding, up to {MAX_NEW_TOKENS} new tokens")

# %% [markdown]
# ## Merging onto a quantized base shifts the logits
# Same adapter, same quantized base: the logits with the adapter kept separate, against the logits after
# `merge_and_unload()` on that base. In 16 bits the two are the same model up to float rounding; on a
# quantized base they are not. (`relative` is the norm of the difference over the norm of the logits;
# `top1_agreement`, how often the most likely next token is unchanged, over every position of 8 solutions.)

# %%
texts = [p.problem + " " + (p.solution or "") for p in problems[:8]]
shift_variants = [v for v in ("16bit", "8bit", "nf4") if v in VARIANTS.split(",")]
shifts = {v: merge_shift(adapter_dir, v, texts, base=MODEL) for v in shift_variants}
pd.DataFrame(shifts).T.round(4)

# %% [markdown]
# ## Every variant, measured
# One model in memory at a time. Weight memory is measured right after loading; then the held-out
# problems are answered in batches (timed, with memory sampled), and the worked solutions scored.

# %%
generation = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, batch_size=64)
reports = compare_variants(problems, merged_dir, adapter_dir, tuple(VARIANTS.split(",")),
                           tuple(DEPLOYMENTS.split(",")), MODE, generation, base=MODEL)
table = pd.DataFrame([r.metrics() for r in reports]).set_index(["deployment", "variant"])
print(f"reference: {reports[0].deployment} {reports[0].variant} ({reports[0].compute_dtype} compute)")

# %% [markdown]
# ### Weight memory
# Bytes of every parameter and buffer plus the quantization constants bitsandbytes keeps beside the
# weights (block scales, code tables), which `get_memory_footprint` (`footprint_kb`) leaves out: that is
# why the footprint shows no gain from double quantization. Quantization acts on the decoder layers'
# linear weights only (`linear_kb`, in total and per layer); the embeddings, `lm_head` and norms keep the
# 16-bit dtype. At 4 bits those untouched weights become most of what is left, so the total falls less
# than the linear layers do (`weight_vs_16bit` against `linear_vs_16bit`); they are about 12% of
# DeepSeek-Math-7B's weights (a 102,400-token vocabulary) and a similar share of the tiny model's. On a
# CPU the "16-bit" reference is fp32, so int8 is a quarter of it and 4 bits an eighth, plus the scales;
# against bf16 on a GPU the ratios are twice as large. Keeping the adapter separate adds its matrices, in fp32.

# %%
reference = table.iloc[0]
memory = table[["weight_bytes", "footprint_bytes", "linear_bytes", "per_layer_linear_bytes", "adapter_bytes"]] / 1024
memory["weight_vs_16bit"] = table["weight_bytes"] / reference["weight_bytes"]
memory["linear_vs_16bit"] = table["linear_bytes"] / reference["linear_bytes"]
memory.rename(columns=lambda c: c.replace("_bytes", "_kb")).round(3)

# %% [markdown]
# ### Accuracy, perplexity, agreement with the 16-bit model
# Deterministic: greedy decoding on fixed problems. `agreement_with_16bit` is the fraction of problems where the
# variant's extracted answer equals the 16-bit model's, right or wrong; `perplexity` is on the worked
# solutions of the same held-out problems (loss on the solution's tokens only, as in training).

# %%
by_kind = pd.DataFrame(table["by_kind"].tolist(), index=table.index).add_prefix("accuracy_")
table[["accuracy", "agreement_with_16bit", "perplexity"]].astype(float).join(by_kind).round(3)

# %% [markdown]
# ### Speed and memory while generating
# These vary from run to run (and the CPU here is shared). Dequantizing costs time: quantization saves
# memory, and buys speed only where reading the weights from memory is the bottleneck (large models,
# small batches, on a GPU). LLM.int8 is the slowest: it quantizes every input on the fly and multiplies the
# outlier features apart. A separate adapter adds two small products per layer and token. On a CPU, peak memory is
# the whole process's resident memory, of which the tiny model's weights are a rounding error; on a GPU it
# is the allocated CUDA memory, weights included. `seconds_per_problem` is the batched wall time divided by the problems
# (throughput); `latency_seconds` is the time to answer one problem alone (batch 1), as a submission
# answering one problem at a time with one sample would see it.

# %% tags=["nbval-ignore-output"]
table[["load_seconds", "generate_seconds", "seconds_per_problem", "latency_seconds", "new_tokens",
       "tokens_per_second", "peak_memory_mb", "memory_kind"]].round(3)

# %% [markdown]
# ## Memory against accuracy
# The trade-off in one picture: the further left, the less memory; the higher, the more problems solved.
# The dashed line is the Pareto front (no other variant is both smaller and more accurate).

# %%
points = [{"weight MB": r.weight_bytes / 2**20, "accuracy": r.accuracy, "variant": f"{r.variant} ({r.deployment})"}
          for r in reports]
fig = plots.scatter(points, "weight MB", "accuracy", "variant", run.output_dir / "memory_vs_accuracy.png",
                    title="Weight memory against held-out accuracy", front=True)

# %% [markdown]
# ## The same variants on a GPU, at 7B
# Measured once on an H100 with DeepSeek-Math-7B's exact architecture and random weights
# (`benchmarks/GPU.md`; batch 1, a 256-token prompt, 128 new tokens). Weight memory roughly halves at 8
# bits and falls to about a third at 4 bits; warm bf16 is the fastest, the 4-bit variants a little slower,
# LLM.int8 several times slower. bf16's `tokens_per_s` was timed cold (its first calls met new shapes);
# `tokens_per_s_warm` is the same model's later batch-1 figure.

# %%
pd.DataFrame(gpu_reference())

# %% [markdown]
# ## The choice for submission
# On AIMO 3's H100 (80 GB) a 7B model fits in 16 bits with room for a large KV cache, and 16 bits is both the
# fastest and the most accurate: `SUBMIT_VARIANT = "16bit"`. On Kaggle's T4s (16 GB, no bf16), choose `nf4-dq`
# or `8bit`. The merged full-precision folder and a `choice.json` naming the quantization to load it with are
# what notebook 05 reads (`utils.quantization.load_choice`): loading a full-precision folder with a
# quantization setting works the same on every machine, where a saved bitsandbytes checkpoint ties the
# files to the library's version and device.

# %%
chosen = next(r for r in reports if r.variant == SUBMIT_VARIANT and r.deployment == "merged")
choice_path = save_choice(run.output_dir, SUBMIT_VARIANT, "model", str(adapter_dir), chosen.metrics())
print(f"{choice_path.relative_to(run.root_output_dir)}: {SUBMIT_VARIANT}, accuracy {chosen.accuracy:.3f}, "
      f"agreement with 16-bit {chosen.agreement_with_16bit:.3f}")

# %%
write_metrics(run.root_output_dir, "04_quantized_inference", {
    "adapter_dir": str(adapter_dir), "model_dir": str(merged_dir), "eval_problems": len(problems), "mode": MODE,
    "reference": f"{reports[0].variant}/{reports[0].deployment}", "submit_variant": SUBMIT_VARIANT,
    "variants": [r.metrics() for r in reports], "merge_shift": shifts,
})
print(f"{len(reports)} variants written to {run.name}/metrics.json")

# %% [markdown]
# ## Quantization by hand
# What bitsandbytes does to one weight matrix, written out and checked against bitsandbytes' own functions.
# **Absmax int8** (LLM.int8's weights): each row (output feature) gets one scale, its largest magnitude
# over 127; every weight is divided by the scale, rounded to an integer in $[-127, 127]$ and stored in 8
# bits; dequantizing multiplies back. The rounding error is at most half a step, $\text{absmax}/254$.

# %% tags=["from-scratch"]
import logging

import bitsandbytes.functional as bnbF
import torch

logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)  # a harmless CPU-kernel notice
torch.manual_seed(0)
W = torch.randn(256, 256) * 0.02  # a weight matrix (out x in) at a trained model's typical scale

scale = W.abs().amax(dim=1, keepdim=True) / 127  # by hand: per row, absmax -> 127
q = torch.clamp(torch.round(W / scale), -127, 127).to(torch.int8)
int8_by_hand = q.float() * scale

q_bnb, row_absmax, _ = bnbF.int8_vectorwise_quant(W)  # bitsandbytes: int8 codes and per-row absmax
int8_bnb = bnbF.int8_vectorwise_dequant(q_bnb, row_absmax)
int8_codes_differ = (q != q_bnb).sum().item()
int8_max_diff = (int8_by_hand - int8_bnb).abs().max().item()
print(f"int8 codes that differ from bitsandbytes': {int8_codes_differ} of {q.numel():,}")
print(f"dequantized weights agree to 1e-7: {int8_max_diff < 1e-7}")

# %% [markdown]
# The codes are identical; the dequantized weights differ by float rounding only (a few units in the last
# place: bitsandbytes multiplies by $127/\text{absmax}$ and by $1/127$ where we divide), hence the
# tolerance of $10^{-7}$ on weights of size $10^{-2}$.
#
# **NF4** has 16 levels instead of 255, placed where the weights are: at quantiles of a standard normal
# distribution, 8 for the positive half and 7 for the negative plus an exact zero, scaled to $[-1, 1]$
# (QLoRA, Dettmers et al. 2023). First the levels, computed from the normal's quantiles and compared with
# bitsandbytes' table.

# %% tags=["from-scratch"]
import bitsandbytes.functional as bnbF
import torch

offset = 0.9677083  # the outermost quantile: (1 - 1/30 + 1 - 1/32) / 2, so that the ends are finite
normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
positive = normal.icdf(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])  # 8 levels above 0
negative = -normal.icdf(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])  # 7 below
levels = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).sort().values
nf4_levels_by_hand = (levels / levels.max()).float()
nf4_code = bnbF.get_4bit_type("nf4", device="cpu")
nf4_levels_max_diff = (nf4_levels_by_hand - nf4_code).abs().max().item()
print("NF4 levels:", " ".join(f"{v:+.4f}" for v in nf4_code.tolist()))
print(f"by hand from the normal's quantiles, equal to bitsandbytes' table to 1e-6: "
      f"{nf4_levels_max_diff < 1e-6}")

# %% [markdown]
# Then the quantization: the weights, flattened, in blocks of 64, each block divided by its own absmax
# (so one outlier spoils 64 weights, not a whole row), each weight replaced by the index of the nearest
# level (4 bits), two indices packed per byte. Dequantizing is a table lookup times the block's absmax.

# %% tags=["from-scratch"]
import bitsandbytes.functional as bnbF
import torch

torch.manual_seed(0)
W = torch.randn(256, 256) * 0.02  # the same matrix as above
code = bnbF.get_4bit_type("nf4", device="cpu")  # the 16 levels

blocks = W.reshape(-1, 64)  # by hand
absmax = blocks.abs().amax(dim=1, keepdim=True)
index = ((blocks / absmax).unsqueeze(-1) - code).abs().argmin(dim=-1)  # the nearest level: 0..15
nf4_by_hand = (code[index] * absmax).reshape(W.shape)

packed, state = bnbF.quantize_4bit(W, blocksize=64, quant_type="nf4")  # bitsandbytes
nf4_bnb = bnbF.dequantize_4bit(packed, state)
unpacked = torch.stack([packed.flatten() >> 4, packed.flatten() & 15], dim=1).flatten()  # high half first
nf4_index_differ = (unpacked != index.flatten()).sum().item()
nf4_max_diff = (nf4_by_hand - nf4_bnb).abs().max().item()
print(f"{packed.numel():,} bytes of indices, {state.absmax.numel():,} absmax scales, {W.numel():,} weights")
print(f"indices that differ from bitsandbytes': {nf4_index_differ}; "
      f"dequantized weights equal: {nf4_max_diff == 0}")

# %% [markdown]
# Identical, to the bit: the same levels, the same absmax per block, the same nearest level (bitsandbytes
# finds it by comparing with the midpoints between levels, which is the same thing). What each format costs
# in error, on this matrix: int8's error is spread evenly over half a step either way; NF4's steps are
# about 16 times coarser, and uneven (finer near zero, where most weights are).

# %% tags=["from-scratch"]
import bitsandbytes.functional as bnbF
import matplotlib.pyplot as plt
import torch

torch.manual_seed(0)
W = torch.randn(256, 256) * 0.02  # the same matrix as above
q, row_absmax, _ = bnbF.int8_vectorwise_quant(W)
int8_error = bnbF.int8_vectorwise_dequant(q, row_absmax) - W
packed, state = bnbF.quantize_4bit(W, blocksize=64, quant_type="nf4")
nf4_error = bnbF.dequantize_4bit(packed, state) - W
int8_mae, nf4_mae = int8_error.abs().mean().item(), nf4_error.abs().mean().item()
print(f"mean |error|: int8 {int8_mae:.1e}, NF4 {nf4_mae:.1e} (about {nf4_mae / int8_mae:.0f}x int8's), "
      f"against a mean |w| of {W.abs().mean().item():.1e}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
panels = [("int8, absmax per row", int8_error), ("NF4, blocks of 64", nf4_error)]
for ax, (name, error) in zip(axes, panels, strict=True):
    ax.hist(error.flatten().numpy(), bins=100)
    ax.set(title=name, xlabel="dequantized - original", ylabel="weights")
fig.tight_layout()

# %% [markdown]
# ## The library calls this notebook makes
# The five variants compared above, as `transformers` configurations (those
# `utils.modeling.quantization_config` builds): 16 bits needs none; the others are passed to
# `from_pretrained` as `quantization_config=`. The 4-bit fields are ignored when `load_in_8bit` is set;
# `llm_int8_threshold` is LLM.int8's outlier threshold (6.0).

# %% tags=["from-scratch"]
import pandas as pd
import torch
from transformers import BitsAndBytesConfig

if torch.cuda.is_available():  # the dtype the matrix products run in
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16  # a T4: fp16
else:
    compute = torch.float32  # a CPU
bnb_configs = {
    "16bit": None,  # no quantization: load in the compute dtype
    "8bit": BitsAndBytesConfig(load_in_8bit=True),
    "nf4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute),
    "fp4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_compute_dtype=compute),
    "nf4-dq": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=compute),
}
fields = ["load_in_8bit", "llm_int8_threshold", "load_in_4bit", "bnb_4bit_quant_type",
          "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype"]
bnb_table = pd.DataFrame({name: {f: str(getattr(c, f)) for f in fields}
                          for name, c in bnb_configs.items() if c is not None})
print(bnb_table.T.to_string())

# %% [markdown]
# And the merge of the first section, as the library call `merge_adapter` makes: load the full-precision
# base, put the adapter on it with `PeftModel.from_pretrained`, and `merge_and_unload()` adds
# $\frac{\alpha}{r}BA$ into each adapted weight and gives back a plain `transformers` model. Skipped for
# models over 1 GB, which it would load a second time.

# %%
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from utils.modeling import resolve_model  # "tiny" -> the embedded model's folder

merged_size = sum(f.stat().st_size for f in Path(merged_dir).glob("*.safetensors"))
if Path(adapter_dir).is_dir() and merged_size < 2**30:
    saved = AutoModelForCausalLM.from_pretrained(merged_dir)  # the dtype it was saved in (fp32 on a CPU)
    base_model = AutoModelForCausalLM.from_pretrained(resolve_model(base), dtype=saved.dtype)
    peft_model = PeftModel.from_pretrained(base_model, str(adapter_dir))
    layer_before = type(peft_model.base_model.model.model.layers[0].self_attn.q_proj)
    merged_here = peft_model.merge_and_unload()
    layer_after = type(merged_here.model.layers[0].self_attn.q_proj)
    saved_weights = saved.state_dict()
    weights_diff = max((v - saved_weights[k]).abs().max().item() for k, v in merged_here.state_dict().items())
    tolerance = 1e-6 if saved.dtype == torch.float32 else 1e-2  # bf16 merged on a GPU rounds differently
    print(f"q_proj: {layer_before.__module__}.{layer_before.__name__} -> "
          f"{layer_after.__module__}.{layer_after.__name__}")
    print(f"LoRA tensors left: {sum('lora_' in k for k in merged_here.state_dict())}; "
          f"same weights as {Path(merged_dir).name}/ (to {tolerance:g}): {weights_diff <= tolerance}")
