"""Supervised fine-tuning's plumbing around TRL's `SFTTrainer`: datasets, resuming the same run, time and
memory, the saved adapter and the training summary.

The configuration is the libraries' own objects, a `peft.LoraConfig` and a `trl.SFTConfig`, written out in
notebook 02's cells. What is here is what those cells do not teach: notebook 01's rows as datasets, matching
checkpoints to the run that wrote them (a Kaggle session ends without warning: a rerun resumes the same run,
and never crashes on a half-written checkpoint), measuring, and saving. `train_sft` chains the same functions
that notebook 02's cells call, for notebook 03's runner, the tests and the benchmarks.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from utils.checkpoints import STATE_FILE, checkpoint_folders, last_valid_checkpoint
from utils.io import atomic_write_json, fingerprint
from utils.modeling import pick_dtype
from utils.profiling import Measurement, measure

RUN_FILE = "run.json"
# SFTConfig fields that say where a run writes, logs or reports, not what it trains: a checkpoint resumes
# whatever they are (a run folder copied elsewhere, a different logging or saving cadence).
NOT_THE_RESULT = (
    "output_dir",
    "run_name",
    "project",
    "report_to",
    "disable_tqdm",
    "resume_from_checkpoint",
    "include_num_input_tokens_seen",
    "skip_memory_metrics",
    "dataloader_num_workers",
)
NOT_THE_RESULT_PREFIXES = ("logging_", "log_", "save_", "hub_", "push_to_hub", "trackio_")


@dataclass
class TrainResult:
    output_dir: str
    steps: int
    final_train_loss: float
    eval_loss: float | None
    seconds: float
    tokens: int
    tokens_per_second: float
    peak_memory_mb: float
    memory_kind: str
    trainable_parameters: int
    total_parameters: int
    resumed_from: str | None
    log_history: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- data and hardware


def training_rows(root_output_dir: str | Path, sources: str, tokenizer, max_validation: int = 200):
    """Notebook 01's train and validation examples from `sources` ("all" or comma-separated names),
    rendered as prompt/completion pairs with `tokenizer`'s chat template."""
    from utils.io import read_jsonl
    from utils.prompts import render_example

    folder = Path(root_output_dir) / "01_data_prep"
    if not (folder / "train.jsonl").is_file():
        raise FileNotFoundError(f"{folder / 'train.jsonl'} is missing: run notebook 01 first")
    wanted = None if sources.strip() == "all" else {s.strip() for s in sources.split(",")}

    def rows(name: str) -> list[dict]:
        examples = [e for e in read_jsonl(folder / name) if wanted is None or e["source"] in wanted]
        return [render_example(tokenizer, e) | {"id": e["id"], "mode": e["mode"]} for e in examples]

    train, validation = rows("train.jsonl"), rows("validation.jsonl")[:max_validation]
    if not train:
        raise ValueError(f"no training examples from sources {sources!r} in {folder / 'train.jsonl'}")
    return train, validation


def sft_datasets(train_rows: list[dict], eval_rows: list[dict] | None = None):
    """(train, eval) `datasets.Dataset`s of prompt/completion pairs, the form in which `SFTTrainer` masks the
    prompt out of the loss (`completion_only_loss`); eval is None without eval rows."""
    from datasets import Dataset

    def dataset(rows):
        return Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])

    return dataset(train_rows), dataset(eval_rows) if eval_rows else None


def hardware_precision(model) -> dict:
    """`SFTConfig`'s `use_cpu`, `bf16` and `fp16` for the device `model` is on: bf16 where the GPU has it,
    fp16 on a T4 (see `utils.modeling.pick_dtype`), fp32 on a CPU (where TRL's default, bf16, raises)."""
    device = next(model.parameters()).device
    dtype = pick_dtype(device)
    return {"use_cpu": device.type == "cpu", "bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


# ---------------------------------------------------------------- checkpoints of the same run


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete `checkpoint-N` folder (one with trainer state), or None; whether its files load
    is `utils.checkpoints.last_valid_checkpoint`'s question."""
    ckpts = [p for p in checkpoint_folders(output_dir) if (p / STATE_FILE).is_file()]
    return str(ckpts[0]) if ckpts else None


def run_fingerprint(model, args, train_rows: list[dict]) -> str:
    """What a checkpoint depends on: the base model (its path and architecture), the `SFTConfig` `args`
    (less where it writes and logs), the peft configs applied to `model` and the training rows. A checkpoint
    is resumed only by a run with the same fingerprint."""
    base = getattr(model, "config", None)
    recipe = {
        k: v
        for k, v in args.to_dict().items()
        if k not in NOT_THE_RESULT and not k.startswith(NOT_THE_RESULT_PREFIXES)
    }
    adapters = getattr(model, "peft_config", None) or {}
    parts = {
        "model": getattr(base, "_name_or_path", None),
        "architecture": base.to_json_string(use_diff=False) if base is not None else None,
        "sft_config": recipe,
        "peft": {name: config.to_dict() for name, config in adapters.items()},
        "rows": fingerprint(train_rows, 64),
    }
    return fingerprint(parts)


def resumable_checkpoint(output_dir: str | Path, key: str) -> str | None:
    """The newest checkpoint of the same run whose files all load, or None (train afresh).

    Checkpoints of another run (a different model, recipe or data in the same folder), or of a run whose
    `run.json` is unreadable, are removed with a warning: resuming them would train the wrong thing. A
    damaged checkpoint (a truncated weight, optimizer, scheduler, RNG or state file) is removed with a
    warning naming the file, and the one before it is resumed: a rerun never crashes on a bad checkpoint.
    """
    output_dir = Path(output_dir)
    recorded = output_dir / RUN_FILE
    same = recorded_fingerprint(recorded) == key
    stale = checkpoint_folders(output_dir)
    if stale and not same:
        warnings.warn(
            f"{output_dir}: its {len(stale)} checkpoint(s) come from another run (model, recipe or data "
            "changed); training starts afresh",
            stacklevel=3,
        )
        for p in stale:
            shutil.rmtree(p)
    atomic_write_json(recorded, {"fingerprint": key})
    return last_valid_checkpoint(output_dir, remove_damaged=True) if same else None


def recorded_fingerprint(path: Path) -> str | None:
    """The fingerprint `run.json` records, or None when it is absent or damaged (a warning names it)."""
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        return recorded["fingerprint"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        warnings.warn(
            f"{path}: unreadable ({type(e).__name__}: {e}); its checkpoints cannot be matched to this run",
            stacklevel=3,
        )
        return None


def resume_point(trainer, train_rows: list[dict]) -> str | None:
    """The checkpoint `trainer.train(resume_from_checkpoint=...)` should take: the newest intact one of this
    same run in `trainer.args.output_dir`, or None (see `resumable_checkpoint`)."""
    key = run_fingerprint(trainer.model, trainer.args, train_rows)
    return resumable_checkpoint(trainer.args.output_dir, key)


# ---------------------------------------------------------------- measuring and saving


def training_meter():
    """A trainer callback measuring the wall time and peak memory of `trainer.train()` into its `.result`
    (`utils.profiling.measure`), so that the training cell stays the library's call alone:
    `trainer.add_callback(meter := training_meter())`. Built here, not at import, so that importing this
    module does not import transformers (a notebook silences its warnings first)."""
    from transformers import TrainerCallback

    class TrainingMeter(TrainerCallback):
        def __init__(self):
            self.result = Measurement()
            self._measure = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self._measure = measure(next(model.parameters()).device)
            self.result = self._measure.__enter__()

        def on_train_end(self, args, state, control, **kwargs):
            if self._measure is not None:
                self._measure.__exit__(None, None, None)
                self._measure = None

    return TrainingMeter()


def finish_run(trainer, meter, resumed_from: str | None = None) -> TrainResult:
    """Save the trained weights (the adapter alone for a peft model) and the tokenizer to
    `<output_dir>/final`, write the summary to `<output_dir>/training.json` (atomically) and return it, with
    `.model` the trained model in eval mode (not serialized)."""
    output_dir = Path(trainer.args.output_dir)
    final = output_dir / "final"
    if final.exists():
        shutil.rmtree(final)
    trainer.save_model(str(final))
    trainer.processing_class.save_pretrained(str(final))
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    tokens = int(trainer.state.num_input_tokens_seen)  # needs include_num_input_tokens_seen in the SFTConfig
    trainable, total = count_parameters(trainer.model)
    m = meter.result
    result = TrainResult(
        output_dir=str(final),
        steps=trainer.state.global_step,
        final_train_loss=losses[-1] if losses else math.nan,
        eval_loss=evals[-1] if evals else None,
        seconds=m.seconds,
        tokens=tokens,
        tokens_per_second=tokens / m.seconds if m.seconds else 0.0,
        peak_memory_mb=m.peak_memory_mb,
        memory_kind=m.memory_kind,
        trainable_parameters=trainable,
        total_parameters=total,
        resumed_from=resumed_from,
        log_history=history,
    )
    atomic_write_json(output_dir / "training.json", result.to_dict())
    result.model = trainer.model.eval()  # not serialized: the trained model, ready to evaluate
    return result


def load_log(output_dir: str | Path) -> dict:
    return json.loads((Path(output_dir) / "training.json").read_text())


# ---------------------------------------------------------------- notebook 02's cells in one call


def train_sft(
    model,
    tokenizer,
    train_rows: list[dict],
    eval_rows: list[dict] | None,
    args,
    peft_config=None,
    callbacks: tuple = (),
) -> TrainResult:
    """Train `model` (with `peft_config` applied by `SFTTrainer`, when given) on prompt/completion rows with
    the `trl.SFTConfig` `args`: the steps of notebook 02's cells. A rerun resumes the last checkpoint of the
    same run in `args.output_dir`; the final weights go to `<output_dir>/final`, `training.json` beside them.
    `args.eval_strategy` must be "no" when there are no `eval_rows`."""
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    train_dataset, eval_dataset = sft_datasets(train_rows, eval_rows)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)  # logs go to log_history (and the loss plot), not to stdout
    trainer.add_callback(meter := training_meter())
    resume = resume_point(trainer, train_rows)
    trainer.train(resume_from_checkpoint=resume)
    return finish_run(trainer, meter, resume)
