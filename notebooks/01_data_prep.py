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
# # 01 · Data preparation
#
# Fine-tuning is only as good as its data. This chapter turns every source we have into one clean,
# deduplicated, **decontaminated** set of training examples, and a set of evaluation problems that no
# training example copies.
#
# What happens here, in order:
# 1. **Load** every source into one record schema (`id, source, problem, solution, answer, metadata`):
#    the embedded word problems (always), and the public sets in `DATA_DIR` when present (GSM8K, MATH,
#    AIME, the AIMO validation sets, the Kaggle AIMO files, ToRA's tool-use examples).
# 2. **Filter** to integer answers (the AIMO competitions score integers only) and, for training, to rows
#    with a worked solution: AIME 1983–2024 has answers only, so it is scored, never trained on.
# 3. **Deduplicate** on normalized text, then **decontaminate**: drop every training problem whose text
#    (or enough of its 13-word n-grams) matches an evaluation problem. MATH's training split holds hundreds
#    of AIME problems, for instance: training on them would inflate every AIME score we report later.
# 4. **Format** training examples in DeepSeek-Math's two prompt styles: step-by-step reasoning, and
#    tool-integrated reasoning (prose plus Python whose output the model reads back), every one ending in
#    the boxed answer the prompt asks for.
# 5. **Split** deterministically (a hash of the id and the seed) and write the files notebook 02 reads.
#
# The **embedded default** is a set of generated word problems of two kinds: *mental* problems (two steps
# with small numbers) and *compute* problems (a product of two 2-digit numbers) that a tiny model cannot do
# in its head but can write as code. The embedded model, a tiny Llama built on first use, comes from
# `utils.modeling`; here we use its tokenizer to measure example lengths.

# %% tags=["parameters"]
MODEL = "tiny"  # "tiny" (embedded default), a local path, a hub id, or a Kaggle Model handle
DATA_DIR = "../shared/data"  # raw public data sets; "" = embedded data only
OUTPUT_DIR = "outputs"
SEED = 0
N_EMBEDDED_TRAIN = 6000
N_EMBEDDED_EVAL = 300

# %%
import sys
from pathlib import Path

sys.path[:0] = [str(p) for p in [Path("../src"), *Path("/kaggle/input").glob("*/src")] if p.is_dir()]

# %%
import pandas as pd

from utils import notebooks, plots
from utils.data import DATASETS
from utils.io import write_metrics
from utils.modeling import load_tokenizer, resolve_model
from utils.prep import PrepConfig, prepare

run = notebooks.start("01_data_prep", OUTPUT_DIR, DATA_DIR, SEED)

# %% [markdown]
# ## Load, filter, deduplicate, decontaminate, format, split
# One call does every stage; the table below counts problems per source after each stage.

# %%
config = PrepConfig(seed=SEED, n_embedded_train=N_EMBEDDED_TRAIN, n_embedded_eval=N_EMBEDDED_EVAL)
prep = prepare(config, run.data_dir, run.output_dir)
stages = pd.DataFrame(prep.stages).pivot_table(index="source", columns="stage", values="count", sort=False)
stages.fillna(0).astype(int)

# %% [markdown]
# The raw counts read from `DATA_DIR` against the record counts its MANIFEST lists:

# %%
pd.DataFrame(
    [{"set": name, "file": d.path, "records read": prep.raw_counts.get(name, 0), "MANIFEST": d.expected_records}
     for name, d in DATASETS.items()]
)

# %% [markdown]
# ## What decontamination removed
# Every dropped training problem is paired with the evaluation problem it copies.

# %%
decon = prep.decontamination
print(f"dropped {decon['dropped']} of {decon['total']} training problems")
pd.Series(decon["dropped_per_set"], name="dropped").to_frame()

# %% [markdown]
# ## Training examples
# One example per problem and prompt style. Here is one from each source, rendered with the chat template of
# the model notebook 02 will train (DeepSeek-Math's `User: … Assistant: …` format).

# %% tags=["nbval-ignore-output"]
model_path = resolve_model(MODEL)  # the embedded model is built and cached on first use (about 2 minutes)

# %%
tokenizer = load_tokenizer(model_path)
for source in dict.fromkeys(e["source"] for e in prep.train):
    example = next(e for e in prep.train if e["source"] == source)
    print(f"--- {source}, {example['mode']} ({example['id']})")
    print(tokenizer.apply_chat_template(example["messages"], tokenize=False)[:1200])

# %% [markdown]
# Every training target is a worked solution that ends in `\boxed{answer}`, the format the prompt asks for:
# GSM8K's calculator annotations (`<<48/2=24>>`) and `#### 72` lines are rewritten into a boxed answer, a MATH
# solution that goes on after its box gets a closing line, and rows with an answer but no solution (AIME
# 1983-2024) never train: they are scored instead. The table: rows, prompt style and length in tokens of the
# model's tokenizer, per source.

# %%
def tokens(example):
    text = tokenizer.apply_chat_template(example["messages"], tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])

by_source = {}
for e in prep.train:
    by_source.setdefault(e["source"], []).append(e)
lengths = {s: [tokens(e) for e in es[:500]] for s, es in by_source.items()}
pd.DataFrame.from_dict(orient="index", data={
    s: {"rows": len(es), "format": "/".join(sorted({e["mode"] for e in es})),
        **pd.Series(lengths[s]).quantile([0.5, 0.95, 1.0]).rename(lambda q: f"tokens p{q * 100:.0f}").round()}
    for s, es in by_source.items()
})

# %% [markdown]
# ## Answers and their range
# AIMO 1 and 2 score answers 0-999 (taken mod 1000), AIMO 3 0-99999. Counted per source: answers outside
# each range (a model trained on them must still answer inside it: `utils.answers.normalize_for_competition`).
# The histogram clips its axis at 10^6, so that one huge answer does not squeeze every other.

# %%
answers = {s: [e["answer"] for e in es] for s, es in by_source.items()}
fig = plots.distributions(answers | {"evaluation (all sets)": [p.answer for p in prep.evaluation]}, lengths,
                          run.output_dir / "distributions.png")
answers |= {f"eval: {s}": v for s, v in pd.Series([p.answer for p in prep.evaluation])
            .groupby([p.source for p in prep.evaluation]).agg(list).items()}
pd.DataFrame.from_dict(orient="index", data={
    s: {"answers": len(v), "negative": sum(a < 0 for a in v), "over 999": sum(a > 999 for a in v),
        "over 99999": sum(a > 99999 for a in v)}
    for s, v in answers.items()
})

# %% [markdown]
# ## The splits, written for notebook 02

# %%
counts = prep.counts()
splits = pd.DataFrame([e | {"split": "train"} for e in prep.train] + [e | {"split": "validation"} for e in prep.validation])
print(splits.groupby(["split", "source", "mode"]).size().unstack(fill_value=0))
write_metrics(run.root_output_dir, "01_data_prep", {
    **counts,
    "raw_counts": prep.raw_counts,
    "decontaminated": decon["dropped"],
    "evaluation_by_source": pd.Series([p.source for p in prep.evaluation]).value_counts().to_dict(),
})
print({k: Path(v).name for k, v in prep.files.items()}, counts)
