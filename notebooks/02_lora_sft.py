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
# **Kaggle's 2x T4**: `device_map="auto"` spreads the model's layers over both cards, so a model
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
from utils.modeling import cpu_4bit_fallback, resolve_model
from utils.training import finish_run, resume_point, sft_datasets, training_meter, training_rows

run = notebooks.start("02_lora_sft", OUTPUT_DIR, DATA_DIR, SEED)
model_path = resolve_model(MODEL)  # "tiny": the embedded model's cached folder; a Kaggle Model: its local path
adapter_dir = run.output_dir / "adapter"  # checkpoints, the final adapter and training.json

# %% [markdown]
# ## The memory plan
# Before anything loads, the estimated peak memory of this training run on the card `GPU`, from the model's config
# alone (`utils.memory`: weights, adapter, optimizer state, activations with or without
# checkpointing, logits). A plan that cannot fit stops here and names the knob to turn.

# %%
from utils.memory import print_plans

plans = print_plans("02_lora_sft", globals(), MODEL, GPU)  # globals(): the parameters cell's values

# %% [markdown]
# ## The model
# `from_pretrained` in the dtype the hardware computes in: bf16 on a recent GPU, fp16 on a T4 (it has no
# bf16), fp32 on a CPU. For QLoRA (`QUANTIZATION = "4bit"`) a `BitsAndBytesConfig` stores the frozen
# weights in 4-bit NF4 (a data type whose 16 levels are the quantiles of a normal distribution, as trained
# weights roughly are), with the per-block scales themselves quantized (*double quantization*, about 0.4
# bits a weight saved); each matrix product dequantizes a block at a time and computes in that dtype.

# %% tags=["library"]
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

if torch.cuda.is_available():  # AIMO_NO_BF16=1 takes a T4's fp16 path on a newer card
    bf16 = torch.cuda.is_bf16_supported() and not os.environ.get("AIMO_NO_BF16")
    dtype = torch.bfloat16 if bf16 else torch.float16
else:
    dtype = torch.float32
quantization_config = None
if QUANTIZATION == "4bit":  # QLoRA
    quantization_config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
elif QUANTIZATION == "8bit":  # LLM.int8
    quantization_config = BitsAndBytesConfig(load_in_8bit=True)
model = AutoModelForCausalLM.from_pretrained(
    model_path, dtype=dtype, quantization_config=quantization_config, attn_implementation="sdpa",
    device_map="auto" if torch.cuda.is_available() else None)  # "auto": spread over Kaggle's two T4s
tokenizer = AutoTokenizer.from_pretrained(model_path)
if tokenizer.pad_token is None:  # DeepSeek-Math has none: batches pad with EOS (masked out of the loss)
    tokenizer.pad_token = tokenizer.eos_token

# %% [markdown]
# ## The data notebook 01 wrote
# Training rows are prompt/completion pairs rendered with the model's chat template: `SFTTrainer` masks the
# prompt out of the loss when the data comes in that form.

# %%
if quantization_config is not None and model.device.type == "cpu":
    cpu_4bit_fallback(model)  # bitsandbytes' repacked CPU 4-bit kernels fail on the tiny model's layer widths
train_rows, val_rows = training_rows(run.root_output_dir, TRAIN_SOURCES, tokenizer)
train_dataset, eval_dataset = sft_datasets(train_rows, val_rows)
eval_problems = held_out(run.root_output_dir, EVAL_SOURCE, EVAL_LIMIT)
print(f"{len(train_rows)} training and {len(val_rows)} validation examples; {len(eval_problems)} held-out problems")
print(f"model: {model.config.model_type}, {model.num_parameters():,} parameters, {model.dtype}, quantization: {QUANTIZATION}")
train_dataset[0]

# %% [markdown]
# ## Before: the base model on held-out problems
# The base model can do arithmetic, but has never seen a word problem solved nor a question answered in
# the chat format.

# %%
generation = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS)
before = evaluate(model, tokenizer, eval_problems, "auto", generation)
print(f"base accuracy: {before.accuracy:.3f}", before.by_kind)

# %% [markdown]
# ## The LoRA adapter
# `LoraConfig` names the rank $r$, the scale $\alpha$ (the update is multiplied by $\alpha/r$), dropout on
# the adapter's input, and the layers to adapt: `"all-linear"` puts an adapter beside every linear layer
# but the output head (the QLoRA paper found adapters everywhere beat attention-only). `get_peft_model`
# freezes the base and inserts the adapters; $A$ starts random, so the seed is set first. On a quantized
# base, `prepare_model_for_kbit_training` first casts the layers that stay in 16 bits (norms, embeddings) to
# fp32 for stable training and lets gradients flow back from them, turning on gradient checkpointing with them
# when asked. Gradient checkpointing (recompute activations in the backward pass instead of storing them:
# about 30% more compute for far less memory) pays on models over 1B parameters; a tiny one gains nothing.

# %% tags=["library"]
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import set_seed

checkpointing = model.num_parameters() > 1_000_000_000
if quantization_config is not None:
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
lora_config = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT,
                         target_modules=TARGET_MODULES, task_type="CAUSAL_LM")
set_seed(SEED)  # A's random start
model = get_peft_model(model, lora_config)
model.print_trainable_parameters()

# %% [markdown]
# ## The training recipe
# `SFTConfig` is the recipe, every knob written out: warm-up then cosine decay, gradient accumulation, loss on
# the completion only, an evaluation on the validation rows and a checkpoint every `SAVE_STEPS`. Precision
# comes from the hardware, never hard-coded: TRL defaults to bf16, which a CPU and a T4 lack. `PACKING="auto"`
# packs on a GPU only: best-fit-decreasing (`"bfd"`) packs examples into padding-free rows whose positions
# restart at each example, but without a variable-length attention kernel a packed row costs the square of its
# length, which on a CPU outweighs the padding saved (`make bench` measures both).

# %% tags=["library"]
import torch
from trl import SFTConfig

args = SFTConfig(
    output_dir=str(adapter_dir),
    max_steps=MAX_STEPS,
    per_device_train_batch_size=BATCH_SIZE,
    per_device_eval_batch_size=BATCH_SIZE,
    gradient_accumulation_steps=GRAD_ACCUM,  # the effective batch: BATCH_SIZE x GRAD_ACCUM
    learning_rate=LEARNING_RATE,
    warmup_steps=WARMUP_STEPS,
    lr_scheduler_type="cosine",
    max_length=MAX_LENGTH,
    packing=torch.cuda.is_available() if PACKING == "auto" else PACKING,
    packing_strategy="bfd",
    completion_only_loss=True,  # the prompt's tokens are masked out of the loss
    activation_checkpointing=checkpointing,
    eval_strategy="steps",
    eval_steps=SAVE_STEPS,
    save_strategy="steps",
    save_steps=SAVE_STEPS,  # a Kaggle session can die: rerunning resumes from the last checkpoint
    save_total_limit=2,
    logging_steps=10,
    seed=SEED,
    data_seed=SEED,
    use_cpu=not torch.cuda.is_available(),  # the precision the model was loaded in (TRL's default, bf16,
    bf16=dtype == torch.bfloat16,           # raises on a CPU and a T4)
    fp16=dtype == torch.float16,
    report_to="none",
    disable_tqdm=True,
    dataloader_num_workers=0,
    include_num_input_tokens_seen="non_padding",  # real tokens, for the speed report
)

# %% tags=["library"]
from transformers.trainer_callback import PrinterCallback
from trl import SFTTrainer

trainer = SFTTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                     processing_class=tokenizer)
trainer.remove_callback(PrinterCallback)  # logs go to trainer.state.log_history (plotted below), not stdout

# %% [markdown]
# ## Train
# Rerunning the notebook after an interruption resumes from the last checkpoint in `adapter_dir`, provided the
# model, recipe and data are the ones that wrote it (otherwise training starts afresh, with a warning), and
# skips a damaged checkpoint for the one before it. That choice, and measuring time and memory, are the
# package's plumbing; the training itself is the trainer's.

# %%
trainer.add_callback(meter := training_meter())  # wall time and peak memory of trainer.train()
resume = resume_point(trainer, train_rows)  # this run's newest intact checkpoint, or None

# %% tags=["library"]
train_output = trainer.train(resume_from_checkpoint=resume)

# %%
result = finish_run(trainer, meter, resume)  # adapter_dir/final (adapter + tokenizer), adapter_dir/training.json
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

# %% [markdown]
# ## LoRA from first principles
# What `LoraConfig` + `get_peft_model` put beside each linear layer, written out: the frozen layer $W$,
# a matrix $A$ ($r \times$ in, random) and a matrix $B$ (out $\times r$, zeros), and the output
# $Wx + s\,BAx$ with $s = \alpha/r$. $B$ starts at zero so that step 0 computes exactly what the base
# model computes: training starts from the pretrained model, not from a randomly perturbed one, and $B$
# still gets a gradient (through $Ax$, which is not zero), so it moves at the first step. To check the
# hand-written layer against peft's, we copy peft's `lora_A` and `lora_B` into it, after giving $B$
# non-zero values as if it had trained.

# %% tags=["from-scratch"]
import copy

import torch
from peft import LoraConfig, get_peft_model
from torch import nn


class LoRALinear(nn.Module):
    """y = W x + s * B A x, with W frozen: only A (r x in) and B (out x r) train."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, rslora: bool = False):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.A = nn.Parameter(torch.empty(r, base.in_features))
        nn.init.kaiming_uniform_(self.A, a=5**0.5)  # random, as peft's default
        self.B = nn.Parameter(torch.zeros(base.out_features, r))  # zero: the update BA starts at 0
        self.scaling = alpha / (r**0.5 if rslora else r)

    def forward(self, x):
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scaling


torch.manual_seed(0)
x = torch.randn(8, 64)
block = nn.Sequential(nn.Linear(64, 32))  # any model with a linear layer; peft names this one "0"
ours = LoRALinear(copy.deepcopy(block[0]), r=8, alpha=16)
step0_equal = torch.equal(ours(x), ours.base(x))  # B = 0: exactly the base layer

peft_block = get_peft_model(block, LoraConfig(r=8, lora_alpha=16, target_modules=["0"]))
peft_lora = peft_block.base_model.model[0]  # peft's lora.Linear: base_layer, lora_A, lora_B, scaling
nn.init.normal_(peft_lora.lora_B["default"].weight)  # as if trained: B is no longer zero
with torch.no_grad():  # peft's A and B, copied into ours
    ours.A.copy_(peft_lora.lora_A["default"].weight)
    ours.B.copy_(peft_lora.lora_B["default"].weight)
lora_max_diff = (ours(x) - peft_block(x)).abs().max().item()
print(f"step 0 (B = 0): output equals the base layer's: {step0_equal}")
print(f"scaling: peft {peft_lora.scaling['default']}, ours {ours.scaling}; "
      f"outputs agree to 1e-6: {lora_max_diff < 1e-6}")

# %% [markdown]
# ### rsLoRA: $\alpha/\sqrt{r}$ instead of $\alpha/r$
# $BAx$ is a sum of $r$ rank-one terms: when its entries have the same size at every rank, its size grows
# like $\sqrt r$. Dividing by $r$ then shrinks the update (and the gradients reaching $A$ and $B$) like
# $1/\sqrt r$: a rank-64 adapter learns more slowly than a rank-4 one and its extra capacity goes unused.
# Dividing by $\sqrt r$ (`use_rslora=True`; Kalajdzievski 2023) keeps the update's size the same at
# every rank. Below, peft's `scaling` for both, and the size of such an update relative to rank 4.

# %% tags=["from-scratch"]
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

alpha, d = 16, 1024
torch.manual_seed(0)
x = torch.randn(64, d)
lora_scalings, rslora_scalings, sizes = {}, {}, {}
for r in (4, 16, 64):
    for rslora, scalings in ((False, lora_scalings), (True, rslora_scalings)):
        lora_config = LoraConfig(r=r, lora_alpha=alpha, target_modules=["0"], use_rslora=rslora)
        peft_model = get_peft_model(nn.Sequential(nn.Linear(d, d)), lora_config)
        scalings[r] = peft_model.base_model.model[0].scaling["default"]
    A, B = torch.randn(r, d) / d**0.5, torch.randn(d, r)  # entries of the same size at every rank
    sizes[r] = (x @ A.T @ B.T).pow(2).mean().sqrt().item()  # grows like sqrt(r)
print(f"{'r':>3} {'alpha/r':>8} {'alpha/sqrt(r)':>14} {'update, LoRA':>13} {'update, rsLoRA':>15}")
for r in (4, 16, 64):
    print(f"{r:>3} {lora_scalings[r]:>8.3f} {rslora_scalings[r]:>14.3f} "
          f"{lora_scalings[r] * sizes[r] / (lora_scalings[4] * sizes[4]):>13.2f} "
          f"{rslora_scalings[r] * sizes[r] / (rslora_scalings[4] * sizes[4]):>15.2f}")

# %% [markdown]
# ### The trainable count of DeepSeek-Math-7B, by hand and by peft
# LoRA on a linear layer of shape in $\to$ out trains $r \cdot \text{in} + \text{out} \cdot r = r(\text{in} +
# \text{out})$ parameters. `target_modules="all-linear"` adapts the seven linear layers of every decoder
# block (q, k, v, o; gate, up, down) and leaves `lm_head` alone. The formula over DeepSeek-Math-7B's
# config, against peft's own count on a model of that architecture built on the *meta* device (shapes
# without memory: no 14 GB of weights are allocated, and peft wraps it all the same).

# %% tags=["from-scratch"]
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig

deepseek_config = LlamaConfig(  # DeepSeek-Math-7B's shapes: a Llama
    num_hidden_layers=30, hidden_size=4096, num_attention_heads=32, num_key_value_heads=32,
    intermediate_size=11008, vocab_size=102400)
r, d, ff = 16, deepseek_config.hidden_size, deepseek_config.intermediate_size
kv = deepseek_config.num_key_value_heads * (d // deepseek_config.num_attention_heads)  # k, v widths: 4096
shapes = {"q": (d, d), "k": (d, kv), "v": (d, kv), "o": (d, d),  # (in, out) of each linear layer
          "gate": (d, ff), "up": (d, ff), "down": (ff, d)}
per_layer = sum(r * (n_in + n_out) for n_in, n_out in shapes.values())  # A: r x in, B: out x r
by_hand = per_layer * deepseek_config.num_hidden_layers

with torch.device("meta"):  # shapes only: no memory, no weights
    meta_model = AutoModelForCausalLM.from_config(deepseek_config)
peft_model = get_peft_model(meta_model, LoraConfig(r=r, target_modules="all-linear"))
peft_trainable, peft_total = peft_model.get_nb_trainable_parameters()
print(f"by hand: {per_layer:,} per layer x {deepseek_config.num_hidden_layers} layers = {by_hand:,}")
peft_model.print_trainable_parameters()
print(f"equal: {by_hand == peft_trainable}")
