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
# # 06 · Reinforcement learning with verifiable rewards: GRPO on the LoRA adapter
#
# DeepSeekMath trained its model twice: supervised fine-tuning on worked solutions, then reinforcement
# learning, and its `-rl` model is what the second stage made. The method it introduced, **GRPO** (Group
# Relative Policy Optimization), is now the standard way to train reasoning models (DeepSeek-R1, and most
# AIMO entries since). This chapter continues notebook 02's LoRA adapter with GRPO, through TRL's
# `GRPOTrainer`.
#
# **The method.** For each problem $q$ the policy samples a *group* of $G$ completions $o_1..o_G$, and a
# program scores each one, $r_i$. The advantage of completion $i$ is its reward relative to its group,
# $\hat A_i = (r_i - \mathrm{mean}(r)) / \mathrm{std}(r)$, given to every one of its tokens. PPO would get
# the baseline from a learned value model as large as the policy; GRPO gets it from the group, so there is
# **no value model** to train or hold in memory. The objective is PPO's clipped one on the token ratios
# $\rho_t = \pi_\theta / \pi_{\theta_{old}}$, minus a KL penalty:
# $$\mathcal{J} = \frac{1}{G}\sum_i \frac{1}{|o_i|}\sum_t \Big[\min\big(\rho_t \hat A_i,\
# \mathrm{clip}(\rho_t, 1-\epsilon, 1+\epsilon)\hat A_i\big) - \beta\, \mathbb{D}_{KL}[\pi_\theta \| \pi_{ref}]\Big].$$
# A group where every completion gets the same reward has zero advantage and teaches nothing: the problems
# must be neither always solved nor never (TRL logs the share of such groups, `frac_reward_zero_std`).
#
# **The KL term and `beta`.** $\pi_{ref}$ is the model we start from, here the SFT adapter (TRL keeps a
# frozen copy of the adapter, named `ref`, beside the one it trains). The penalty, estimated per token as
# $\frac{\pi_{ref}}{\pi_\theta} - \log\frac{\pi_{ref}}{\pi_\theta} - 1$, keeps the policy near what SFT
# taught it, so that it does not forget the format or drift to degenerate text that games the reward.
# DeepSeekMath used $\beta = 0.04$; TRL's default is 0 (no reference model at all, which saves a forward
# pass), as DAPO and Dr. GRPO argue that with verifiable rewards the penalty mostly slows learning. We keep
# $\beta > 0$ here because the KL to the SFT adapter is what we want to watch.
#
# **The loss variants (`loss_type`).** They differ in how token losses are averaged:
# - `grpo` (DeepSeekMath): a mean over each completion's tokens, then over completions. A token of a short
#   completion weighs more than one of a long one, so long wrong answers are penalized too little (a bias
#   toward growing wrong completions);
# - `dapo` (DAPO, TRL's default): one mean over all the tokens of the batch, so every token weighs the same;
# - `dr_grpo` (Dr. GRPO): a sum divided by a constant (`max_completion_length`), and Dr. GRPO also drops the
#   division by the group's std (`scale_rewards="none"`), which favours problems that are almost always
#   or almost never solved.
#
# We use `dapo`: no length bias, and the normalizer does not depend on the completion budget. Our
# completions are short and of similar lengths, so the three differ little here; on a 7B model whose
# chains of thought run to thousands of tokens, the length bias matters.
#
# **Why verifiable rewards.** A learned reward model can be fooled: the policy finds text it scores highly
# without being right (reward hacking), and the longer RL runs, the more it finds. An integer answer is
# checked by a program: the reward is the competition's own score (`utils.rewards.correctness_reward` reads
# the answer with `utils.answers.extract_answer`, fits it to the competition's range, and compares it with
# the truth). A small format reward (`boxed_format_reward`) pays for ending with one `\boxed{}`, and for
# tool-integrated completions `program_output_reward` runs the program in the sandbox. Nothing is judged.
#
# We measure the SFT adapter and the GRPO-trained one on notebook 02's held-out problems, each prompted in
# its trained style, with greedy decoding and with a majority vote. GRPO trains on *training-split*
# problems of the kinds where the SFT adapter's samples find right answers its greedy decoding misses
# (measured below, on training problems, not on the held-out ones).

# %% tags=["parameters"]
MODEL = "tiny"  # the base model, used when the base the adapter records is not on this machine (Kaggle)
ADAPTER = "auto"  # "auto": notebook 02's adapter (OUTPUT_DIR/02_lora_sft/adapter/final), or an adapter folder
QUANTIZATION = "none"  # the base under the adapter: "none", "8bit" or "4bit" (QLoRA)
COMPETITION = "aimo3"  # the answer range the rewards and the scoring apply
DATA_DIR = "../shared/data"
OUTPUT_DIR = "outputs"
SEED = 0
TRAIN_SOURCES = "embedded"  # notebook 01's training sources GRPO draws problems from
EVAL_SOURCE = "embedded"
EVAL_LIMIT = 300
PROBE_PROBLEMS = 64  # training problems sampled (NUM_GENERATIONS times each) to find where RL has room
ROOM_GROUPS = 5  # GRPO trains on the problems of this many kinds, those with the most room
GRPO_PROBLEMS = 256  # prompts GRPO may draw from
NUM_GENERATIONS = 16  # the group size G
PROMPTS_PER_STEP = 4  # problems per forward pass: PROMPTS_PER_STEP * NUM_GENERATIONS completions
GRAD_ACCUM = 1  # forward passes per optimizer step
GENERATION_BATCH = 0  # completions sampled per generate call; 0: all of a step's at once (TRL's default)
MAX_STEPS = 20
MAX_COMPLETION_LENGTH = 48  # tokens: the longest embedded solution is 42 with its EOS; a 7B model needs 1024 or more
LEARNING_RATE = 0.02
OPTIMIZER = "sgd"  # see "Train" below; adamw_torch for a 7B model
BETA = 0.04  # the KL coefficient (DeepSeekMath's value)
TEMPERATURE = 0.7  # sampling temperature of the groups
LOSS_TYPE = "dapo"  # "grpo", "dapo" or "dr_grpo"
SAVE_STEPS = 5
MAX_NEW_TOKENS = 64  # for the held-out scoring, as in notebook 02
VOTE_SAMPLES = 4  # 8 or more on a GPU
VOTE_TEMPERATURE = 0.7
GPU = "auto"  # the card(s) the memory plan checks: "auto" (those present), "2xT4", "4xL4", "H100"

# %%
import sys
from pathlib import Path

sys.path[:0] = [str(p) for p in [Path("../src"), *Path("/kaggle/input").glob("*/src")] if p.is_dir()]

# %%
import random
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets, on importing trl
import pandas as pd
import torch
from datasets import Dataset
from peft import PeftModel
from trl import GRPOConfig, GRPOTrainer

from utils import notebooks, plots, rl
from utils.evaluation import evaluate, held_out
from utils.generation import GenerationConfig
from utils.io import write_metrics
from utils.memory import print_plans
from utils.modeling import adapter_base_model, load_model, pick_dtype
from utils.rewards import boxed_format_reward, correctness_reward, program_output_reward

run = notebooks.start("06_grpo", OUTPUT_DIR, DATA_DIR, SEED)

# %% [markdown]
# ## The SFT adapter, loaded to train on
# `PeftModel.from_pretrained(..., is_trainable=True)` loads notebook 02's LoRA weights with their
# gradients on: GRPO continues *that* adapter (SFT, then RL), rather than starting a new one on the base.

# %%
adapter_dir = str(run.root_output_dir / "02_lora_sft" / "adapter" / "final") if ADAPTER == "auto" else ADAPTER
plans = print_plans("06_grpo", globals(), MODEL, GPU)  # a step's completions: training and sampling memory
base, tokenizer = load_model(adapter_base_model(adapter_dir, MODEL), QUANTIZATION)
policy = PeftModel.from_pretrained(base, adapter_dir, is_trainable=True)
trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
print(f"adapter: {Path(adapter_dir).relative_to(run.root_output_dir) if ADAPTER == 'auto' else adapter_dir}")
print(f"trainable LoRA parameters: {trainable:,} of {sum(p.numel() for p in policy.parameters()):,}")

# %% [markdown]
# ## Before: the SFT adapter on the held-out problems
# Greedy decoding, each problem in its trained style (as notebook 02 scores it), and a majority vote of
# `VOTE_SAMPLES` samples at `VOTE_TEMPERATURE` (as notebook 05 votes).

# %%
eval_problems = held_out(run.root_output_dir, EVAL_SOURCE, EVAL_LIMIT)
generation = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS)
policy.eval()
sft = evaluate(policy, tokenizer, eval_problems, "auto", generation)
sft_vote = rl.vote_accuracy(policy, tokenizer, eval_problems, VOTE_SAMPLES, VOTE_TEMPERATURE, MAX_NEW_TOKENS,
                            COMPETITION, SEED)
print(f"{len(eval_problems)} held-out problems; SFT greedy {sft.accuracy:.3f}, vote of {VOTE_SAMPLES} {sft_vote.accuracy:.3f}")
pd.DataFrame({"greedy": sft.by_kind, f"vote of {VOTE_SAMPLES}": sft_vote.by_kind}).round(3)

# %% [markdown]
# ## Where SFT leaves room
# GRPO can only reinforce right answers the policy already samples, and learns only from groups whose
# completions disagree. So before training we look at what it would see: on training-split problems,
# prompted as GRPO will prompt them (next section), the SFT adapter's greedy accuracy, the mean accuracy of
# `NUM_GENERATIONS` samples at `TEMPERATURE` (pass@1), the share of problems some sample solves (pass@G),
# and the share of groups with mixed rewards, per kind (for the embedded problems, the template that
# generated them). Where pass@G is far above greedy accuracy, the right answer is there to be reinforced;
# GRPO trains on the `ROOM_GROUPS` kinds with the largest gap.
#
# What the errors are, measured on 400 training problems with greedy decoding: on the `compute` kinds the
# program is always right and every miss is the answer read back from its output (`4559` boxed as
# `4585`: copying four digits is hard for this model); on the `mental` kinds every miss is a wrong
# arithmetic fact (`6 * 3 = 16`).

# %%
pool = rl.training_problems(run.root_output_dir, TRAIN_SOURCES)
random.Random(SEED).shuffle(pool)
probe_rows = rl.with_tool_output(policy, tokenizer, rl.prompt_rows(tokenizer, pool[:PROBE_PROBLEMS], COMPETITION),
                                 MAX_NEW_TOKENS)
room = rl.sampling_room(policy, tokenizer, probe_rows, NUM_GENERATIONS, TEMPERATURE, MAX_COMPLETION_LENGTH, SEED)
chosen_groups = rl.groups_with_room(room, ROOM_GROUPS)
print("GRPO trains on:", chosen_groups)
pd.DataFrame(room).T.round(3)

# %% [markdown]
# ## The prompts, and the rewards on a few completions
# Each prompt is in its problem's trained style. Tool-integrated prompts go one step further: the SFT
# adapter writes its program, the sandbox runs it, and the prompt ends after the real output, so the
# completion GRPO samples is the model's reading of that output into its answer. (During sampling, TRL runs
# no code; its own tool calling needs a chat template with tool calls, which DeepSeek-Math's has not.)
# The `answer`, `mode` and `competition` columns reach the reward functions as keyword arguments.

# %%
chosen = [p for p in pool[PROBE_PROBLEMS:] if rl.group_of(p) in chosen_groups][:GRPO_PROBLEMS]
rows = rl.with_tool_output(policy, tokenizer, rl.prompt_rows(tokenizer, chosen, COMPETITION), MAX_NEW_TOKENS)
train_dataset = Dataset.from_list(rows)
print(f"{len(rows)} prompts:", pd.Series([r["group"] for r in rows]).value_counts().to_dict())
print("a tool-integrated prompt ends:", repr(next((r["prompt"][-90:] for r in rows if r["mode"] == "tools"), "")))

# %%
examples = [" 6 * 3 = 18. The answer is \\boxed{18}.", " 6 * 3 = 16. The answer is \\boxed{16}.",
            " The answer is 18.", "```python\nprint(6 * 3)\n```\n```output\n18\n```\nThe answer is \\boxed{16}."]
kwargs = {"answer": [18] * 4, "mode": ["reasoning"] * 3 + ["tools"], "competition": COMPETITION}
pd.DataFrame({"completion": examples, **{f.__name__: f(None, examples, **kwargs) for f in
              (correctness_reward, boxed_format_reward, program_output_reward)}})

# %% [markdown]
# ## Train
# `GRPOConfig` holds the recipe: groups of `NUM_GENERATIONS`, `PROMPTS_PER_STEP` problems a step,
# completions of at most `MAX_COMPLETION_LENGTH` tokens sampled at `TEMPERATURE`, the KL coefficient `BETA`
# and the loss. The correctness reward weighs 1, the format reward 0.1 (it must never outweigh a right
# answer). The program reward is not used: the programs are in the prompts here.
#
# **The completion budget.** A completion cut at `max_completion_length` has no box, so it scores 0 even
# when its working is right. Our two-step solutions take 38 to 42 tokens: at a budget of 40 (this
# notebook's first setting) half the right `mental_add_add` answers were cut, and GRPO learned to prefer
# short completions, whatever their answer. The budget must fit the task, and
# `mask_truncated_completions=True` (DAPO's overlong filtering) leaves cut completions out of the loss
# rather than calling them wrong.
#
# **The optimizer.** A tiny model is fragile under RL with Adam: Adam moves every parameter by about the
# learning rate at every step, whatever the size of its gradient, and a policy gradient from 64 samples is
# mostly noise, so every weight drifts and greedy answers the reward never saw break. In our runs on the
# embedded default (30 steps of 64 completions), AdamW at 1e-3 and 3e-3 collapsed the policy (held-out
# accuracy near 0), at 1e-4 it cost 7 points, at 2e-5 it moved nothing. Plain SGD moves each weight in
# proportion to its gradient, so weights the rewards do not involve stay put; at 0.3 it collapsed too, at
# 0.02 it is gentle. A 7B model trains with AdamW at about 1e-6 (TRL's default), where the drift is small
# against what the model knows.
#
# Rerunning this cell after an interruption resumes from the last checkpoint in the output folder, provided
# the recipe, the prompts and the starting adapter are the ones that wrote it.

# %%
dtype = pick_dtype(next(policy.parameters()).device)  # bf16 or fp16 on a GPU, as the device allows
args = GRPOConfig(
    output_dir=str(run.output_dir / "adapter"), max_steps=MAX_STEPS, save_steps=SAVE_STEPS, save_total_limit=2,
    num_generations=NUM_GENERATIONS, per_device_train_batch_size=PROMPTS_PER_STEP * NUM_GENERATIONS,
    gradient_accumulation_steps=GRAD_ACCUM, generation_batch_size=GENERATION_BATCH or None,
    max_completion_length=MAX_COMPLETION_LENGTH, mask_truncated_completions=True, temperature=TEMPERATURE,
    learning_rate=LEARNING_RATE,
    optim=OPTIMIZER, lr_scheduler_type="constant", beta=BETA, loss_type=LOSS_TYPE, reward_weights=[1.0, 0.1],
    seed=SEED, use_cpu=run.device == "cpu", bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16,
    activation_checkpointing=False, logging_steps=1, report_to="none", disable_tqdm=True,
)
trainer = GRPOTrainer(model=policy, reward_funcs=[correctness_reward, boxed_format_reward], args=args,
                      train_dataset=train_dataset, processing_class=tokenizer)
result = rl.train_grpo(trainer, rl.run_key(args, rows, adapter_dir))
print(f"{result.steps} steps; final adapter in {Path(result.output_dir).relative_to(run.root_output_dir)}")

# %% [markdown]
# ## The reward, the KL to the SFT adapter, and the completion length over training
# The reward is the batch mean (1 for a right answer, plus 0.1 for the format); each step draws new
# problems, so it is noisy. The KL starts at zero (the policy *is* the reference at step 0) and grows as
# the policy moves; a KL that climbs fast with a flat reward is the sign of a learning rate too high.

# %%
curves = rl.curves(result.log_history)
fig = rl.plot_curves(curves, run.output_dir / "curves.png", "GRPO on the SFT adapter")
pd.DataFrame({"step": curves.steps, "reward": curves.reward, "kl": curves.kl, "length": curves.length}
             ).iloc[:: max(1, len(curves.steps) // 6)].round(4).set_index("step")

# %% tags=["nbval-ignore-output"]
speed = {"seconds": round(result.seconds, 1), "steps": result.steps,
         "completions": result.steps * PROMPTS_PER_STEP * NUM_GENERATIONS * GRAD_ACCUM,
         "peak_memory_mb": round(result.peak_memory_mb), "memory_kind": result.memory_kind, "device": run.device}
pd.Series(speed).to_frame("GRPO")

# %% [markdown]
# ## After: the GRPO adapter on the same held-out problems

# %%
grpo = evaluate(policy, tokenizer, eval_problems, "auto", generation)
grpo_vote = rl.vote_accuracy(policy, tokenizer, eval_problems, VOTE_SAMPLES, VOTE_TEMPERATURE, MAX_NEW_TOKENS,
                             COMPETITION, SEED)
table = pd.DataFrame({"SFT greedy": {"overall": sft.accuracy, **sft.by_kind},
                      "GRPO greedy": {"overall": grpo.accuracy, **grpo.by_kind},
                      f"SFT vote of {VOTE_SAMPLES}": {"overall": sft_vote.accuracy, **sft_vote.by_kind},
                      f"GRPO vote of {VOTE_SAMPLES}": {"overall": grpo_vote.accuracy, **grpo_vote.by_kind}})
print(f"greedy: SFT {sft.accuracy:.3f} -> GRPO {grpo.accuracy:.3f} ({grpo.accuracy - sft.accuracy:+.3f}); "
      f"vote: SFT {sft_vote.accuracy:.3f} -> GRPO {grpo_vote.accuracy:.3f}")
table.round(3)

# %%
fig = plots.bars(list(table.columns), list(table.loc["overall"]), "accuracy",
                 f"Held-out accuracy, {len(eval_problems)} problems", run.output_dir / "accuracy.png")

# %% [markdown]
# ## What GRPO can and cannot do for this model
# On the embedded default GRPO does **not** lift the SFT adapter's held-out accuracy. Over thirty
# recipes (SGD and AdamW at several learning rates, temperatures 0.4 to 1.0, with and without the KL term,
# one or two updates per batch, `grpo`, `dapo` and `dr_grpo` losses, training only on the highest-entropy
# tokens, on the `compute` kinds alone or the `mental` ones alone, 4 to 32 problems a step) the gentle
# ones moved greedy accuracy by -4 to 0 points and the others lowered it by more, some to near 0. With
# 256 completions a step (32 problems), SGD at 0.1 held the training reward flat and cost 4 points held
# out; at 0.3 both fell. The gradient is not at fault: TRL's per-token log-probabilities of the sampled
# completions equal the policy's own at the sampling temperature (`tests/test_grpo.py` checks it), so
# what GRPO follows is the true policy gradient. The probe
# above shows that this is not for want of signal: almost every group has mixed rewards, and some sample
# solves almost every problem (pass@G near 1 against greedy accuracy near 0.67). What stands in the way,
# measured:
# - **the samples are worse than the greedy answer.** pass@1 at the sampling temperature is 20 points
#   below greedy accuracy (the vote is below greedy too), so most of what GRPO sees are slips the greedy
#   path does not make, and avoiding them does little for greedy decoding;
# - **the errors are the model's own limits.** The `compute` misses are all copies of a program's output
#   into the answer, the `mental` ones all wrong arithmetic facts: skills of a model with 160 thousand
#   LoRA weights, not choices among answers it knows. Reinforcing the right copy on the training problems
#   made the greedy copy *worse* on the held-out ones in every run (0.44 down to 0.36-0.40): a change small
#   enough to leave the KL near 0.005 flips greedy decisions that sit close to ties, as often one way as
#   the other;
# - **what it learns on its training problems does not carry over.** Trained for ten epochs on 48 fixed
#   `mental_product` problems, the training reward climbed (0.37 to 0.48), while greedy accuracy on the
#   held-out `mental_product` problems, the same 64 facts in other sentences, fell from 0.61 to 0.48: the
#   update fits the trained contexts rather than the facts;
# - **a completion budget below the task's biases the reward.** At 40 tokens, half the right two-step
#   answers were cut before their box and scored 0, so GRPO learned to write short; at 48, with truncated
#   completions masked, the bias is gone, but not the limits above.
#
# The same loop learns where the signal is there: on 8 fixed problems, the reward climbs from 0.33 to 0.7 in
# 15 steps. GRPO gains where a model's samples find right answers its greedy path misses and its greedy
# path is not already its best guess, as a 7B model's are on competition problems (DeepSeekMath's RL
# stage took its SFT model from 82.9% to 88.2% on GSM8K and from 46.8% to 51.7% on MATH; it found that RL
# raises Maj@K but not Pass@K: it makes answers the model could already sample the likely ones). Run the
# probe above, and watch pass@1 against greedy accuracy, before spending GPU hours.

# %% [markdown]
# ## On Kaggle: GRPO on DeepSeek-Math-7B
# The same cells, with `ADAPTER` set to notebook 02's 7B adapter and these settings (a starting point; on
# Kaggle's 2x T4, 16 GB each, no bf16, so QLoRA in fp16; on an H100-class GPU, bf16 without quantization):
#
# | setting | 7B value | why |
# |---|---|---|
# | `QUANTIZATION` | `"4bit"` on T4s, `"none"` on an 80 GB GPU | the policy and its frozen `ref` adapter share one base |
# | `NUM_GENERATIONS` | 8 | DeepSeekMath used 64; 8 is what a T4 fits and still gives most groups a spread |
# | `MAX_COMPLETION_LENGTH` | 1024 | competition solutions run to several hundred tokens; truncated ones get no reward |
# | `PROMPTS_PER_STEP`, `GRAD_ACCUM`, `GENERATION_BATCH` | 1, 8, 8 on a T4; 2, 8, 0 on an 80 GB GPU | 8 problems a step on a T4, one group of 8 sampled at a time (the KV cache of 8 x 1024 tokens is about 4 GB) |
# | `OPTIMIZER`, `LEARNING_RATE` | `adamw_torch` (or `paged_adamw_8bit`), 1e-6 to 3e-6, constant after a short warm-up | RL moves a 7B model with small steps; 1e-5 already drifts |
# | `BETA` | 0.04 (DeepSeekMath), or 0.0 to save the reference pass | the reference is the frozen adapter copy, so it costs a forward pass, not memory |
# | `TEMPERATURE` | 0.7 to 1.0 | enough spread within a group |
# | `LOSS_TYPE` | `dapo` | no length bias at long completions |
# | `use_vllm` | `False` on T4s (vLLM's memory is not there beside training); `True`, `vllm_mode="colocate"`, on an 80 GB GPU | sampling is most of GRPO's time; vLLM makes it several times faster |
# | `activation_checkpointing` | `True` | long completions' activations |
#
# On a T4, plain `generate` samples a group of 8 completions of up to 1024 tokens in about a minute, so a step
# of 8 problems takes several minutes and a 12-hour session runs about a hundred steps: save every 10 steps
# (`SAVE_STEPS`) and rerun to resume. Watch the reward, the KL and the share of groups with no spread.

# %%
metrics = {
    "adapter": adapter_dir, "sft_accuracy": sft.accuracy, "grpo_accuracy": grpo.accuracy,
    "gain": grpo.accuracy - sft.accuracy, "sft_by_kind": sft.by_kind, "grpo_by_kind": grpo.by_kind,
    "sft_vote_accuracy": sft_vote.accuracy, "grpo_vote_accuracy": grpo_vote.accuracy, "vote_samples": VOTE_SAMPLES,
    "eval_problems": len(eval_problems), "trained_groups": chosen_groups, "grpo_prompts": len(rows),
    "sft_sampling_room_on_training_problems": room, "steps": result.steps, "loss_type": LOSS_TYPE,
    "beta": BETA, "num_generations": NUM_GENERATIONS, "learning_rate": LEARNING_RATE, "optimizer": OPTIMIZER,
    "final_kl": curves.kl[-1] if curves.kl else None, "grpo_adapter_dir": result.output_dir,
    **{f"train_{k}": v for k, v in speed.items()},
}
write_metrics(run.root_output_dir, "06_grpo", metrics)
print(sorted(metrics))
