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
# # 03 · Parameter-efficient methods, compared so that the comparison tells them apart
#
# LoRA is one of many ways to fine-tune a few parameters instead of all of them. This chapter trains several
# of them **on the same rows with the same budget** (steps, batch, sequence length, seeds), measures the same
# things for every one, and ranks only the differences that are larger than the noise between seeds.
#
# | family | methods here | what trains |
# |---|---|---|
# | low-rank updates | **LoRA**; **PiSSA** (LoRA started from the weight's principal singular vectors instead of zero) | $\Delta W = BA$ beside each linear layer |
# | shards | **MiSS** (new in peft: one small matrix shared by the shards of each weight) | a few columns' worth per layer |
# | rescaling | **IA3** (learned vectors scaling keys, values and the MLP) | vectors only |
# | adapters | **bottleneck adapter** (ours: the seed's *small layers inserted in the model*) | down-projection, nonlinearity, up-projection, residual |
# | reference | **full fine-tuning** | every weight |
#
# **Why the budget is what it is.** An earlier version of this chapter trained thirteen methods for 30 steps of
# 8 rows each, and every method scored 0.000-0.035: a ranking of noise. We measured LoRA's learning curve on the
# embedded task (seed 0, this chapter's recipe, 200 held-out problems): **0.02** after 30 steps, **0.13** after
# 100, **0.27** after 150, **0.32** after 200 (notebook 02's 400 steps of 32 rows reach 0.65). The model writes
# the answer format right after 30 steps; the steps go into doing the chain's arithmetic right. Held at the
# peak rate, accuracy does not rise (0.02-0.08 over 300 steps): the cosine decay to zero is where a run
# settles, so a short run must decay too. Every run here gets **150 steps of 8 rows** on the embedded *mental*
# problems (step-by-step reasoning; the *compute* problems need tool use and many more steps, notebook 05), two
# seeds, and six methods that a reader would choose between, two runs at a time in one-thread processes (the
# tiny model's matrices are too small for two threads to speed up one run, so two one-thread runs do about
# twice the work). More folders wait in `experiments/` for a longer budget: LoHa, and prompt tuning, which
# scored 0.015 at this budget and generates five times slower than the others (16 virtual tokens, no cache).
#
# **Experiments are data**, in PEFT's own form (its `method_comparison`): each is a folder under
# `experiments/03_adapter_comparison/` holding the method's config file, written by peft's `save_pretrained` and
# read back with `PeftConfig.from_pretrained`, and a `training_params.json` with its learning rate (methods that
# train a few vectors need far larger rates than a full fine-tune). One runner trains them all.

# %% tags=["parameters"]
MODEL = "tiny"  # "tiny", a local path, a hub id, or a Kaggle Model handle
DATA_DIR = "../shared/data"
OUTPUT_DIR = "outputs"
SEED = 0
EXPERIMENTS = "../experiments/03_adapter_comparison"  # methods/<name>/ and rank/<name>/ folders
METHODS = "lora,pissa,miss,ia3,bottleneck,full"  # folder names under EXPERIMENTS/methods, or "all"
RANKS = "all"  # the rank sweep: folder names under EXPERIMENTS/rank, "all", or "" for none
SEEDS = "0,1"  # every method runs once per seed; the rank sweep runs with SEED
TRAIN_SOURCES = "embedded"
EVAL_SOURCE = "embedded"
MODE = "reasoning"  # the prompt style trained and scored: "reasoning" (step by step) or "tools"
MAX_STEPS = 150  # the budget every method gets
BATCH_SIZE = 8
MAX_LENGTH = 256
EVAL_LIMIT = 150  # held-out problems per run
MAX_NEW_TOKENS = 48
LEARNING_RATE_SCALE = 1.0  # multiplies every folder's rate (tuned on the tiny model): 0.02 for a 7B
WORKERS = "auto"  # runs at a time: "auto" is 2 one-thread processes on a CPU, 1 on a GPU
GPU = "auto"  # the card(s) the memory plan checks: "auto" (those present), "2xT4", "4xL4", "H100"

# %%
import sys
from pathlib import Path

sys.path[:0] = [str(p) for p in [Path("../src"), *Path("/kaggle/input").glob("*/src")] if p.is_dir()]

# %%
import pandas as pd
from IPython.display import display

from utils import comparison, notebooks, plots
from utils.io import write_metrics
from utils.modeling import load_tokenizer, resolve_model

run = notebooks.start("03_adapter_comparison", OUTPUT_DIR, DATA_DIR, SEED)

# %% [markdown]
# ## The memory plan
# Before anything loads, the estimated peak memory of the largest run (full fine-tuning when it is in the
# line-up) on the card `GPU`, from the model's config alone (`utils.memory`: weights, optimizer state,
# activations, logits). A plan that cannot fit stops here and names the knob to turn.

# %%
from utils.memory import print_plans

plans = print_plans("03_adapter_comparison", globals(), MODEL, GPU)  # globals(): the parameters cell's values

# %% [markdown]
# ## The experiments, as data
# Each folder's config, as the code that builds it (only what differs from the class's defaults). The
# adapter methods are peft's own classes, read from the folders' `adapter_config.json` by
# `PeftConfig.from_pretrained`; the bottleneck adapter is ours (peft has none) and full fine-tuning has no
# config: their folders hold a `bottleneck_config.json` and a `full_finetuning.json`, which the runner
# recognises (the folder's README says why).

# %%
kaggle = [*Path("/kaggle/input").glob("*/experiments/03_adapter_comparison")]  # the project's dataset there
root = Path(EXPERIMENTS) if Path(EXPERIMENTS).is_dir() or not kaggle else kaggle[0]
budget = {"max_steps": MAX_STEPS, "per_device_train_batch_size": BATCH_SIZE, "max_length": MAX_LENGTH}
experiments = comparison.load_experiments(root / "methods", METHODS, budget)
ranks = comparison.load_experiments(root / "rank", RANKS, budget) if RANKS else []
for exp in experiments + ranks:
    exp.training["learning_rate"] *= LEARNING_RATE_SCALE
    print(f"{exp.name:<14} {comparison.config_code(exp)}")

# %% [markdown]
# What a folder is, shown on one: peft writes the config with `save_pretrained` and reads it back with
# `PeftConfig.from_pretrained`, which returns the right class (`LoraConfig` here) from the file's `peft_type`.

# %% tags=["library"]
import tempfile

from peft import LoraConfig, PeftConfig

pissa = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights="pissa", task_type="CAUSAL_LM")
with tempfile.TemporaryDirectory() as folder:
    pissa.save_pretrained(folder)  # writes adapter_config.json: how experiments/.../methods/pissa was made
    read_back = PeftConfig.from_pretrained(folder)
in_folder = PeftConfig.from_pretrained(str(root / "methods" / "pissa"))
print(f"{type(read_back).__name__}: init_lora_weights={read_back.init_lora_weights!r}, r={read_back.r}; "
      f"the same as methods/pissa's: {read_back.to_dict() == in_folder.to_dict()}")

# %% [markdown]
# The training parameters: the shared recipe (`default_training_params.json`: warm-up then cosine decay, loss
# on the completion only, no packing, so that prompt tuning's virtual tokens never straddle two examples),
# each folder's learning rate, and the budget above, the same for every method.

# %%
pd.DataFrame({e.name: e.training for e in experiments + ranks}).transpose()

# %% [markdown]
# ## The shared data
# Every method trains on the same rows from notebook 01 (one pass: `MAX_STEPS x BATCH_SIZE` of them) and is
# scored on the same held-out problems, greedy, answers read by one function.

# %%
tokenizer = load_tokenizer(resolve_model(MODEL))
data = comparison.prepare_data(run.root_output_dir, tokenizer, MAX_STEPS * BATCH_SIZE, EVAL_LIMIT,
                               TRAIN_SOURCES, EVAL_SOURCE, MODE)
print(f"{len(data.train_rows)} training rows, {len(data.eval_problems)} held-out problems, "
      f"{len(data.forgetting_texts)} forgetting texts")

# %% [markdown]
# ## Forgetting, defined
# Fine-tuning on one task can make a model worse at what it knew before. Here **forgetting** is the rise of the
# model's loss (mean cross-entropy per token, in nats) on text it was pretrained on and that the task does not
# teach, after tuning minus before:
#
# $$\text{forgetting} = \mathcal{L}_\text{after}(\text{probe}) - \mathcal{L}_\text{before}(\text{probe})$$
#
# **Positive means the model forgot** (the text became less likely); zero, nothing changed; negative, the
# tuning helped on it. The probe is text of two of the tiny model's pretraining kinds, drawn with a seed its
# pretraining never used: number lists copied, and arithmetic worked as Python. The tuning task (word
# problems solved in words) teaches neither. (The earlier probe held arithmetic chains and facts, which the
# task *does* train, so its "forgetting" came out negative for most methods.)

# %%
print("\n---\n".join(data.forgetting_texts[i] for i in (0, len(data.forgetting_texts) - 1)))

# %% [markdown]
# ## Run every experiment
# Every method with every seed, then the rank sweep, each from a fresh load of the base model; one line per
# run (its record is written to `outputs/03_adapter_comparison/runs/<experiment>/seed<N>.json`, its adapter
# beside it). A run that fails is reported with its error and the others go on.

# %%
seeds = [int(s) for s in SEEDS.split(",")]
runs_dir = run.output_dir / "runs"
jobs = [(e, s, data, MODEL, runs_dir, MAX_NEW_TOKENS) for e in experiments for s in seeds]
jobs += [(e, SEED, data, MODEL, runs_dir, MAX_NEW_TOKENS) for e in ranks]
records = comparison.run_all(jobs, comparison.default_workers(WORKERS))
print("\n".join(comparison.describe(r) for r in records))

# %% [markdown]
# ## The results
# Means over seeds; the accuracy's interval runs from the worst seed to the best. **Tiers** group methods that
# the seeds cannot tell apart: two methods share a tier when their intervals overlap, directly or through a
# chain of overlapping intervals, so every method of a tier beats every method of the tiers below on every
# seed. Within a tier the order means nothing at this budget. `adapter_KB` is what the method saves: the
# adapter alone, or the whole model for full fine-tuning.

# %%
method_records = [r for r in records if r["name"] in {e.name for e in experiments}]
table, failed = comparison.results_table(method_records)
pd.set_option("display.width", 200)
comparison.display_table(table)

# %% [markdown]
# Train time and peak memory vary from run to run (and on a shared CPU, a lot); peak memory is the process's
# resident memory on a CPU and allocated CUDA memory on a GPU.

# %% tags=["nbval-ignore-output"]
comparison.speed_table(table)

# %%
fig = plots.accuracy_intervals(table, run.output_dir / "accuracy_intervals.png")

# %% [markdown]
# ## Reading the results
# Generated from the table, so that it stays true when the budget, the model or the data change.

# %%
print("\n".join(f"- {line}" for line in comparison.reading(table, failed)))

# %% [markdown]
# ## LoRA's rank
# The same runner on the folders under `rank/`: LoRA with $r$ from 1 to 64 ($\alpha = 2r$, so that $\alpha/r$
# stays as in the line-up), at the learning rate tuned for $r = 8$, one seed. The adapter's size grows linearly
# with $r$; the train time hardly does on this model. Read the accuracy against the seed spread of LoRA's row
# above: one seed cannot separate differences smaller than that. A large rank at the rate tuned for a small one
# can train worse, not better (its final loss says so): notebook 02's rsLoRA cell shows why the update's size
# depends on $r$ and $\alpha$.

# %%
rank_table, _ = comparison.results_table([r for r in records if r["name"] in {e.name for e in ranks}])
if len(rank_table):
    rank_table.index = [next(e.config.r for e in ranks if e.name == n) for n in rank_table.index]
    rank_table = rank_table.sort_index().rename_axis("r")
    display(rank_table[["accuracy", "trainable_parameters", "adapter_bytes", "final_train_loss", "forgetting"]].round(3))

# %% tags=["nbval-ignore-output"]
if len(rank_table):
    display(rank_table[["train_seconds"]].round(1))
    fig = plots.rank_sweep(rank_table, run.output_dir / "rank_sweep.png")

# %%
settings = {"max_steps": MAX_STEPS, "batch_size": BATCH_SIZE, "max_length": MAX_LENGTH, "eval_limit": EVAL_LIMIT,
            "mode": MODE, "seeds": seeds, "train_rows": len(data.train_rows), "eval_problems": len(data.eval_problems)}
write_metrics(run.root_output_dir, "03_adapter_comparison", comparison.metrics(method_records, table, failed, settings)
              | {"model": MODEL, "rank_sweep": rank_table.reset_index().to_dict(orient="records")})
table.to_csv(run.output_dir / "results.csv")
print(f"{len(table)} methods in {table['tier'].max()} tiers, {len(records)} runs, {len(failed)} failed; "
      "written: results.csv, metrics.json")

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
