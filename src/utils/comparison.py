"""A fair comparison of parameter-efficient methods: experiments as data, one runner, one results table.

In the spirit of PEFT's method_comparison: every experiment is a small config naming a method (from
`utils.adapters.METHODS`) and only what it changes; one runner trains each on the same rows with the
same budget (steps, batch, sequence length, seed), records the same metrics for every method, writes
one JSON result per experiment and seed, and reports a method that fails as failed, with its error,
while the others go on. The learning rate is set per method family (PEFT's comparison found IA3 at
1e-4 scoring 0.31 and at 5e-3 scoring 0.46: one rate for all would measure the rate, not the method).
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import math
import shutil
import statistics
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from utils.adapters import get_method, save_method, training_callbacks
from utils.io import atomic_write_json, fingerprint

# Rates for the embedded tiny model at a 30-step budget, picked from a short sweep (seed 0, lowest
# validation loss, 2-3 rates a family); a 7B model wants about ten times less (LoRA ~2e-4, full
# fine-tuning ~2e-5). Methods that train a few vectors or virtual tokens far from the output need the
# largest rates.
FAMILY_LEARNING_RATES = {
    "lora": 1e-2,
    "lycoris": 1e-2,
    "ia3": 1e-1,
    "vera": 1e-1,
    "prompt": 1e-1,
    "bottleneck": 1e-2,
    "full": 5e-4,
}

# The default line-up: one experiment per method, every option at the method's default.
DEFAULT_EXPERIMENTS: list[dict] = [
    {"name": m, "method": m}
    for m in (
        "lora",
        "rslora",
        "dora",
        "qlora",
        "ia3",
        "loha",
        "lokr",
        "vera",
        "prefix",
        "prompt",
        "adaption_prompt",
        "bottleneck",
        "full",
    )
]

RECORD_FIELDS = (
    "name",
    "method",
    "family",
    "seed",
    "status",
    "error",
    "learning_rate",
    "quantization",
    "packing",
    "trainable_parameters",
    "base_parameters",
    "trainable_share",
    "adapter_bytes",
    "train_seconds",
    "steps",
    "tokens",
    "tokens_per_second",
    "peak_memory_mb",
    "memory_kind",
    "final_train_loss",
    "validation_loss",
    "accuracy",
    "accuracy_by_kind",
    "forgetting_loss_before",
    "forgetting_loss_after",
    "forgetting",
    "fingerprint",
)


@dataclass
class Budget:
    """What every method gets: the same steps, batch, sequence length, rows and held-out problems."""

    max_steps: int = 30
    batch_size: int = 8
    max_length: int = 256
    warmup_steps: int = 3
    n_train: int | None = None  # None: max_steps * batch_size rows, one pass over the data
    eval_limit: int = 100
    max_new_tokens: int = 48
    n_forgetting: int = 64
    packing: bool = False  # unpacked, every method sees identical batches (prompt methods need it)
    mode: str = "auto"  # each problem in the prompt style it trains in (tools: code runs in the sandbox)
    n_validation: int = 64  # validation rows whose loss is measured after training (0: none)
    learning_rate_scale: float = 1.0  # multiplies every family's rate: about 0.02 for a 7B model

    def train_rows(self) -> int:
        return self.n_train or self.max_steps * self.batch_size


@dataclass
class Experiment:
    """One method with its options; `learning_rate=None` takes its family's rate, `training` overrides
    `trl.SFTConfig` fields for this method only, `quantization=None` the method's own (4-bit for QLoRA)."""

    name: str
    method: str
    options: dict = field(default_factory=dict)
    learning_rate: float | None = None
    quantization: str | None = None
    training: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, row: dict, where: str = "experiment") -> Experiment:
        """Build from a plain dict (a JSON file's entry), naming `where` and the field on bad input."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(row) - known)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
        for key in ("name", "method"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise ValueError(f"{where}: field {key!r} must be a non-empty string, got {row.get(key)!r}")
        exp = cls(**row)
        try:
            get_method(exp.method)
        except KeyError as e:
            raise ValueError(f"{where}: field 'method': {e.args[0]}") from None
        return exp

    def rate(self) -> float:
        return self.learning_rate or FAMILY_LEARNING_RATES[get_method(self.method).family]


def load_experiments(rows: list[dict], where: str = "experiments") -> list[Experiment]:
    """Experiments from dicts; names must be unique (each names its result files)."""
    experiments = [Experiment.from_dict(r, f"{where}[{i}]") for i, r in enumerate(rows)]
    names = [e.name for e in experiments]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{where}: duplicate experiment names {duplicates}")
    return experiments


def select_experiments(methods: str = "all") -> list[Experiment]:
    """The default experiments of `methods` ("all" or comma-separated method names), in registry order;
    a method without a default experiment gets one with its default options."""
    from utils.adapters import METHODS

    wanted = (
        list(METHODS) if methods.strip() == "all" else [m.strip() for m in methods.split(",") if m.strip()]
    )
    defaults = {e["name"]: e for e in DEFAULT_EXPERIMENTS}
    return load_experiments([defaults.get(m, {"name": m, "method": m}) for m in wanted], "METHODS")


def describe_experiments(experiments: list[Experiment]):
    """A table of the experiments: family, learning rate, base precision, what trains."""
    import pandas as pd

    rows = []
    for e in experiments:
        m = get_method(e.method)
        rows.append(
            {
                "experiment": e.name,
                "method": e.method,
                "family": m.family,
                "learning_rate": e.rate(),
                "base": e.quantization or m.quantization,
                "options": e.options or "defaults",
                "what trains": m.description,
            }
        )
    return pd.DataFrame(rows)


@dataclass
class ComparisonData:
    """The rows every method trains on, the problems it is scored on, and the unrelated text on which
    its loss before and after training measures forgetting."""

    train_rows: list[dict]
    eval_problems: list
    forgetting_texts: list[str]
    validation_rows: list[dict] = field(default_factory=list)


def forgetting_texts(n: int = 64, seed: int = 1234) -> list[str]:
    """Text that is not the task (no question is answered in it), drawn like the tiny model's pretraining
    corpus with a seed that corpus never used: problem statements without solutions, bare arithmetic
    chains and arithmetic facts, a third each. Its loss rising after fine-tuning is forgetting."""
    import random

    from utils.synthetic import arithmetic_facts, expression_chains, problem_statements

    third = n // 3
    facts = arithmetic_facts(seed=seed, copies=1, n_big_products=0)
    random.Random(seed).shuffle(facts)
    return (
        problem_statements(seed=seed, n=third)
        + expression_chains(seed=seed, n=third)
        + ["\n".join(facts[i : i + 8]) for i in range(0, 8 * (n - 2 * third), 8)]
    )


def prepare_data(
    root_output_dir: str | Path,
    tokenizer,
    budget: Budget,
    sources: str = "embedded",
    eval_source: str = "embedded",
) -> ComparisonData:
    """Notebook 01's training rows (those in `budget.mode` unless "auto"; the first `budget.train_rows()`,
    the same for every method and seed), its first `budget.eval_limit` held-out problems, its validation
    rows and the forgetting text."""
    from utils.evaluation import held_out
    from utils.training import training_rows

    train, validation = training_rows(root_output_dir, sources, tokenizer)
    if budget.mode != "auto":
        train = [r for r in train if r["mode"] == budget.mode]
        validation = [r for r in validation if r["mode"] == budget.mode]
    validation = validation[: budget.n_validation]
    n = budget.train_rows()
    if len(train) < n:
        raise ValueError(
            f"{root_output_dir}/01_data_prep/train.jsonl: {len(train)} {budget.mode} rows from "
            f"{sources!r}, the budget needs {n}"
        )
    return ComparisonData(
        train[:n],
        held_out(root_output_dir, eval_source, budget.eval_limit),
        forgetting_texts(budget.n_forgetting),
        validation,
    )


# ---------------------------------------------------------------- measurements


@torch.no_grad()
def text_loss(model, tokenizer, texts: list[str], batch_size: int = 16, max_length: int = 128) -> float:
    """Mean cross-entropy per token of `texts` (padding excluded): the forgetting probe."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokenizer.padding_side = "right"
    total, count = 0.0, 0
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_length,
        ).to(device)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        logits = logits[:, -labels.shape[1] :].float()  # prompt tuning prepends virtual tokens
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="sum"
        )
        total += loss.item()
        count += int((labels[:, 1:] != -100).sum())
    model.train(was_training)
    return total / max(count, 1)


def weight_bytes(directory: str | Path) -> int:
    """Bytes of the saved weights (safetensors / bin files) in `directory`: the adapter's file size."""
    files = [p for p in Path(directory).rglob("*") if p.suffix in (".safetensors", ".bin")]
    return sum(p.stat().st_size for p in files)


def keep_4bit_weights_unpacked(model) -> None:
    """bitsandbytes 0.50 on a CPU with AVX512-BF16 repacks a 4-bit layer's weights on its first no-grad
    forward in eval mode: the repacking fails when the input size is not a multiple of the block size
    (64), and a repacked layer then gets no LoRA gradient when trained. Turn the repacking off."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def parameter_count(model) -> int:
    """Parameters as the unquantized model has them (a 4-bit weight packs two values in a byte: its
    original shape is in its quantization state), so that shares compare across base precisions."""
    total = 0
    for p in model.parameters():
        shape = getattr(getattr(p, "quant_state", None), "shape", None)
        total += math.prod(shape) if shape is not None else p.numel()
    return total


def base_reference(model_name: str, quantization: str, tokenizer_texts: list[str]) -> tuple[int, float]:
    """(parameter count, forgetting-text loss) of the untouched base, from a model loaded for this alone
    and discarded: training starts from a fresh load, never from a model that already ran."""
    from utils.modeling import load_model

    model, tokenizer = load_model(model_name, quantization)
    keep_4bit_weights_unpacked(model)
    params = parameter_count(model)
    loss = text_loss(model, tokenizer, tokenizer_texts)
    del model
    gc.collect()
    return params, loss


# ---------------------------------------------------------------- the runner


def _training_config(
    exp: Experiment, budget: Budget, seed: int, packing: bool, model, output_dir, has_eval: bool
):
    from trl import SFTConfig

    from utils.training import hardware_precision

    settings = dict(
        output_dir=str(output_dir),
        max_steps=budget.max_steps,
        per_device_train_batch_size=budget.batch_size,
        per_device_eval_batch_size=budget.batch_size,
        learning_rate=exp.rate() * budget.learning_rate_scale,
        warmup_steps=budget.warmup_steps,
        lr_scheduler_type="cosine",
        max_length=budget.max_length,
        packing=packing,
        completion_only_loss=True,
        activation_checkpointing=sum(p.numel() for p in model.parameters()) > 1e9,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=budget.max_steps,
        save_steps=budget.max_steps,
        save_total_limit=1,
        logging_steps=max(1, budget.max_steps // 10),
        seed=seed,
        data_seed=seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        **hardware_precision(model),
    )
    settings |= exp.training
    return SFTConfig(**settings)


def empty_record(exp: Experiment, seed: int, learning_rate_scale: float = 1.0) -> dict:
    method = get_method(exp.method)
    record = dict.fromkeys(RECORD_FIELDS)
    record.update(
        name=exp.name,
        method=exp.method,
        family=method.family,
        seed=seed,
        status="ok",
        learning_rate=exp.rate() * learning_rate_scale,
        quantization=exp.quantization or method.quantization,
    )
    return record


def run_fingerprint(exp: Experiment, seed: int, data: ComparisonData, budget: Budget, model_name: str) -> str:
    """What one run's record depends on: the experiment, the seed, the budget, the model (the embedded
    one by its cache key) and the data."""
    from utils.modeling import resolve_model

    return fingerprint(
        {"experiment": exp, "seed": seed, "budget": budget, "model": resolve_model(model_name), "data": data}
    )


def finished_record(path: Path, key: str) -> dict | None:
    """The record at `path` if it is a successful run with fingerprint `key`, else None."""
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if record.get("status") == "ok" and record.get("fingerprint") == key else None


def run_experiment(
    exp: Experiment,
    seed: int,
    data: ComparisonData,
    budget: Budget,
    model_name: str,
    output_dir: str | Path,
    base: dict | None = None,
    reuse: bool = False,
) -> dict:
    """Train, save, measure and score one experiment with one seed; any exception makes a `failed`
    record carrying the error instead of propagating. Writes `output_dir/<name>/seed<seed>.json`.

    `base` caches the base model's (parameters, forgetting loss) per quantization across calls. With
    `reuse`, a run that an earlier (interrupted) comparison finished with the same fingerprint is read back
    instead of trained again."""
    key = run_fingerprint(exp, seed, data, budget, model_name)
    done = finished_record(Path(output_dir) / exp.name / f"seed{seed}.json", key) if reuse else None
    if done is not None:
        return done
    record = empty_record(exp, seed, budget.learning_rate_scale) | {"fingerprint": key}
    run_dir = Path(output_dir) / exp.name / f"seed{seed}"
    try:
        with _quiet():
            _run(exp, seed, data, budget, model_name, run_dir, record, {} if base is None else base)
    except Exception as e:  # a method that fails here is reported, and the comparison goes on
        record.update(
            status="failed", error=f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        )
    finally:
        gc.collect()
    atomic_write_json(Path(output_dir) / exp.name / f"seed{seed}.json", record)
    return record


def _run(exp, seed, data, budget, model_name, run_dir: Path, record: dict, base: dict) -> None:
    from utils.adapters import apply_method
    from utils.evaluation import evaluate
    from utils.generation import GenerationConfig
    from utils.modeling import load_model, seed_everything
    from utils.training import train_sft

    method = get_method(exp.method)
    quantization = record["quantization"]
    packing = budget.packing and method.packing
    record["packing"] = packing
    if quantization not in base:
        base[quantization] = base_reference(model_name, quantization, data.forgetting_texts)
    record["base_parameters"], record["forgetting_loss_before"] = base[quantization]
    if run_dir.exists():  # a comparison measures fresh runs: never resume an earlier one
        shutil.rmtree(run_dir)
    seed_everything(seed)
    model, tokenizer = load_model(model_name, quantization)
    keep_4bit_weights_unpacked(model)
    model, peft_config = apply_method(model, exp.method, **exp.options)
    args = _training_config(exp, budget, seed, packing, model, run_dir / "train", bool(data.validation_rows))
    result = train_sft(
        model,
        tokenizer,
        data.train_rows,
        data.validation_rows or None,
        args,
        peft_config,
        callbacks=training_callbacks(exp.method),
    )
    trained = result.model
    adapter_dir = save_method(trained, run_dir / "adapter")
    # Keep the adapter and the training log only: checkpoints and train_sft's copy of the weights go.
    for extra in [*(run_dir / "train").glob("checkpoint-*"), run_dir / "train" / "final"]:
        shutil.rmtree(extra, ignore_errors=True)
    record.update(
        trainable_parameters=result.trainable_parameters,
        trainable_share=result.trainable_parameters / record["base_parameters"],
        adapter_bytes=weight_bytes(adapter_dir),
        train_seconds=result.seconds,
        steps=result.steps,
        tokens=result.tokens,
        tokens_per_second=result.tokens_per_second,
        peak_memory_mb=result.peak_memory_mb,
        memory_kind=result.memory_kind,
        final_train_loss=result.final_train_loss,
        validation_loss=result.eval_loss,
    )
    # Measured on the trained model only: the model that trains never ran a forward pass before.
    after = text_loss(trained, tokenizer, data.forgetting_texts)
    record.update(forgetting_loss_after=after, forgetting=after - record["forgetting_loss_before"])
    scored = evaluate(
        trained,
        tokenizer,
        data.eval_problems,
        budget.mode,
        GenerationConfig(max_new_tokens=budget.max_new_tokens),
    )
    record.update(accuracy=scored.accuracy, accuracy_by_kind=scored.by_kind)


@contextlib.contextmanager
def _quiet():
    """Trainer prints its log dicts (timings) and libraries warn per method: keep stored outputs clean."""
    import datasets

    datasets.disable_progress_bars()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


def run_comparison(
    experiments: list[Experiment],
    seeds: list[int],
    data: ComparisonData,
    budget: Budget,
    model_name: str,
    output_dir: str | Path,
    log: Callable[[str], None] | None = print,
    reuse: bool = False,
) -> list[dict]:
    """Every experiment with every seed, in order; one record each (see `run_experiment`, and `reuse`
    there: on Kaggle, rerun after a session dies and the finished runs are kept)."""
    base: dict = {}
    records = []
    for exp in experiments:
        for seed in seeds:
            record = run_experiment(exp, seed, data, budget, model_name, output_dir, base, reuse)
            records.append(record)
            if log:
                log(describe(record))
    return records


def describe(record: dict) -> str:
    """One deterministic line per run (no timings: those vary run to run)."""
    head = f"{record['name']:<16} seed {record['seed']}"
    if record["status"] != "ok":
        return f"{head}  FAILED  {record['error']}"
    return (
        f"{head}  loss {record['final_train_loss']:.3f}  accuracy {record['accuracy']:.2f}  "
        f"forgetting {record['forgetting']:+.3f}"
    )


# ---------------------------------------------------------------- the results table


def _mean(values: list) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.fmean(values) if values else math.nan


def results_table(records: list[dict]):
    """One row per experiment (in first-seen order): seeds run and failed, the means of every metric,
    and the accuracy's spread over seeds (standard deviation, min, max)."""
    import pandas as pd

    rows = []
    for name in dict.fromkeys(r["name"] for r in records):
        runs = [r for r in records if r["name"] == name]
        ok = [r for r in runs if r["status"] == "ok"]
        acc = [r["accuracy"] for r in ok]
        errors = sorted({r["error"] for r in runs if r["status"] != "ok"})
        row = {
            "method": name,
            "family": runs[0]["family"],
            "status": "ok" if ok else "failed",
            "seeds": len(runs),
            "failed_seeds": len(runs) - len(ok),
            "learning_rate": runs[0]["learning_rate"],
            "quantization": runs[0]["quantization"],
        }
        for key in (
            "trainable_parameters",
            "trainable_share",
            "adapter_bytes",
            "train_seconds",
            "tokens_per_second",
            "peak_memory_mb",
            "final_train_loss",
            "validation_loss",
            "accuracy",
            "forgetting",
        ):
            row[key] = _mean([r[key] for r in ok])
        row.update(
            accuracy_std=statistics.pstdev(acc) if acc else math.nan,
            accuracy_min=min(acc) if acc else math.nan,
            accuracy_max=max(acc) if acc else math.nan,
            error="; ".join(errors) or None,
        )
        rows.append(row)
    return pd.DataFrame(rows)


def write_results(records: list[dict], table, output_dir: str | Path) -> dict[str, Path]:
    """`runs.csv` (one row per experiment and seed) and `results.csv` (the table) in `output_dir`."""
    import pandas as pd

    from utils.io import atomic_write_text

    output_dir = Path(output_dir)
    runs = pd.DataFrame([{k: r[k] for k in RECORD_FIELDS if k != "accuracy_by_kind"} for r in records])
    paths = {"runs": output_dir / "runs.csv", "results": output_dir / "results.csv"}
    atomic_write_text(paths["runs"], runs.to_csv(index=False))
    atomic_write_text(paths["results"], table.to_csv(index=False))
    return paths


def display_table(table):
    """The table as a reader wants it (counts with separators, sizes in KB, rounded); deterministic
    columns only: timings, throughput and memory vary run to run and are shown apart (`speed_table`)."""
    ok = table["status"] == "ok"
    out = table[
        [
            "method",
            "learning_rate",
            "trainable_parameters",
            "trainable_share",
            "adapter_bytes",
            "final_train_loss",
            "validation_loss",
            "accuracy",
            "accuracy_std",
            "accuracy_min",
            "accuracy_max",
            "forgetting",
            "status",
        ]
    ].copy()
    out["trainable_parameters"] = [
        f"{v:,.0f}" if k else "-" for v, k in zip(out["trainable_parameters"], ok, strict=True)
    ]
    out["trainable_share"] = [
        f"{v:.3%}" if k else "-" for v, k in zip(table["trainable_share"], ok, strict=True)
    ]
    out["adapter_bytes"] = [
        f"{v / 1024:,.1f}" if k else "-" for v, k in zip(table["adapter_bytes"], ok, strict=True)
    ]
    out["learning_rate"] = [f"{v:g}" for v in table["learning_rate"]]
    return out.rename(columns={"adapter_bytes": "adapter_KB", "trainable_parameters": "trainable"}).round(3)


def speed_table(table):
    """Train time, throughput and peak memory per method (these vary run to run)."""
    return table[["method", "train_seconds", "tokens_per_second", "peak_memory_mb"]].round(1)


# ---------------------------------------------------------------- Pareto front, plot and reading


def pareto_front(table, x: str, y: str = "accuracy") -> list[str]:
    """Methods no other beats on both counts (lower `x` and higher `y`), in order of `x`."""
    ok = table[table["status"] == "ok"].sort_values([x, y], ascending=[True, False])
    front, best = [], -math.inf
    for _, row in ok.iterrows():
        if row[y] > best:
            front.append(row["method"])
            best = row[y]
    return front


def pareto_figure(table, path: str | Path | None = None):
    """Accuracy (mean over seeds, bars from the worst to the best seed) against trainable parameters
    and against train time, one colour per family, the Pareto front dashed."""
    import matplotlib.pyplot as plt

    ok = table[table["status"] == "ok"]
    colours = dict(zip(dict.fromkeys(ok["family"]), plt.cm.tab10.colors, strict=False))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    for ax, x, label in (
        (axes[0], "trainable_parameters", "trainable parameters (log)"),
        (axes[1], "train_seconds", "train time, s (log)"),
    ):
        for family, rows in ok.groupby("family", sort=False):
            err = [rows["accuracy"] - rows["accuracy_min"], rows["accuracy_max"] - rows["accuracy"]]
            ax.errorbar(
                rows[x],
                rows["accuracy"],
                yerr=err,
                fmt="o",
                ms=5,
                capsize=3,
                alpha=0.8,
                color=colours[family],
                label=family,
            )
        for _, row in ok.iterrows():
            ax.annotate(
                row["method"],
                (row[x], row["accuracy"]),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
        front = ok.set_index("method").loc[pareto_front(table, x)]
        ax.step(front[x], front["accuracy"], where="post", color="gray", linestyle="--", label="Pareto front")
        ax.set(xscale="log", xlabel=label, title=f"Accuracy against {label.split(' (')[0]}")
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    axes[0].set_ylabel("held-out accuracy")
    fig.tight_layout()
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def _pct(v: float) -> str:
    return f"{v:.0%}" if v >= 0.01 or v == 0 else f"{v:.2%}"


def reading(table) -> list[str]:
    """A short reading of the table, every number taken from it (nothing about timings: see
    `speed_reading`). Accuracy differences smaller than the seeds' own spread are called noise."""
    ok = table[table["status"] == "ok"].set_index("method")
    failed = table[table["status"] != "ok"]
    if ok.empty:
        return [
            "Every method failed: "
            + "; ".join(f"{m}: {e}" for m, e in zip(failed["method"], failed["error"], strict=True))
        ]
    acc, best = ok["accuracy"], ok["accuracy"].idxmax()
    lines = [
        f"Best held-out accuracy: {best}, {acc[best]:.3f} (mean over seeds), training "
        f"{ok.loc[best, 'trainable_parameters']:,.0f} parameters ({_pct(ok.loc[best, 'trainable_share'])} "
        "of the model)."
    ]
    if "full" in ok.index and best != "full":
        lines.append(
            f"Full fine-tuning, the reference, scores {acc['full']:.3f}, {acc[best] - acc['full']:.3f} "
            f"below {best}."
        )
    front = pareto_front(table, "trainable_parameters")
    lines.append(
        "On the accuracy/parameters Pareto front: "
        + ", ".join(f"{m} ({ok.loc[m, 'trainable_parameters']:,.0f} parameters, {acc[m]:.3f})" for m in front)
        + "."
    )
    zero = sorted(ok.index[acc == 0])
    if zero:
        lines.append(f"Scoring 0 at this budget: {', '.join(zero)}.")
    lines.append(_noise_line(ok))
    most, least = ok["forgetting"].idxmax(), ok["forgetting"].idxmin()
    lines.append(
        f"Forgetting (the loss change on text that is not the task; negative: it got easier): largest "
        f"for {most} ({ok.loc[most, 'forgetting']:+.3f}), smallest for {least} "
        f"({ok.loc[least, 'forgetting']:+.3f})."
    )
    lines += [f"{row['method']} failed: {row['error']}" for _, row in failed.iterrows()]
    return lines


def _noise_line(ok) -> str:
    """Compare the range of accuracies across methods with the seeds' spread; when accuracy cannot
    separate the methods, rank them by validation loss, which can."""
    spread = ok["accuracy_max"] - ok["accuracy_min"]
    spread_range = ok["accuracy"].max() - ok["accuracy"].min()
    line = (
        f"Seeds move a method's accuracy by up to {spread.max():.3f} ({spread.idxmax()}), {spread.median():.3f} "
        f"at the median; the methods' mean accuracies span {spread_range:.3f}"
    )
    if spread_range > 2 * spread.max():
        return line + ": the gaps between the best and the worst methods are larger than the noise."
    ranked = ok["validation_loss"].dropna().sort_values()
    by_loss = ", ".join(f"{m} {v:.3f}" for m, v in ranked.head(3).items())
    return (
        line + ": at this budget accuracy does not separate the methods. Validation loss does: lowest "
        f"for {by_loss}; highest for {ranked.index[-1]} {ranked.iloc[-1]:.3f}."
    )


def speed_reading(table) -> list[str]:
    """Timing statements from the table (they vary run to run, unlike `reading`)."""
    ok = table[table["status"] == "ok"].set_index("method")
    if ok.empty:
        return []
    fast, slow = ok["train_seconds"].idxmin(), ok["train_seconds"].idxmax()
    lines = [
        f"Fastest to train: {fast} ({ok.loc[fast, 'train_seconds']:.1f} s); slowest: {slow} "
        f"({ok.loc[slow, 'train_seconds']:.1f} s)."
    ]
    if "lora" in ok.index:
        for other in ("dora", "qlora", "full"):
            if other in ok.index:
                ratio = ok.loc[other, "train_seconds"] / ok.loc["lora", "train_seconds"]
                lines.append(f"{other} takes {ratio:.2f}x LoRA's train time.")
    return lines


def metrics(records: list[dict], table, budget: Budget, seeds: list[int]) -> dict:
    """metrics.json's content: the budget, and per method its table row and every run's record."""
    methods = {}
    for row in table.to_dict(orient="records"):
        runs = [r for r in records if r["name"] == row["method"]]
        methods[row["method"]] = {
            k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()
        }
        methods[row["method"]]["runs"] = runs
    return {"budget": asdict(budget), "seeds": list(seeds), "methods": methods}
