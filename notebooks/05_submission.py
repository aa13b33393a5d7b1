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
# # 05 · The AIMO submission: tool use, voting, a time budget, the competition's gateway
#
# This is the notebook you submit. On Kaggle's rerun it is given hidden problems one at a time, and it
# must **never crash, never run out of time, and always answer** with an integer in the competition's
# range. Four ideas from the AIMO winners make a tuned model into a submission:
#
# 1. **Tool-integrated reasoning** (ToRA, the AIMO 1 winner): the model writes a ```python block and
#    opens an ```output block; generation stops there, the code runs in a sandbox, its output is
#    appended, and the model goes on reading real numbers instead of inventing them. Arithmetic a model
#    cannot do in its head becomes one line of code.
# 2. **Self-consistency**: draw many samples per problem (batched, one `generate` call per wave) and
#    take the **majority vote** of their answers; stop early once the vote cannot change, break ties
#    deterministically, and fall back to a fixed answer when no sample's answer parses.
# 3. **A time budget**: the run has one wall-clock limit (AIMO 2/3: 5 h for 50 problems). Each problem
#    gets an equal share of what is left after a safety reserve, so time an easy problem does not use
#    flows to later ones, and the deadline is enforced *inside* generation (a stopping criterion checked
#    at every token), so a long sample cannot overrun it.
# 4. **The competition's API**: AIMO 2 and 3 call a function named `predict(id_, problem)` that returns
#    a one-row DataFrame; AIMO 1 loops over `env.iter_test()`. Locally the same code runs through a local
#    gateway with the same contract; on the rerun it is served to Kaggle. The model loads lazily, inside
#    the first `predict` call, so that the server is up within Kaggle's 15-minute startup limit.
#
# Answers are read with `utils.answers.extract_answer` and fitted to the competition: AIMO 1 and 2 take
# the answer **mod 1000**; AIMO 3 takes 0–99999 as it is (an out-of-range answer is not a vote).
#
# On the embedded default, we score greedy reasoning, a majority vote, and tool-integrated reasoning on
# the same held-out problems (the *compute* kind, a product of two 2-digit numbers, is out of reach of
# the tiny model's mental arithmetic but not of the code it writes), then run the submission through the
# local gateway on the public Kaggle AIMO problems within a stated time budget.

# %% tags=["parameters"]
MODEL = "tiny"  # the base model: "tiny", a local folder, a hub id, or a Kaggle Model handle
ADAPTER = "auto"  # "auto": notebook 04's chosen model, else notebook 02's adapter; a folder; empty: the base alone
QUANTIZATION = "none"  # "none", "8bit", "4bit" for MODEL or ADAPTER (notebook 04's choice names its own)
COMPETITION = "aimo3"  # "aimo1", "aimo2" or "aimo3": the answer range, and the API served on a rerun
DATA_DIR = "../shared/data"
OUTPUT_DIR = "outputs"
SEED = 0
EVAL_SOURCE = "embedded"  # held-out problems from notebook 01 for the comparison
EVAL_LIMIT = 300
MODE = "tools"  # the submission's mode: "tools" or "reasoning"
SAMPLES = 8  # samples per problem for the vote
WAVE_SIZE = 4  # samples per batched generate call; the vote may stop after any wave
TEMPERATURE = 0.7
MAX_NEW_TOKENS = 64  # per generate call (a 7B model needs about 1024)
MAX_CODE_ROUNDS = 2  # code blocks run per sample
ANSWER_FROM = "boxed"  # where each sample's answer is read: boxed (its final answer) or program (its last output)
TIME_BUDGET = 120  # seconds for the local gateway run (on a Kaggle rerun: the competition's limit)
GPU = "auto"  # the card(s) the memory plan checks: "auto" (those present), "2xT4", "4xL4", "H100"

# %%
import sys
from pathlib import Path

sys.path[:0] = [str(p) for p in [Path("../src"), *Path("/kaggle/input").glob("*/src")] if p.is_dir()]

# %%
from dataclasses import asdict

import pandas as pd

from utils import notebooks, plots
from utils.gateway import competition_spec, is_competition_rerun
from utils.io import write_metrics
from utils.solver import (
    budget_schedule,
    build_solver,
    evaluate_solver,
    evaluation_problems,
    local_problems_csv,
    submission_model,
)
from utils.submission import run_submission

run = notebooks.start("05_submission", OUTPUT_DIR, DATA_DIR, SEED)
RERUN = is_competition_rerun()  # True only while Kaggle reruns the notebook on the hidden problems

# %% [markdown]
# ## The memory plan
# Before anything loads, the estimated peak memory of one wave of samples on the card `GPU`, from the model's config
# alone (`utils.memory`: weights and the KV cache of every sample in flight, prompt
# plus new tokens over every code round). A plan that cannot fit stops here and names the knob to turn
# (checked in the interactive run; a rerun on the hidden problems must always answer).

# %%
from utils.memory import print_plans

plans = [] if RERUN else print_plans("05_submission", globals(), MODEL, GPU)  # globals(): the parameters

# %% [markdown]
# ## The solver
# `build_solver(..., lazy=True)` wraps the model in a `Solver` without loading it: the first use loads
# it (here the comparison below; on a rerun, the first `predict` call). The submission's settings:

# %%
model_path = submission_model(MODEL, ADAPTER, run.root_output_dir)
solver = build_solver(model_path, mode=MODE, samples=SAMPLES, seed=SEED, quantization=QUANTIZATION,
                      competition=COMPETITION, lazy=True, wave_size=WAVE_SIZE, temperature=TEMPERATURE,
                      max_new_tokens=MAX_NEW_TOKENS, max_code_rounds=MAX_CODE_ROUNDS, answer_from=ANSWER_FROM)
print("model:", model_path.replace(str(run.root_output_dir), OUTPUT_DIR))
pd.Series(asdict(solver.config)).to_frame("submission")

# %% [markdown]
# ## Three ways to answer, on the same held-out problems
# `evaluate_solver` runs a solver's `solve_batch`, which samples every problem still undecided in one
# batched call per wave (the same votes and early stops as `solve`, which the submission calls one
# problem at a time), and scores the answers as the competition would.
#
# **Greedy reasoning**: one sample, step by step, no code.

# %%
problems = evaluation_problems(run.root_output_dir, EVAL_SOURCE, EVAL_LIMIT)
results = {"greedy reasoning": evaluate_solver(solver.with_config(mode="reasoning", samples=1), problems)}
print(f"{len(problems)} problems; greedy reasoning: {results['greedy reasoning'].summary()}")

# %% [markdown]
# **Majority vote** of up to `SAMPLES` samples at temperature `TEMPERATURE`, drawn `WAVE_SIZE` at a time;
# a problem stops drawing once no remaining samples could change its vote. Sampling adds diversity and
# the vote keeps the answer most samples agree on: it gains when the model is often right and its
# errors scatter over many wrong answers, and loses when sampling makes errors more likely than the
# greedy path (a small model's arithmetic slips) or when they pile up on one wrong answer.

# %%
vote = f"vote of {SAMPLES}, reasoning"
results[vote] = evaluate_solver(solver.with_config(mode="reasoning"), problems)
print(f"{vote}: {results[vote].summary()}")
print(f"samples drawn: {sum(r['samples'] for r in results[vote].records)} of {SAMPLES * len(problems)}")

# %% [markdown]
# **Tool-integrated reasoning**, greedy: the model writes the expression as code, the sandbox computes it,
# and the model reads the output back before it answers. The answer can be read two ways: the model's
# final `\boxed{}` (what a strong model's answer is: it may still work on the output), or what the
# program printed (which separates *writing the right program* from *copying its result correctly*).
# Notebook 01 trains each problem in one style (compute problems with tools, mental ones by reasoning),
# so read the table per kind: a tools prompt on a mental problem is outside what the model learned.

# %%
results["greedy tools"] = evaluate_solver(solver.with_config(mode="tools", samples=1), problems)
program = "greedy tools, program's output"
results[program] = evaluate_solver(solver.with_config(mode="tools", samples=1, answer_from="program"), problems)
for name in ("greedy tools", program):
    print(f"{name}: {results[name].summary()}")

# %% [markdown]
# **The submission's own mode**: tool-integrated reasoning with the majority vote (`MODE`, `SAMPLES`).

# %%
submitted = f"vote of {SAMPLES}, {MODE}"
results[submitted] = evaluate_solver(solver, problems)
print(f"{submitted}: {results[submitted].summary()}")

# %% [markdown]
# One compute problem, answered both ways: in its head the model must multiply; with a tool it only has
# to write the product down as code and read the sandbox's output.

# %%
pick = next((i for i, p in enumerate(problems) if p.metadata.get("kind") == "compute"), None)
for name in ("greedy reasoning", "greedy tools") if pick is not None else ():
    print(f"--- {name} (truth {problems[pick].answer}):", results[name].records[pick]["output"], sep="\n")

# %% [markdown]
# ## Accuracy by mode and problem kind

# %%
table = pd.DataFrame({m: {"overall": r.accuracy, **r.by_kind} for m, r in results.items()}).T
compute = table["compute"] if "compute" in table else pd.Series(0.0, index=table.index)
gains = {m: float(compute[m] - compute["greedy reasoning"]) for m in table.index if m != "greedy reasoning"}
print("on compute problems, against greedy reasoning:", {m: f"{g:+.3f}" for m, g in gains.items()})
table.round(3)

# %%
fig = plots.bars([m.replace(", ", ",\n") for m in table.index], list(compute), "accuracy on compute problems",
                 "Compute problems: tool use against reasoning alone", run.output_dir / "compute_accuracy.png")

# %% [markdown]
# ## The time budget
# `TimeBudget` gives each problem `(time left - reserve) / problems left`. Below, five problems share
# 100 s with a 10 s reserve; the second and fifth would take 40 s and 30 s. The first leaves time over,
# and its share flows to the rest; a problem that needs more than its share is cut at its deadline.

# %%
pd.DataFrame(budget_schedule(100, [5, 40, 5, 5, 30])).set_index("problem")

# %% [markdown]
# ## The submission, through the competition's gateway
# `run_submission` builds Kaggle's `predict` around the solver, shares the budget over the problems,
# normalizes every answer and falls back to 0 whenever the solver fails. On a rerun it serves `predict`
# to Kaggle (`kaggle_evaluation`'s inference server, or AIMO 1's `aimo` loop) and the competition's own
# limit is the budget; locally it runs the same contract through a local gateway over the public
# problems (AIMO 3's are not in DATA_DIR: AIMO 2's, which have the same format). The tiny model gets the
# real AIMO problems wrong; what must hold is that every problem is answered, in range, within budget.

# %%
problems_csv = None if RERUN else local_problems_csv(run.data_dir, COMPETITION, problems[:10], run.output_dir)
result = run_submission(problems_csv=problems_csv, competition=COMPETITION, out_dir=run.output_dir,
                        time_budget_s=None if RERUN else TIME_BUDGET, solver_factory=solver.loaded, seed=SEED)
if result.gateway is not None:  # None on a rerun: Kaggle keeps the results
    spec = competition_spec(COMPETITION)
    answers = result.gateway.submission.to_pandas()
    in_range = answers["answer"].between(0, spec.max_answer).all()
    print(f"{COMPETITION}: {len(answers)} answers from {Path(result.submission_csv).name}, all in 0..{spec.max_answer}: "
          f"{in_range}, correct: {result.n_correct}")
    answered = pd.DataFrame([{"id": r.id, "answer": r.answer, "fallback": r.error is not None} for r in result.records])
    print(answered.to_string(index=False))

# %% tags=["nbval-ignore-output"]
timing = {}
if result.gateway is not None:
    timing = {"budget_s": TIME_BUDGET, "used_s": round(result.gateway.total_seconds, 1),
              "model_load_s": round(solver.load_seconds or 0.0, 1),
              "slowest_problem_s": round(max(r.seconds for r in result.records), 1),
              "fallbacks": result.n_fallbacks, "within_budget": result.gateway.total_seconds <= TIME_BUDGET}
pd.Series(timing, dtype=object).to_frame("gateway run")

# %% [markdown]
# **When time runs out.** The same submission with a budget far too small, 1 s for all the problems: each
# gets its share (about 0.09 s), the deadline cuts generation inside it, and the run still ends within
# the budget with every problem answered in range. (Had a problem overrun its share, the problems after
# it would share what is left; once only the reserve is left, they get the fallback answer at once.)

# %% tags=["nbval-ignore-output"]
if not RERUN:
    tight = run_submission(solver, problems_csv, COMPETITION, run.output_dir / "tight", time_budget_s=1, seed=SEED)
    print(f"budget 1 s: {len(tight.records)} answers in {tight.gateway.total_seconds:.2f} s, "
          f"{tight.n_fallbacks} fallbacks, all in range: "
          f"{all(0 <= r.answer <= competition_spec(COMPETITION).max_answer for r in tight.records)}")
    print("seconds allotted per problem:", [round(r.allotted, 2) for r in tight.records])

# %%
metrics = {
    "model": MODEL, "adapter": ADAPTER, "model_path": model_path, "competition": COMPETITION, "mode": MODE,
    "samples": SAMPLES, "eval_problems": len(problems),
    "accuracy": {m: r.accuracy for m, r in results.items()},
    "by_kind": {m: r.by_kind for m, r in results.items()},
    "compute_gain_over_greedy_reasoning": gains,
    "gateway": None if result.gateway is None else {
        "problems": len(result.records), "n_correct": result.n_correct, "fallbacks": result.n_fallbacks,
        "all_in_range": bool(in_range), **timing},
}
write_metrics(run.root_output_dir, "05_submission", metrics)
print(sorted(metrics))
