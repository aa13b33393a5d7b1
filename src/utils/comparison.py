"""Notebook 03's runner: experiments as folders, as in PEFT's method_comparison, one runner, one table.

An experiment is a folder holding the method's config file and `training_params.json` (its overrides of the
shared `default_training_params.json` one or two levels up: `trl.SFTConfig` fields). The config file names the method:
- `adapter_config.json`: a peft method, written by the config's `save_pretrained` and read back with
  `PeftConfig.from_pretrained`;
- `bottleneck_config.json`: the project's bottleneck adapter (peft has none; `utils.adapters`);
- `full_finetuning.json`: every weight trains (there is no peft config for "no adapter").
Every run is measured the same way: held-out accuracy, trainable parameters, adapter bytes, train seconds,
peak memory, and forgetting (the rise of the loss on pretraining-like text the task does not teach).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import shutil
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from utils.likelihood import text_loss

FULL_CONFIG = "full_finetuning.json"
DEFAULTS = "default_training_params.json"
TRAINING = "training_params.json"


@dataclass
class Experiment:
    """One experiment folder, read: its method's config (a peft config, a `BottleneckConfig`, or None for
    full fine-tuning) and its training parameters (the defaults with the folder's overrides)."""

    name: str
    folder: Path
    kind: str  # "peft", "bottleneck" or "full"
    config: object
    training: dict = field(default_factory=dict)


def load_experiment(folder: str | Path, budget: dict | None = None) -> Experiment:
    """Read an experiment folder (see the module's docstring); `budget` (SFTConfig fields: steps, batch, length)
    overrides every folder's training parameters, so that every method gets the same."""
    from peft import PeftConfig

    from utils.adapters import BOTTLENECK_CONFIG, BottleneckConfig

    folder = Path(folder)
    defaults = [p for p in (folder.parent / DEFAULTS, folder.parent.parent / DEFAULTS) if p.is_file()]
    training = json.loads(defaults[0].read_text()) if defaults else {}
    if (folder / TRAINING).is_file():
        training |= json.loads((folder / TRAINING).read_text())
    training |= budget or {}
    if (folder / "adapter_config.json").is_file():
        kind, config = "peft", PeftConfig.from_pretrained(str(folder))
    elif (folder / BOTTLENECK_CONFIG).is_file():
        kind, config = "bottleneck", BottleneckConfig(**json.loads((folder / BOTTLENECK_CONFIG).read_text()))
    elif (folder / FULL_CONFIG).is_file():
        kind, config = "full", None
    else:
        raise FileNotFoundError(
            f"{folder}: no adapter_config.json, {BOTTLENECK_CONFIG} or {FULL_CONFIG}: not an experiment folder"
        )
    return Experiment(folder.name, folder, kind, config, training)


def load_experiments(root: str | Path, names: str = "all", budget: dict | None = None) -> list[Experiment]:
    """The experiments under `root` ("all": every sub-folder, by name; or comma-separated folder names)."""
    root = Path(root)
    if names.strip() == "all":
        folders = sorted(p for p in root.iterdir() if p.is_dir())
    else:
        folders = [root / n.strip() for n in names.split(",") if n.strip()]
    return [load_experiment(f, budget) for f in folders]


def config_code(exp: Experiment) -> str:
    """The experiment's config as the code that builds it: the class and the fields that differ from its
    defaults (peft's `task_type`, `peft_type` and bookkeeping left out)."""
    if exp.kind == "full":
        return "None  # full fine-tuning: every weight trains, no adapter"
    cls = type(exp.config)
    skip = {"peft_type", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping"}
    default = cls() if exp.kind == "bottleneck" else cls(task_type=exp.config.task_type)
    changed = {
        k: v
        for k, v in vars(exp.config).items()
        if k not in skip and not k.startswith("_") and v != getattr(default, k, None)
    }
    args = ", ".join(f"{k}={v!r}" for k, v in changed.items())
    return f"{cls.__name__}({args})"


# ---------------------------------------------------------------- the data every method shares


@dataclass
class ComparisonData:
    """The rows every method trains on, the problems it is scored on, and the text whose loss before and
    after training measures forgetting."""

    train_rows: list[dict]
    eval_problems: list
    forgetting_texts: list[str]


def forgetting_texts(n: int = 64, seed: int = 1234) -> list[str]:
    """Text of the tiny model's pretraining kinds that the task does not teach: number lists copied and
    arithmetic worked as Python (the task is solved in words), drawn with a seed pretraining never used."""
    from utils.synthetic import copy_sequences, program_snippets

    return copy_sequences(seed=seed, n=n // 2) + program_snippets(seed=seed, n=n - n // 2)


def prepare_data(
    root_output_dir,
    tokenizer,
    n_train: int,
    eval_limit: int,
    sources: str = "embedded",
    eval_source: str = "embedded",
    mode: str = "reasoning",
    n_forgetting: int = 64,
) -> ComparisonData:
    """Notebook 01's first `n_train` training rows of `sources` in prompt style `mode` (one pass: every method
    and seed sees the same rows) and its first `eval_limit` held-out problems of `eval_source` that are
    prompted in that style."""
    from utils.evaluation import held_out, problem_modes
    from utils.training import training_rows

    train, _ = training_rows(root_output_dir, sources, tokenizer)
    train = [r for r in train if r["mode"] == mode]
    if len(train) < n_train:
        raise ValueError(
            f"{len(train)} {mode} rows from {sources!r} in notebook 01's train.jsonl; the budget needs {n_train}"
        )
    problems = held_out(root_output_dir, eval_source)
    problems = [p for p, m in zip(problems, problem_modes(problems, "auto"), strict=True) if m == mode]
    return ComparisonData(train[:n_train], problems[:eval_limit], forgetting_texts(n_forgetting))


# ---------------------------------------------------------------- measurements


def weight_bytes(directory: str | Path) -> int:
    """Bytes of the saved weights (safetensors / bin files) in `directory`: what the method ships."""
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.suffix in (".safetensors", ".bin"))


# ---------------------------------------------------------------- one run


def training_args(exp: Experiment, seed: int, output_dir: str | Path, model):
    """The `trl.SFTConfig` of one run: the experiment's training parameters, the seed, and the precision of the
    hardware (TRL defaults to bf16, which a CPU and a T4 lack)."""
    from trl import SFTConfig

    from utils.modeling import pick_dtype

    device = next(model.parameters()).device
    dtype = pick_dtype(device)
    return SFTConfig(
        output_dir=str(output_dir),
        seed=seed,
        data_seed=seed,
        use_cpu=device.type == "cpu",
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        eval_strategy="no",
        save_strategy="no",  # a run of a comparison is short: measured afresh, never resumed
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        **exp.training,
    )


def _train(model, tokenizer, train_rows, args, peft_config):
    """`train_sft` with no validation rows: the same code path as notebook 02's cells."""
    from utils.training import train_sft

    return train_sft(model, tokenizer, train_rows, None, args, peft_config)


def _prepare(model, exp: Experiment):
    """The model ready to train and the peft config for `SFTTrainer` (None when the model is prepared here)."""
    from utils.adapters import add_bottleneck_adapters

    if exp.kind == "peft":
        return model, copy.deepcopy(exp.config)  # peft resolves "all-linear" in the config it is given
    if exp.kind == "bottleneck":
        return add_bottleneck_adapters(model, copy.deepcopy(exp.config)), None
    return model.requires_grad_(True), None


def run_experiment(
    exp: Experiment, seed: int, data: ComparisonData, model_name: str, output_dir, max_new_tokens: int
):
    """Train one experiment with one seed from a fresh base, save what it trained, and measure it; an exception
    becomes a `failed` record with its error. Writes `output_dir/<name>/seed<seed>.json`."""
    record = {"name": exp.name, "kind": exp.kind, "seed": seed, "status": "ok", "error": None}
    record["learning_rate"] = exp.training.get("learning_rate")
    run_dir = Path(output_dir) / exp.name / f"seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        with _quiet():
            record |= _measured_run(exp, seed, data, model_name, run_dir, max_new_tokens)
    except Exception as e:  # noqa: BLE001 - a method that fails is a result; the others go on
        record.update(status="failed", error=f"{type(e).__name__}: {e}"[:300])
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    (run_dir.parent / f"seed{seed}.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    return record


def _measured_run(exp, seed, data, model_name, run_dir: Path, max_new_tokens: int) -> dict:
    from utils.adapters import save_bottleneck
    from utils.evaluation import evaluate
    from utils.generation import GenerationConfig
    from utils.modeling import load_model, seed_everything

    seed_everything(seed)
    model, tokenizer = load_model(model_name)
    before = text_loss(model, tokenizer, data.forgetting_texts)
    total = sum(p.numel() for p in model.parameters())
    model, peft_config = _prepare(model, exp)
    args = training_args(exp, seed, run_dir / "train", model)
    result = _train(model, tokenizer, data.train_rows, args, peft_config)
    trained = result.model
    saved = Path(args.output_dir) / "final"  # the adapter (peft) or the whole model (full), and the tokenizer
    if exp.kind == "bottleneck":  # train_sft saved the whole model: keep the adapters alone
        shutil.rmtree(saved)
        saved = save_bottleneck(trained, run_dir / "adapter")
    after = text_loss(trained, tokenizer, data.forgetting_texts)
    scored = evaluate(
        trained, tokenizer, data.eval_problems, "auto", GenerationConfig(max_new_tokens=max_new_tokens)
    )
    out = {
        "accuracy": scored.accuracy,
        "trainable_parameters": result.trainable_parameters,
        "trainable_share": result.trainable_parameters / total,
        "adapter_bytes": weight_bytes(saved),
        "train_seconds": result.seconds,
        "peak_memory_mb": result.peak_memory_mb,
        "final_train_loss": result.final_train_loss,
        "forgetting_loss_before": before,
        "forgetting_loss_after": after,
        "forgetting": after - before,
    }
    return out


@contextlib.contextmanager
def _quiet():
    """Trainer and peft warn per method and print their logs: keep the notebook's stored outputs clean."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


def _worker_start() -> None:
    """One thread per worker: two one-thread runs use two cores better than one two-thread run (the tiny
    model's matrices are too small to split). Output at the file-descriptor level (library import notices)
    goes nowhere: Jupyter would otherwise show it in the cell, in whatever order the workers write it."""
    import os

    torch.set_num_threads(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


def _run_job(job: tuple) -> dict:
    return run_experiment(*job)


def run_all(jobs: list[tuple], workers: int = 1) -> list[dict]:
    """Run `(experiment, seed, data, model, output_dir, max_new_tokens)` jobs, in order; with `workers` > 1,
    in that many one-thread processes (a run depends only on its seed, so the records are the same)."""
    if workers <= 1:
        return [_run_job(job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state forked from the notebook
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start) as pool:
        return list(pool.map(_run_job, jobs))


# ---------------------------------------------------------------- the table, and what it can tell apart


def results_table(records: list[dict]):
    """One row per experiment: the mean of every metric over its seeds, and the accuracy's interval
    (the worst and the best seed)."""
    import pandas as pd

    runs = pd.DataFrame(records)
    ok = runs[runs["status"] == "ok"]
    keys = ["accuracy", "trainable_parameters", "trainable_share", "adapter_bytes", "train_seconds",
            "peak_memory_mb", "final_train_loss", "forgetting"]  # fmt: skip
    table = ok.groupby("name", sort=False)[keys].mean()
    table["accuracy_min"] = ok.groupby("name", sort=False)["accuracy"].min()
    table["accuracy_max"] = ok.groupby("name", sort=False)["accuracy"].max()
    table["seeds"] = ok.groupby("name", sort=False)["seed"].count()
    table["learning_rate"] = ok.groupby("name", sort=False)["learning_rate"].first()
    failed = sorted(set(runs["name"]) - set(table.index))
    table = table.sort_values("accuracy", ascending=False)
    table["tier"] = tiers(table)
    return table, failed


def tiers(table) -> list[int]:
    """Tier 1, 2, ... from the best, in the table's row order: methods whose seed intervals overlap, directly
    or through a chain of overlapping intervals, share a tier (the intervals merged into one), so every method
    of a tier beats every method of the tiers below on every seed."""
    order = sorted(range(len(table)), key=lambda i: -table["accuracy_max"].iloc[i])
    tier_of, tier, floor = {}, 0, math.inf
    for i in order:  # from the highest top down: an interval below every one merged so far starts a tier
        if table["accuracy_max"].iloc[i] < floor:
            tier += 1
            floor = table["accuracy_min"].iloc[i]
        floor = min(floor, table["accuracy_min"].iloc[i])
        tier_of[i] = tier
    return [tier_of[i] for i in range(len(table))]


def separated_pairs(table) -> list[tuple[str, str]]:
    """(better, worse) for every pair whose seed intervals do not overlap."""
    names = list(table.index)
    return [
        (a, b) for a in names for b in names if table.loc[a, "accuracy_min"] > table.loc[b, "accuracy_max"]
    ]


def reading(table, failed: list[str]) -> list[str]:
    """What the table can tell, every number from it: the tiers, what is indistinguishable, the cheapest
    method of the best tier, and forgetting."""
    lines = []
    for t, rows in table.groupby("tier"):
        names = ", ".join(
            f"{n} {r.accuracy:.3f} [{r.accuracy_min:.3f}, {r.accuracy_max:.3f}]" for n, r in rows.iterrows()
        )
        same = " (indistinguishable from each other at this budget)" if len(rows) > 1 else ""
        lines.append(f"Tier {t}: {names}{same}.")
    top = table[table["tier"] == 1]
    cheapest = top["trainable_parameters"].idxmin()
    lines.append(
        f"Cheapest in tier 1: {cheapest}, {top.loc[cheapest, 'trainable_parameters']:,.0f} trainable parameters "
        f"({top.loc[cheapest, 'trainable_share']:.2%} of the model), {top.loc[cheapest, 'adapter_bytes'] / 1024:,.1f} KB saved."
    )
    pairs = separated_pairs(table)
    lines.append(
        f"{len(pairs)} of {len(table) * (len(table) - 1) // 2} pairs of methods are separated by more than their seeds' spread."
    )
    forgot = table["forgetting"].sort_values()
    lines.append(
        f"Forgetting (loss after minus before, nats per token; positive: forgot): from {forgot.iloc[0]:+.3f} "
        f"({forgot.index[0]}) to {forgot.iloc[-1]:+.3f} ({forgot.index[-1]}); "
        f"{int((forgot > 0).sum())} of {len(forgot)} methods forgot."
    )
    lines += [f"{name} failed on every seed (see its records)." for name in failed]
    return lines


def display_table(table):
    """The deterministic columns, rounded (train time and memory vary run to run: `speed_table`)."""
    out = table[["tier", "accuracy", "accuracy_min", "accuracy_max", "trainable_parameters", "trainable_share",
                 "adapter_bytes", "final_train_loss", "forgetting", "learning_rate"]].copy()  # fmt: skip
    out["trainable_parameters"] = out["trainable_parameters"].map("{:,.0f}".format)
    out["trainable_share"] = out["trainable_share"].map("{:.3%}".format)
    out["adapter_bytes"] = (out["adapter_bytes"] / 1024).map("{:,.1f}".format)
    out["learning_rate"] = out["learning_rate"].map("{:g}".format)
    return out.rename(columns={"adapter_bytes": "adapter_KB", "trainable_parameters": "trainable"}).round(3)


def speed_table(table):
    return table[["train_seconds", "peak_memory_mb"]].round(1)


def metrics(records: list[dict], table, failed: list[str], settings: dict) -> dict:
    """metrics.json: the settings, and per method its table row and its runs."""
    methods = {}
    for name, row in table.iterrows():
        row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.to_dict().items()}
        row["accuracy_std"] = statistics.pstdev(
            r["accuracy"] for r in records if r["name"] == name and r["status"] == "ok"
        )
        methods[name] = row | {"runs": [r for r in records if r["name"] == name]}
    return {"budget": settings, "seeds": settings.get("seeds"), "methods": methods, "failed": failed,
            "separated_pairs": separated_pairs(table)}  # fmt: skip


def describe(record: dict) -> str:
    """One deterministic line per run (no timings)."""
    head = f"{record['name']:<14} seed {record['seed']}"
    if record["status"] != "ok":
        return f"{head}  FAILED  {record['error']}"
    return (
        f"{head}  accuracy {record['accuracy']:.3f}  final loss {record['final_train_loss']:.3f}  "
        f"forgetting {record['forgetting']:+.3f}"
    )


def default_workers(workers: str | int = "auto") -> int:
    """ "auto": one process per core (at most two) on a CPU, one on a GPU (the runs share the card)."""
    import os

    if workers != "auto":
        return int(workers)
    return 1 if torch.cuda.is_available() else max(1, min(2, os.cpu_count() or 1))
