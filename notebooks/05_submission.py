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
# # 05 · The AIMO submission: tool use, voting, a configuration chosen by measurement, the gateway
#
# This is the notebook you submit. On Kaggle's rerun it is given hidden problems one at a time, and it
# must **never crash, never run out of time, and always answer** with an integer in the competition's
# range. The ideas from the AIMO winners that make a tuned model into a submission:
#
# 1. **Tool-integrated reasoning** (ToRA, the AIMO 1 winner): the model writes a ```python block and
#    opens an ```output block; generation stops there, the code runs in a sandbox, its output is
#    appended, and the model goes on reading real numbers instead of inventing them. With **persistent
#    state** (AIMO 3's winners ran persistent Python kernels) a later block sees the earlier blocks'
#    variables.
# 2. **Self-consistency**: draw many samples per problem (batched, one `generate` call per wave) and
#    vote on their answers; stop early once the vote cannot change or enough samples agree, break ties
#    deterministically, and fall back to a fixed answer when no sample's answer parses. Votes may be
#    **weighted by confidence** (AIMO 3's winners), and a **mixed** vote draws half its samples by
#    reasoning and half with tools (AIMO 2's second place: 7 + 8), so that the style the model is sure
#    of on *this* problem wins, with no label saying which style a problem needs.
# 3. **A choice by measurement**: the submitted configuration is the best one on notebook 01's
#    *validation* problems; the held-out problems only report how the choice does. Picking on held-out
#    problems would report their luck as skill.
# 4. **A time budget**: the run has one wall-clock limit (AIMO 2/3: 5 h for 50 problems). Each problem
#    gets an equal share of what is left after a safety reserve, and the deadline is enforced *inside*
#    generation (a stopping criterion checked at every token), so a long sample cannot overrun it.
# 5. **The competition's API**: AIMO 2 and 3 call a function named `predict(id_, problem)` that returns
#    a one-row DataFrame; AIMO 1 loops over `env.iter_test()`. Locally the same code runs through a local
#    gateway with the same contract; on Kaggle before submitting, through the competition's own local
#    gateway; on the rerun it is served to Kaggle. The model loads lazily, inside the first `predict`
#    call, so that the server is up within Kaggle's 15-minute startup limit.
#
# Answers are read with `utils.answers.extract_answer` and fitted to the competition: AIMO 1 and 2 take
# the answer **mod 1000**; AIMO 3 takes 0–99999 as it is (an out-of-range answer is not a vote).

# %% tags=["parameters"]
MODEL = "tiny"  # the base model: "tiny", a local folder, a hub id, or a Kaggle Model handle
ADAPTER = "auto"  # "auto": notebook 04's chosen model, else notebook 02's adapter; a folder; empty: the base alone
QUANTIZATION = "none"  # "none", "8bit", "4bit" for MODEL or ADAPTER (notebook 04's choice names its own)
COMPETITION = "aimo3"  # "aimo1", "aimo2" or "aimo3": the answer range, and the API served on a rerun
DATA_DIR = "../shared/data"
OUTPUT_DIR = "outputs"
SEED = 0
EVAL_SOURCE = "embedded"  # held-out (and validation) problems from notebook 01
EVAL_LIMIT = 200  # held-out problems every configuration is reported on
VALIDATION_LIMIT = 100  # validation problems the submitted configuration is chosen on
SUBMIT = "auto"  # "auto": the best configuration on validation; or one configuration's name below
MODE = "tools"  # the single-style vote's mode besides reasoning ("tools" or "reasoning")
SAMPLES = 8  # samples per problem for the votes
WAVE_SIZE = 4  # samples per batched generate call; the vote may stop after any wave
TEMPERATURE = 0.7  # the sampling temperature voting used so far
LOW_TEMPERATURE = 0.3  # the lower temperature measured against it
STOP_WHEN_AGREE = 3  # the early stop measured: stop drawing once this many samples agree (AIMO 3: 4 of 8)
MAX_NEW_TOKENS = 64  # per generate call (a 7B model needs about 1024)
MAX_CODE_ROUNDS = 2  # code blocks run per sample
ANSWER_FROM = "boxed"  # where each sample's answer is read: boxed (its final answer) or program (its last output)
TIME_BUDGET = 120  # seconds for the local gateway run (on a Kaggle rerun: the competition's limit)
GPU = "auto"  # the card(s) the memory plan checks: "auto" (those present), "2xT4", "4xL4", "H100"
ENGINE = "hf"  # what decodes: "hf" (transformers) or "vllm" (vLLM, installed from wheels: docs/KAGGLE.md)
ENGINE_OPTIONS = {}  # vLLM's settings (utils.engine_vllm.VLLMOptions), e.g. {"kv_cache_dtype": "fp8"}

# %%
import sys
from pathlib import Path

sys.path[:0] = [str(p) for p in [Path("../src"), *Path("/kaggle/input").glob("*/src")] if p.is_dir()]

# %%
import time
from dataclasses import asdict

import pandas as pd

from utils import notebooks, plots
from utils.answers import majority_vote
from utils.gateway import competition_spec, is_competition_rerun
from utils.io import write_metrics
from utils.solver import (
    budget_schedule,
    build_solver,
    choose_configuration,
    evaluate_solver,
    evaluation_problems,
    kaggle_dry_run,
    local_problems_csv,
    submission_model,
    two_run_score,
    validation_problems,
    vote_diagnosis,
)
from utils.submission import make_predict, run_submission

run = notebooks.start("05_submission", OUTPUT_DIR, DATA_DIR, SEED)
RERUN = is_competition_rerun()  # True only while Kaggle reruns the notebook on the hidden problems
started = time.monotonic()

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
# ## The candidates
# `build_solver(..., lazy=True)` wraps the model in a `Solver` without loading it: the first use loads
# it. Each candidate is the same solver with some settings changed (`Solver.with_config`):
#
# - **greedy reasoning** / **greedy tools**: one greedy sample, step by step or with code.
# - **greedy pair, checked, weighted**: one greedy sample in each style, and the one the model is surer
#   of wins (its *confidence*: the geometric mean of the probabilities it gave its own tokens), unless
#   it is a tool sample whose final answer is not what its program printed (`program_check`: the model
#   miscopied the output, or its code computed something else; such a sample votes with weight 0). A
#   per-problem choice of style that needs no label, at the cost of two samples.
# - **vote of N** in one style, at `TEMPERATURE` (how the submission voted so far) or `LOW_TEMPERATURE`.
# - **mixed vote of N, checked, weighted**: half reasoning and half tool samples, weighted the same way.
#
# `ENGINE` picks what decodes the samples: transformers' `generate` (`"hf"`, the default), or vLLM (`"vllm"`:
# continuous batching, a paged KV cache, the adapter served as a LoRA request), which the GPU recipes use.
# Everything else is the same solver: the tool loop, the votes, the seeds, and the deadline (inside vLLM's step
# loop, where requests past it are aborted).

# %%
model_path = submission_model(MODEL, ADAPTER, run.root_output_dir)
solver = build_solver(model_path, mode="tools", samples=SAMPLES, seed=SEED, quantization=QUANTIZATION,
                      competition=COMPETITION, lazy=True, wave_size=WAVE_SIZE, temperature=TEMPERATURE,
                      max_new_tokens=MAX_NEW_TOKENS, max_code_rounds=MAX_CODE_ROUNDS, answer_from=ANSWER_FROM,
                      engine=ENGINE, engine_options=ENGINE_OPTIONS)
print("model:", model_path.replace(str(run.root_output_dir), OUTPUT_DIR), "| engine:", ENGINE)
pair = dict(samples=2, wave_size=2, temperature=0.0)  # temperature 0: each style's greedy sample
CANDIDATES = {
    "greedy reasoning": dict(mode="reasoning", samples=1),
    "greedy tools": dict(mode="tools", samples=1),
    "greedy pair, checked, weighted": dict(mode="mixed", weighted=True, program_check=True, **pair),
    f"vote of {SAMPLES}, reasoning, T={TEMPERATURE}": dict(mode="reasoning"),
    f"vote of {SAMPLES}, reasoning, T={LOW_TEMPERATURE}": dict(mode="reasoning", temperature=LOW_TEMPERATURE),
    f"vote of {SAMPLES}, {MODE}, T={TEMPERATURE}": dict(mode=MODE),
    f"mixed vote of {SAMPLES}, checked, weighted, T={LOW_TEMPERATURE}": dict(
        mode="mixed", weighted=True, program_check=True, temperature=LOW_TEMPERATURE),
}
pd.DataFrame({name: asdict(solver.with_config(**changes).config) for name, changes in CANDIDATES.items()}).T[
    ["mode", "samples", "temperature", "weighted", "program_check"]]

# %% [markdown]
# ## The choice, on validation problems
# `evaluate_solver` runs a solver's `solve_batch`, which samples every problem still undecided in one
# batched call per wave (the same votes and early stops as `solve`, which the submission calls one
# problem at a time), and scores the answers as the competition would. Every candidate runs on the
# first `VALIDATION_LIMIT` of notebook 01's embedded *validation* problems (both kinds, unlabelled at
# solve time); the best is submitted, and a tie goes to the one that draws fewer samples.

# %%
val_problems = validation_problems(run.root_output_dir, EVAL_SOURCE, VALIDATION_LIMIT)
validation = {name: evaluate_solver(solver.with_config(**changes), val_problems)
              for name, changes in CANDIDATES.items()} if val_problems else {}
drawn = {name: sum(r["samples"] for r in result.records) for name, result in validation.items()}
chosen = SUBMIT if SUBMIT != "auto" else (
    choose_configuration({n: r.accuracy for n, r in validation.items()}, drawn) if validation
    else "greedy pair, checked, weighted")  # no validation problems (a rerun): the embedded default's choice
if chosen not in CANDIDATES:
    raise ValueError(f"SUBMIT={SUBMIT!r}: expected 'auto' or one of {list(CANDIDATES)}")
print(f"{len(val_problems)} validation problems; submitted: {chosen}")
pd.DataFrame({n: {"accuracy": r.accuracy, **r.by_kind, "samples drawn": drawn[n]}
              for n, r in validation.items()}).T.round(3)

# %% [markdown]
# ## Every configuration on the held-out problems
# The same candidates on notebook 01's held-out problems, which played no part in the choice. The tiny
# model was trained on *compute* problems (a product of two 2-digit numbers, out of reach of its mental
# arithmetic) only with tools and on *mental* ones only by reasoning, so read the table per kind: a
# single style fails the other kind, and a configuration that picks the style per problem can get both.

# %%
problems = evaluation_problems(run.root_output_dir, EVAL_SOURCE, EVAL_LIMIT)
results = {name: evaluate_solver(solver.with_config(**changes), problems) for name, changes in CANDIDATES.items()}
table = pd.DataFrame({n: {"overall": r.accuracy, **r.by_kind} for n, r in results.items()}).T
if len(table):
    table["submitted"] = table.index == chosen
table.round(3)

# %% [markdown]
# One compute problem, answered both ways: in its head the model must multiply; with a tool it only has
# to write the product down as code and read the sandbox's output.

# %%
pick = next((i for i, p in enumerate(problems) if p.metadata.get("kind") == "compute"), None)
for name in ("greedy reasoning", "greedy tools") if pick is not None else ():
    print(f"--- {name} (truth {problems[pick].answer}):", results[name].records[pick]["output"], sep="\n")

# %%
compute = table["compute"] if "compute" in table else pd.Series(0.0, index=table.index)
gains = {m: float(compute[m] - compute["greedy reasoning"]) for m in table.index if m != "greedy reasoning"}
print("on compute problems, against greedy reasoning:", {m: f"{g:+.3f}" for m, g in gains.items()})
fig = plots.bars([m.replace(", ", ",\n") for m in table.index], list(compute), "accuracy on compute problems",
                 "Compute problems: tool use against reasoning alone", run.output_dir / "compute_accuracy.png")

# %% [markdown]
# ## Why voting lost, and what fixes it
# A vote gains when single samples are often right and their errors scatter; it loses when sampling
# makes each sample worse than the greedy answer (a small model's arithmetic slips at a high
# temperature), or when errors pile up on one wrong answer. Per vote: the accuracy of *one sample*, of
# the vote, whether *any* sample was right (pass@k), and on the problems the vote got wrong the share of
# samples on the wrong winner.

# %%
diagnosis = {n: vote_diagnosis(r) for n, r in results.items() if CANDIDATES[n].get("samples", SAMPLES) > 1}
pd.DataFrame(diagnosis).T.round(3)

# %% [markdown]
# Read the table against greedy reasoning's accuracy. On the embedded default both causes show. At
# `TEMPERATURE` 0.7 **one sample is much worse than the greedy answer** (the tiny model's steps slip
# when it samples), and a vote of such samples cannot climb back to greedy; at `LOW_TEMPERATURE` each
# sample is better but its errors **pile up** on one wrong answer (a larger share of the samples on the
# wrong winner), so the vote still stays at or below greedy. A tools vote loses most: a tools prompt on
# a *mental* problem is outside what the model learned, so half the problems are lost in every sample.
# More samples of one style do not fix that; what does is the other style: pass@k of the mixed vote is
# the highest of all, and a check that drops tool answers their program contradicts, with confidence to
# break the rest, picks the right style per problem. The cheapest form, one greedy sample per style, is
# what validation chose when this notebook was written.

# %% [markdown]
# ## The winners' techniques, each against its absence on the same problems
# - **Confidence weighting** and **the program check**: the weighted votes' samples voted again with
#   equal weights (the check kept), and with their confidences alone (no check).
# - **Early stop once `STOP_WHEN_AGREE` agree** (AIMO 3 stopped at 4 of 8): every vote replayed wave by
#   wave on its own samples with that stop added (`min_votes`) to the one it has (once the winner cannot
#   change, which never changes it): samples drawn and accuracy. The replay is exact: with the same seed
#   the solver draws the same waves, and the added stop can only come first.
# - **Persistent state**: greedy tools on the compute problems, with each code block run after the
#   sample's earlier blocks.
# - **AIMO 3's two runs**: the submitted configuration run again with another seed; a problem scores 1
#   if both runs answer it right, 0.5 if one does. A greedy configuration's two runs are the same run.

# %%
def revote(result, weight) -> float:
    """Accuracy of the same samples voted again, `weight(sample's weight, its confidence)` each."""
    right = []
    for r in result.records:
        weights = [weight(w, c) for w, c in zip(r["sample_weights"], r["sample_confidences"], strict=True)]
        vote = majority_vote(r["sample_answers"], weights=weights)
        right.append(bool(vote.counts) and vote.answer == r["answer"])
    return sum(right) / len(right) if right else 0.0


def replay_early_stop(result, k: int, wave: int) -> dict:
    """A vote's accuracy and samples drawn had it also stopped after the first wave where `k` samples agree."""
    right, drawn = [], 0
    for r in result.records:
        answers, weights = r["sample_answers"], r["sample_weights"]
        n = next((end for end in range(wave, len(answers) + wave, wave)
                  if max(majority_vote(answers[:end]).counts.values(), default=0) >= k), len(answers))
        vote = majority_vote(answers[:n], weights=weights[:n])
        right.append(bool(vote.counts) and vote.answer == r["answer"])
        drawn += min(n, len(answers))
    return {"accuracy": sum(right) / len(right) if right else 0.0, "samples_drawn": drawn}


techniques = {}
if problems:
    techniques["confidence_weighting"] = {n: {
        "with": results[n].accuracy,
        "without confidence": revote(results[n], lambda w, c: float(w > 0)),
        "without program check": revote(results[n], lambda w, c: 1.0 if c is None else c)}
        for n, changes in CANDIDATES.items() if changes.get("weighted")}
    votes = [n for n, c in CANDIDATES.items() if c.get("samples", SAMPLES) > 2]
    replayed = {n: replay_early_stop(results[n], STOP_WHEN_AGREE, CANDIDATES[n].get("wave_size", WAVE_SIZE))
                for n in votes}
    techniques["stop_when_agree"] = {n: {
        "k": STOP_WHEN_AGREE,
        "accuracy": {"with": replayed[n]["accuracy"], "without": results[n].accuracy},
        "samples_drawn": {"with": replayed[n]["samples_drawn"], "without": diagnosis[n]["samples_drawn"]}}
        for n in votes}
    compute_problems = [p for p in problems if p.metadata.get("kind") == "compute"] or problems
    tools = {state: evaluate_solver(solver.with_config(**CANDIDATES["greedy tools"], persistent_state=state),
                                    compute_problems) for state in (True, False)}
    persistent = tools[True]
    techniques["persistent_state"] = {
        "configuration": "greedy tools, compute problems",
        "accuracy": {"with": tools[True].accuracy, "without": tools[False].accuracy},
        "samples_with_two_code_blocks": sum(r["output"].count("```output") > 1 for r in persistent.records)}
    changes = CANDIDATES.get(chosen, {})
    greedy = changes.get("samples", SAMPLES) == 1 or changes.get("temperature", TEMPERATURE) == 0
    second = results[chosen] if greedy else evaluate_solver(solver.with_config(**changes, seed=SEED + 1), problems)
    techniques["two_run_score"] = {"configuration": chosen, "seeds": [SEED, SEED + 1], "greedy": greedy,
                                   "runs": [results[chosen].accuracy, second.accuracy],
                                   "penalized_score": two_run_score(results[chosen], second)}
pd.json_normalize(techniques, sep=" / ").T.rename(columns={0: "value"})

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
# (The problems, and so this cell's table, depend on whether DATA_DIR holds the public sets; the cell after it
# prints only what must hold either way.)

# %% tags=["nbval-ignore-output"]
submitted = solver.with_config(**CANDIDATES.get(chosen, {}))
problems_csv = None if RERUN else local_problems_csv(run.data_dir, COMPETITION, problems[:10], run.output_dir)
result = run_submission(problems_csv=problems_csv, competition=COMPETITION, out_dir=run.output_dir,
                        time_budget_s=None if RERUN else TIME_BUDGET, solver_factory=submitted.loaded, seed=SEED)
if result.gateway is not None:  # None on a rerun: Kaggle keeps the results
    spec = competition_spec(COMPETITION)
    answers = result.gateway.submission.to_pandas()
    in_range = answers["answer"].between(0, spec.max_answer).all()
    print(f"{COMPETITION}: {len(answers)} answers from {Path(result.submission_csv).name}, all in 0..{spec.max_answer}: "
          f"{in_range}, correct: {result.n_correct}")
    answered = pd.DataFrame([{"id": r.id, "answer": r.answer, "fallback": r.error is not None} for r in result.records])
    print(answered.to_string(index=False))

# %%
if result.gateway is not None:
    print(f"{len(answers)} problems answered, all in range: {in_range}, fallbacks: {result.n_fallbacks}")

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
    tight = run_submission(submitted, problems_csv, COMPETITION, run.output_dir / "tight", time_budget_s=1, seed=SEED)
    print(f"budget 1 s: {len(tight.records)} answers in {tight.gateway.total_seconds:.2f} s, "
          f"{tight.n_fallbacks} fallbacks, all in range: "
          f"{all(0 <= r.answer <= competition_spec(COMPETITION).max_answer for r in tight.records)}")
    print("seconds allotted per problem:", [round(r.allotted, 2) for r in tight.records])

# %% [markdown]
# **Through Kaggle's own gateway.** In the interactive session on Kaggle, before submitting, the
# competition's `kaggle_evaluation` package is attached: `kaggle_dry_run` then serves the same `predict`
# through its real `run_local_gateway` on the competition's `test.csv` (three placeholder problems), so
# the real contract (argument types, validation, the output file) is checked before the rerun, not only
# the project's stand-in above. Off Kaggle there is no such package and nothing runs.

# %%
dry_run_csv = None if RERUN else kaggle_dry_run(
    make_predict(lambda id_, problem: submitted(problem, time.monotonic() + 60)), COMPETITION)
print("Kaggle's local gateway:", f"served {dry_run_csv}" if dry_run_csv else "not attached here")

# %% [markdown]
# ## The metrics
# Every configuration's held-out accuracy (`accuracy`, `by_kind`), the validation choice (`validation`,
# `submitted`), the techniques against their absence (`techniques`), why voting lost (`vote_diagnosis`),
# and the notebook's own wall time (the embedded default must stay within 180 s on a 2-core CPU).

# %%
metrics = {
    "model": MODEL, "adapter": ADAPTER, "model_path": model_path, "engine": ENGINE, "competition": COMPETITION,
    "mode": MODE,
    "samples": SAMPLES, "eval_problems": len(problems), "submitted": chosen,
    "submitted_config": {k: v for k, v in asdict(submitted.config).items() if k != "grace_s"},
    "accuracy": {m: r.accuracy for m, r in results.items()},
    "by_kind": {m: r.by_kind for m, r in results.items()},
    "compute_gain_over_greedy_reasoning": gains,
    "validation": {"problems": len(val_problems), "accuracy": {n: r.accuracy for n, r in validation.items()},
                   "by_kind": {n: r.by_kind for n, r in validation.items()}, "samples_drawn": drawn},
    "vote_diagnosis": diagnosis,
    "techniques": techniques,
    "kaggle_dry_run": dry_run_csv is not None,
    "wall_seconds": round(time.monotonic() - started, 1),
    "gateway": None if result.gateway is None else {
        "problems": len(result.records), "n_correct": result.n_correct, "fallbacks": result.n_fallbacks,
        "all_in_range": bool(in_range), **timing},
}
write_metrics(run.root_output_dir, "05_submission", metrics)
print(sorted(metrics))

# %% tags=["nbval-ignore-output"]
print(f"notebook wall time: {time.monotonic() - started:.0f} s")
