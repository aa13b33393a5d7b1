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
# # 02 · LoRA and QLoRA supervised fine-tuning
#
# **LoRA** freezes the base model and learns, for each chosen weight matrix $W$, a low-rank update
# $\Delta W = \frac{\alpha}{r} BA$ with $A \in \mathbb{R}^{r\times d}$, $B \in \mathbb{R}^{d\times r}$ and
# $r \ll d$: a 7B model trains a few tens of millions of parameters instead of seven billion, and the
# optimizer state shrinks with them. **QLoRA** goes further and stores the frozen base in 4 bits (NF4,
# with the quantization constants themselves quantized: *double quantization*), computing in bf16/fp16;
# only the adapter is kept in high precision. On Kaggle's T4s (16 GB, no bf16) that is the difference
# between DeepSeek-Math-7B training or not fitting at all.
#
# The recipe (every knob is in the parameters cell):
# - **packed batches** on a GPU: short examples are packed best-fit-decreasing into padding-free rows whose
#   positions restart at every example, so no compute goes to padding and no example sees another. On a CPU
#   we pad instead: without a variable-length attention kernel a packed row costs the square of its length
#   (`make bench` measures both);
# - **loss on the answer only**: the prompt's tokens are masked out of the loss;
# - warm-up then cosine decay, gradient accumulation, gradient checkpointing where it pays (models over
#   1B parameters), evaluation on the validation split;
# - **checkpoints** every `SAVE_STEPS`: rerun the notebook after a Kaggle session dies and training
#   resumes from the last checkpoint.
#
# We measure the base model and the tuned model on the same held-out problems with greedy decoding, and
# read answers with one function (`utils.answers.extract_answer`). Each problem is prompted in the style it
# is trained in: step-by-step reasoning for *mental* problems, tool-integrated reasoning for *compute*
# problems (the model writes Python, which runs in the sandbox, and reads back its output).
#
# **Kaggle's 2x T4**: `load_model` spreads the layers over both cards (`device_map="auto"`), so a model
# too large for one card still trains; for data parallelism instead, run this notebook's code as a script
# with `accelerate launch --num_processes 2`. QLoRA on DeepSeek-Math-7B fits one T4.

# %% tags=["parameters"]
MODEL = "tiny"  # "tiny", a local path, a hub id, or a Kaggle Model handle (deepseek-ai/deepseek-math/...)
QUANTIZATION = "none"  # "none", "8bit", or "4bit" (QLoRA: nf4 + double quantization)
DATA_DIR = "../shared/data"
OUTPUT_DIR = "outputs"
SEED = 0
TRAIN_SOURCES = "embedded"  # comma-separated sources from notebook 01, or "all"
EVAL_SOURCE = "embedded"  # which held-out problems to score (e.g. "gsm8k" for a real model)
EVAL_LIMIT = 300
LORA_R = 16
LORA_ALPHA = 32
LORA_DROPOUT = 0.0  # 0.05 for a 7B model
TARGET_MODULES = "all-linear"
MAX_STEPS = 400
BATCH_SIZE = 32
GRAD_ACCUM = 1
LEARNING_RATE = 1e-2  # LoRA on a tiny model; about 2e-4 for a 7B model
WARMUP_STEPS = 5
MAX_LENGTH = 256
PACKING = "auto"  # packed, padding-free rows on a GPU; padded batches on a CPU (see utils.training)
SAVE_STEPS = 100
MAX_NEW_TOKENS = 64
GPU = "auto"  # the card(s) the memory plan checks: "auto" (those present), "2xT4", "4xL4", "H100"

# %%
import sys
from pathlib import Path

sys.path[:0] = [str(p) for p in [Path("../src"), *Path("/kaggle/input").glob("*/src")] if p.is_dir()]

# %%
import pandas as pd

from utils import notebooks, plots
from utils.evaluation import evaluate, held_out
from utils.generation import GenerationConfig
from utils.io import write_metrics
from utils.modeling import load_model
from utils.training import LoraSettings, TrainingConfig, train_sft, training_rows

run = notebooks.start("02_lora_sft", OUTPUT_DIR, DATA_DIR, SEED)

# %% [markdown]
# ## The memory plan
# Before anything loads, the estimated peak memory of this training run on the card `GPU`, from the model's config
# alone (`utils.memory`: weights, adapter, optimizer state, activations with or without
# checkpointing, logits). A plan that cannot fit stops here and names the knob to turn.

# %%
from utils.memory import print_plans

plans = print_plans("02_lora_sft", globals(), MODEL, GPU)  # globals(): the parameters cell's values

# %% [markdown]
# ## The data notebook 01 wrote, and the model

# %%
model, tokenizer = load_model(MODEL, QUANTIZATION)
train_rows, val_rows = training_rows(run.root_output_dir, TRAIN_SOURCES, tokenizer)
eval_problems = held_out(run.root_output_dir, EVAL_SOURCE, EVAL_LIMIT)
print(f"{len(train_rows)} training and {len(val_rows)} validation examples; {len(eval_problems)} held-out problems")
print(f"model: {model.config.model_type}, {model.num_parameters():,} parameters, {model.dtype}, quantization: {QUANTIZATION}")

# %% [markdown]
# ## Before: the base model on held-out problems
# The base model can do arithmetic, but has never seen a word problem solved nor a question answered in
# the chat format.

# %%
generation = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS)
before = evaluate(model, tokenizer, eval_problems, "auto", generation)
print(f"base accuracy: {before.accuracy:.3f}", before.by_kind)

# %% [markdown]
# ## Train
# Rerunning this cell after an interruption resumes from the last checkpoint in the output folder, provided
# the model, recipe and data are the ones that wrote it (otherwise it starts afresh, with a warning).

# %%
lora = LoraSettings(r=LORA_R, alpha=LORA_ALPHA, dropout=LORA_DROPOUT, target_modules=TARGET_MODULES)
recipe = TrainingConfig(max_steps=MAX_STEPS, batch_size=BATCH_SIZE, gradient_accumulation_steps=GRAD_ACCUM,
                        learning_rate=LEARNING_RATE, warmup_steps=WARMUP_STEPS, max_length=MAX_LENGTH,
                        packing=PACKING, save_steps=SAVE_STEPS, eval_steps=SAVE_STEPS, seed=SEED)
result = train_sft(model, tokenizer, train_rows, val_rows, recipe, run.output_dir / "adapter",
                   peft_config=lora.peft_config())
print(f"trainable parameters: {result.trainable_parameters:,} of {result.total_parameters:,} "
      f"({result.trainable_parameters / result.total_parameters:.2%})")
print(f"final train loss {result.final_train_loss:.3f}, validation loss {result.eval_loss:.3f}")
fig = plots.loss_curve(result.log_history, run.output_dir / "loss.png", "LoRA fine-tuning")

# %% [markdown]
# ## Memory and speed
# Peak memory is the process's resident memory on a CPU and allocated CUDA memory on a GPU.

# %% tags=["nbval-ignore-output"]
speed = {"seconds": round(result.seconds, 1), "tokens": result.tokens,
         "tokens_per_second": round(result.tokens_per_second), "peak_memory_mb": round(result.peak_memory_mb),
         "memory_kind": result.memory_kind, "device": run.device}
pd.Series(speed).to_frame("training")

# %% [markdown]
# ## After: the tuned model on the same problems

# %%
tuned = result.model
after = evaluate(tuned, tokenizer, eval_problems, "auto", generation)
print(f"base accuracy {before.accuracy:.3f} -> tuned accuracy {after.accuracy:.3f}")
pd.DataFrame({"base": before.by_kind, "tuned": after.by_kind}).round(3)

# %%
fig = plots.bars(["base", "tuned"], [before.accuracy, after.accuracy], "accuracy", "Held-out accuracy",
                 run.output_dir / "accuracy.png")

# %% [markdown]
# A few problems before and after. The compute problems are prompted with tools: the tuned model writes the
# product as a program, the sandbox runs it, and the model copies the output into its answer (notebook 05
# compares that with reasoning alone, which cannot multiply two 2-digit numbers in its head).

# %%
rows = [{"problem": p.problem[:70], "answer": p.answer, "base": b["output"][:40], "tuned": a["output"][:60]}
        for p, b, a in list(zip(eval_problems, before.records, after.records, strict=True))[:5]]
pd.set_option("display.max_colwidth", 80)
pd.DataFrame(rows)

# %%
write_metrics(run.root_output_dir, "02_lora_sft", {
    "model": MODEL, "quantization": QUANTIZATION, "base_accuracy": before.accuracy, "tuned_accuracy": after.accuracy,
    "base_by_kind": before.by_kind, "tuned_by_kind": after.by_kind, "eval_problems": len(eval_problems),
    "adapter_dir": result.output_dir, "steps": result.steps, "final_train_loss": result.final_train_loss,
    "eval_loss": result.eval_loss, "trainable_parameters": result.trainable_parameters,
    "total_parameters": result.total_parameters, **{f"train_{k}": v for k, v in speed.items()},
})
print(f"adapter saved to {Path(result.output_dir).relative_to(run.root_output_dir)}")
