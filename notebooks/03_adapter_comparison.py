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
# # 03 · Parameter-efficient methods, compared fairly
#
# LoRA is one of many ways to fine-tune a few parameters instead of all of them. This chapter trains
# thirteen of them **on the same rows, with the same budget** (steps, batch, sequence length, seeds), and
# measures the same things for every one, in the spirit of PEFT's own method comparison:
#
# | family | methods | what trains |
# |---|---|---|
# | low-rank updates | **LoRA**, **rsLoRA** (scale $\alpha/\sqrt r$), **DoRA** (direction + magnitude), **QLoRA** (LoRA on a 4-bit base) | $\Delta W = BA$ beside each linear layer |
# | LyCORIS | **LoHa** (Hadamard product), **LoKr** (Kronecker product) | structured low-rank updates |
# | rescaling | **IA3** (learned vectors on keys, values, MLP), **VeRA** (frozen random $A, B$, trained scales) | vectors only |
# | prompts | **prefix tuning**, **prompt tuning**, **LLaMA-Adapter** (gated prompts in the top layers) | virtual tokens |
# | adapters | **bottleneck adapters** (ours: down-projection, nonlinearity, up-projection, residual, after each attention and MLP) | small inserted layers |
# | reference | **full fine-tuning** | every weight |
#
# Each experiment is a small piece of data (method, options, learning rate) and one runner trains them all.
# The **learning rate is set per family**, not one for all: methods that train a few vectors far from the
# output need far larger rates than a full fine-tune (PEFT's comparison saw IA3 go from 0.31 to 0.46
# accuracy with the rate alone). Every run records trainable parameters (count and share), adapter file
# size, train time, tokens per second, peak memory, final train and validation loss, held-out accuracy,
# and **forgetting**: how much the loss on text that is not the task (problem statements without
# solutions, arithmetic) rises after training. Every method runs with several seeds, so that we can tell
# a difference between methods from noise between seeds.
#
# The budget on the embedded default is tiny (a few seconds per run on a CPU): weak methods scoring 0 is a
# real result at this budget, not a bug. A method that fails on some hardware or model is reported as failed,
# with its error, and the others go on.

# %% tags=["parameters"]
MODEL = "tiny"  # "tiny", a local path, a hub id, or a Kaggle Model handle
DATA_DIR = "../shared/data"
OUTPUT_DIR = "outputs"
SEED = 0
SEEDS = "0,1"  # every method runs once per seed
METHODS = "all"  # comma-separated names from utils.adapters.METHODS, or "all"
TRAIN_SOURCES = "embedded"
EVAL_SOURCE = "embedded"
MAX_STEPS = 30
BATCH_SIZE = 8
MAX_LENGTH = 256
EVAL_LIMIT = 100
MAX_NEW_TOKENS = 48
REUSE_RUNS = False  # True: keep the runs an interrupted session finished with the same settings
GPU = "auto"  # the card(s) the memory plan checks: "auto" (those present), "2xT4", "4xL4", "H100"
LEARNING_RATE_SCALE = 1.0  # multiplies every family's rate (tuned on the tiny model): 0.02 for a 7B

# %%
import sys
from pathlib import Path

sys.path[:0] = [str(p) for p in [Path("../src"), *Path("/kaggle/input").glob("*/src")] if p.is_dir()]

# %%
import pandas as pd

from utils import comparison, notebooks
from utils.io import write_metrics
from utils.modeling import load_tokenizer, resolve_model

run = notebooks.start("03_adapter_comparison", OUTPUT_DIR, DATA_DIR, SEED)

# %% [markdown]
# ## The memory plan
# Before anything loads, the estimated peak memory of the largest run (full fine-tuning when it is in the line-up) on the card `GPU`, from the model's config
# alone (`utils.memory`: weights, optimizer state,
# activations, logits). A plan that cannot fit stops here and names the knob to turn.

# %%
from utils.memory import print_plans

plans = print_plans("03_adapter_comparison", globals(), MODEL, GPU)  # globals(): the parameters cell's values

# %% [markdown]
# ## The experiments, as data
# One row per experiment: the method, its family and the family's learning rate. Options left out take
# the method's defaults (LoRA-style methods: rank 8 on every linear layer).

# %%
experiments = comparison.select_experiments(METHODS)
seeds = [int(s) for s in SEEDS.split(",")]
comparison.describe_experiments(experiments)

# %% [markdown]
# ## The shared budget and data
# Every method trains on the same rows from notebook 01 (step-by-step solutions), unpacked so that every
# method sees identical batches (prompt-style methods prepend virtual tokens to each sequence, which packing
# several examples into one row would share), and is scored on the same held-out problems.

# %%
budget = comparison.Budget(max_steps=MAX_STEPS, batch_size=BATCH_SIZE, max_length=MAX_LENGTH,
                           eval_limit=EVAL_LIMIT, max_new_tokens=MAX_NEW_TOKENS,
                           learning_rate_scale=LEARNING_RATE_SCALE)
tokenizer = load_tokenizer(resolve_model(MODEL))
data = comparison.prepare_data(run.root_output_dir, tokenizer, budget, TRAIN_SOURCES, EVAL_SOURCE)
print(f"{len(data.train_rows)} training rows, {len(data.eval_problems)} held-out problems, "
      f"{len(data.forgetting_texts)} forgetting texts; {budget.max_steps} steps of {budget.batch_size}, "
      f"seeds {seeds}")

# %% [markdown]
# ## Run every experiment with every seed
# One line per run (timings are kept for the table below). Each run's record is also written as JSON in
# `outputs/03_adapter_comparison/runs/<experiment>/seed<N>.json`, with its adapter beside it. On Kaggle, where a
# comparison of a 7B model takes hours, set `REUSE_RUNS = True` and rerun after a session dies: runs already
# finished with the same experiment, seed, budget, model and data are read back instead of trained again.

# %%
records = comparison.run_comparison(experiments, seeds, data, budget, MODEL, run.output_dir / "runs", reuse=REUSE_RUNS)

# %% [markdown]
# ## The results table
# Means over seeds, and the accuracy's spread (standard deviation, worst and best seed). `adapter_KB` is
# the size of what a method saves: the adapter alone, or the whole model for full fine-tuning.

# %%
table = comparison.results_table(records)
paths = comparison.write_results(records, table, run.output_dir)
pd.set_option("display.width", 200)
comparison.display_table(table)

# %% [markdown]
# Train time, throughput and peak memory vary from run to run (and on a shared CPU, a lot); peak memory is
# the process's resident memory on a CPU (it only grows over the runs of one process) and allocated CUDA
# memory on a GPU.

# %% tags=["nbval-ignore-output"]
comparison.speed_table(table)

# %% [markdown]
# ## Pareto fronts
# A method is on the front when no other method is both more accurate and cheaper. The bars span the worst
# to the best seed.

# %%
fig = comparison.pareto_figure(table, run.output_dir / "pareto.png")

# %% [markdown]
# ## Reading the results
# Generated from the table above, so that it stays true when the budget, the model or the data change.

# %%
print("\n".join(f"- {line}" for line in comparison.reading(table)))

# %% tags=["nbval-ignore-output"]
print("\n".join(f"- {line}" for line in comparison.speed_reading(table)))

# %% [markdown]
# What to take away for a 7B model on Kaggle: the ranking at this toy budget is not the ranking at 5,000
# steps (PEFT's comparison found LoRA-family methods within noise of a full fine-tune there), but the
# costs are structural: trainable parameters, adapter size and the 4-bit base's memory saving carry over.

# %%
write_metrics(run.root_output_dir, "03_adapter_comparison", comparison.metrics(records, table, budget, seeds)
              | {"model": MODEL, "results_csv": paths["results"].name, "runs_csv": paths["runs"].name})
print(f"{len(table)} methods, {len(records)} runs, {int((table['status'] == 'failed').sum())} failed; "
      f"written: {', '.join(p.name for p in paths.values())}, metrics.json")

# %% [markdown]
# ## A bottleneck adapter from first principles
# Houlsby et al. (2019) fine-tuned BERT by inserting *small layers in the model*: after a block, project
# its output $h$ down to a few features, apply a nonlinearity, project back up, and add the result to $h$
# (a residual). Only these small layers train. The up-projection starts at zero, so at step 0 the adapted
# model computes exactly what the base computes (LoRA's $B = 0$, for the same reason); the up-projection
# still gets a gradient at step 0, so it starts to learn at once. The `bottleneck` method compared above
# is this same idea (`utils.adapters.BottleneckAdapter`, hung after every attention and MLP block with
# forward hooks); here it is written out, on a layer of DeepSeek-Math-7B's width.

# %% tags=["from-scratch"]
import torch
from torch import nn


class Bottleneck(nn.Module):
    """h + up(relu(down(h))): down to a few features and back up, added to the layer's output h."""

    def __init__(self, hidden: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.up.weight)  # zero: the adapter adds nothing until it trains
        nn.init.zeros_(self.up.bias)

    def forward(self, h):
        return h + self.up(torch.relu(self.down(h)))


torch.manual_seed(0)
hidden, bottleneck = 4096, 64
layer = nn.Linear(hidden, hidden).requires_grad_(False)  # stands for a frozen attention or MLP block
adapter = Bottleneck(hidden, bottleneck)
x = torch.randn(2, 5, hidden)
out = adapter(layer(x))
unchanged_at_init = torch.equal(out, layer(x))
out.pow(2).sum().backward()  # any loss: one backward pass
up_learns = adapter.up.weight.grad.abs().sum().item() > 0
adapter_params = sum(p.numel() for p in adapter.parameters())
print(f"output unchanged at init: {unchanged_at_init}; `up` gets a gradient at step 0: {up_learns}")
print(f"one adapter, hidden {hidden}, bottleneck {bottleneck}: {hidden}x{bottleneck} + {bottleneck} "
      f"+ {bottleneck}x{hidden} + {hidden} = {adapter_params:,} parameters")
print(f"two per decoder layer (after attention and MLP) x 30 layers (DeepSeek-Math-7B): "
      f"{2 * 30 * adapter_params:,}, against 37,478,400 for LoRA r=16 on every linear layer")
