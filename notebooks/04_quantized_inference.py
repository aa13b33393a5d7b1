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
from utils.quantization import (
    adapter_base_model,
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
