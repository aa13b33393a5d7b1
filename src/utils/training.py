"""Supervised fine-tuning with TRL's SFTTrainer: one code path for every adapter and base precision.

The recipe is data (`TrainingConfig`), in the spirit of the AIMO 1 winner's YAML recipes: packed
batches, loss on the answer only, warm-up then cosine decay, gradient accumulation, checkpoints every
`save_steps` and resumption from the last one when rerun (Kaggle sessions end without warning).
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
from utils.profiling import measure


@dataclass
class LoraSettings:
    """LoRA's knobs; all linear layers by default (QLoRA paper: adapters everywhere beat attention-only)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list = "all-linear"
    use_rslora: bool = False
    use_dora: bool = False

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            use_rslora=self.use_rslora,
            use_dora=self.use_dora,
            task_type="CAUSAL_LM",
        )


@dataclass
class TrainingConfig:
    """One training run's recipe.

    `packing="auto"` packs examples best-fit-decreasing into padding-free rows (positions restart per
    example, so no example sees another) on a GPU, and pads on a CPU: without a variable-length attention
    kernel, attention over a packed row costs the square of its length, which on a CPU outweighs the padding
    saved (measured by `make bench`). `gradient_checkpointing="auto"` turns it on for models over 1B
    parameters (about 30% more compute for far less activation memory; a tiny model gains nothing)."""

    max_steps: int = 300
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-3
    warmup_steps: int = 20
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    max_length: int = 256
    packing: bool | str = "auto"
    packing_strategy: str = "bfd"
    completion_only_loss: bool = True
    gradient_checkpointing: str | bool = "auto"
    eval_steps: int = 100
    save_steps: int = 50
    save_total_limit: int = 2
    logging_steps: int = 10
    seed: int = 0
    extra: dict = field(default_factory=dict)


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


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def _use_checkpointing(model, setting) -> bool:
    if setting == "auto":
        return count_parameters(model)[1] > 1e9
    return bool(setting)


def _use_packing(setting, device: torch.device) -> bool:
    return device.type == "cuda" if setting == "auto" else bool(setting)


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete `checkpoint-N` folder (one with trainer state), or None; whether its files load
    is `utils.checkpoints.last_valid_checkpoint`'s question."""
    ckpts = [p for p in checkpoint_folders(output_dir) if (p / STATE_FILE).is_file()]
    return str(ckpts[0]) if ckpts else None


RUN_FILE = "run.json"


def run_fingerprint(model, config: TrainingConfig, train_rows: list[dict], peft_config=None) -> str:
    """What a checkpoint depends on: the base model (its path and architecture), the recipe, the adapter
    settings and the training rows. A checkpoint is resumed only by a run with the same fingerprint."""
    base = getattr(model, "config", None)
    peft = peft_config.to_dict() if hasattr(peft_config, "to_dict") else peft_config
    rows = fingerprint(train_rows, 64)
    parts = {
        "model": getattr(base, "_name_or_path", None),
        "architecture": base.to_json_string(use_diff=False) if base is not None else None,
        "config": asdict(config),
        "peft": peft,
        "rows": rows,
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


def sft_config(config: TrainingConfig, output_dir: str | Path, model, has_eval: bool):
    from trl import SFTConfig

    device = next(model.parameters()).device
    dtype = pick_dtype(device)
    checkpointing = _use_checkpointing(model, config.gradient_checkpointing)
    return SFTConfig(
        output_dir=str(output_dir),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.lr_scheduler,
        weight_decay=config.weight_decay,
        max_length=config.max_length,
        packing=_use_packing(config.packing, device),
        packing_strategy=config.packing_strategy,
        completion_only_loss=config.completion_only_loss,
        activation_checkpointing=checkpointing,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=device.type == "cpu",
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        **config.extra,
    )


def train_sft(
    model,
    tokenizer,
    train_rows: list[dict],
    eval_rows: list[dict] | None,
    config: TrainingConfig,
    output_dir: str | Path,
    peft_config=None,
    callbacks: tuple = (),
) -> TrainResult:
    """Train `model` (with `peft_config` applied, when given) on prompt/completion rows.

    Reruns resume from the last checkpoint in `output_dir`; the final weights (the adapter alone for a
    PEFT model) and the tokenizer are saved to `output_dir/final`, with `training.json` beside them.
    """
    from datasets import Dataset
    from trl import SFTTrainer

    output_dir = Path(output_dir)
    cols = ["prompt", "completion"]
    train_ds = Dataset.from_list([{k: r[k] for k in cols} for r in train_rows])
    eval_ds = Dataset.from_list([{k: r[k] for k in cols} for r in eval_rows]) if eval_rows else None
    args = sft_config(config, output_dir, model, has_eval=eval_ds is not None)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # logs go to log_history and the loss plot, not to stdout
    resume = resumable_checkpoint(output_dir, run_fingerprint(model, config, train_rows, peft_config))
    with measure(next(trainer.model.parameters()).device) as m:
        trainer.train(resume_from_checkpoint=resume)
    final = output_dir / "final"
    if final.exists():
        shutil.rmtree(final)
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    tokens = int(trainer.state.num_input_tokens_seen)
    trainable, total = count_parameters(trainer.model)
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
        resumed_from=resume,
        log_history=history,
    )
    atomic_write_json(output_dir / "training.json", result.to_dict())
    trainer.model.eval()
    model_out = trainer.model
    del trainer
    result.model = model_out  # not serialized: the trained model, ready to evaluate
    return result


def load_log(output_dir: str | Path) -> dict:
    return json.loads((Path(output_dir) / "training.json").read_text())


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
