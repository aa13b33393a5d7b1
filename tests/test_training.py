"""Fine-tuning: LoRA trains, checkpoints, and resumes after a kill to the same result."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from peft import LoraConfig
from safetensors.torch import load_file
from trl import SFTConfig

from utils.modeling import load_model
from utils.prep import to_example
from utils.prompts import render_example
from utils.synthetic import generate_problems
from utils.training import hardware_precision, last_checkpoint, train_sft

pytestmark = pytest.mark.slow

RECIPE = dict(
    max_steps=8,
    per_device_train_batch_size=4,
    learning_rate=2e-3,
    warmup_steps=2,
    lr_scheduler_type="cosine",
    save_steps=3,
    logging_steps=1,
    max_length=128,
    completion_only_loss=True,
    activation_checkpointing=False,
    seed=0,
    report_to="none",
    disable_tqdm=True,
    include_num_input_tokens_seen="non_padding",
)


def _args(model, out_dir, **changes) -> SFTConfig:
    return SFTConfig(output_dir=str(out_dir), **(RECIPE | changes), **hardware_precision(model))


def _lora() -> LoraConfig:
    return LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def _rows(tokenizer, n=60):
    return [
        render_example(tokenizer, to_example(p, m))
        for p in generate_problems(n, split="test")
        for m in ("reasoning", "tools")
    ]


def _train(tiny_model, out_dir, callbacks=()):
    model, tokenizer = load_model(str(tiny_model))
    return train_sft(
        model,
        tokenizer,
        _rows(tokenizer),
        None,
        _args(model, out_dir),
        peft_config=_lora(),
        callbacks=callbacks,
    )


def test_lora_trains_only_the_adapter_and_lowers_the_loss(tiny_model, tmp_path):
    result = _train(tiny_model, tmp_path / "run")
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert result.steps == 8 and losses[-1] < losses[0]
    assert 0 < result.trainable_parameters < result.total_parameters / 5
    assert result.tokens > 0 and result.tokens_per_second > 0 and result.peak_memory_mb > 0
    saved = load_file(tmp_path / "run" / "final" / "adapter_model.safetensors")
    assert saved and all("lora_" in k for k in saved)
    assert (tmp_path / "run" / "training.json").is_file()


KILLER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {src!r}); sys.path.insert(0, {tests!r})
    from transformers import TrainerCallback
    import test_training as t

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == {kill_at}:
                os._exit(9)  # a Kaggle session dying: no cleanup, no final save

    t._train({model!r}, {out!r}, callbacks=(Kill(),))
""")


def _train_and_kill(tiny_model, out_dir, kill_at: int) -> None:
    here = Path(__file__).resolve().parent
    script = KILLER.format(
        src=str(here.parent / "src"),
        tests=str(here),
        model=str(tiny_model),
        out=str(out_dir),
        kill_at=kill_at,
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr[-2000:]


def _same_adapter(a_dir, b_dir) -> None:
    a = load_file(a_dir / "final" / "adapter_model.safetensors")
    b = load_file(b_dir / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)


def test_training_killed_part_way_resumes_to_the_same_adapter(tiny_model, tmp_path):
    _train_and_kill(tiny_model, tmp_path / "b", kill_at=5)
    assert last_checkpoint(tmp_path / "b").endswith("checkpoint-3")
    assert not (tmp_path / "b" / "final").exists()

    resumed = _train(tiny_model, tmp_path / "b")
    assert resumed.resumed_from.endswith("checkpoint-3") and resumed.steps == 8
    _train(tiny_model, tmp_path / "a")  # the same recipe, uninterrupted
    a = load_file(tmp_path / "a" / "final" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)


def test_checkpoints_of_another_run_are_not_resumed(tiny_model, tmp_path):
    """Rerunning a notebook after changing its model, recipe or data must train afresh, not resume a
    checkpoint that belongs to something else."""
    _train(tiny_model, tmp_path / "run")
    assert last_checkpoint(tmp_path / "run") is not None
    model, tokenizer = load_model(str(tiny_model))
    other = _args(model, tmp_path / "run", learning_rate=1e-3)
    with pytest.warns(UserWarning, match="another run"):
        result = train_sft(model, tokenizer, _rows(tokenizer), None, other, peft_config=_lora())
    assert result.resumed_from is None and result.steps == 8


@pytest.fixture(scope="module")
def killed_after_two_checkpoints(tiny_model, tmp_path_factory) -> Path:
    """A run killed at step 7 of 8: checkpoints 3 and 6 on disk, no final adapter."""
    out = tmp_path_factory.mktemp("killed") / "run"
    _train_and_kill(tiny_model, out, kill_at=7)
    assert [p.name for p in sorted(out.glob("checkpoint-*"))] == ["checkpoint-3", "checkpoint-6"]
    return out


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    _train(tiny_model, out)
    return out


@pytest.mark.parametrize(
    "damaged",
    ["optimizer.pt", "adapter_model.safetensors", "scheduler.pt", "rng_state.pth", "trainer_state.json"],
)
def test_a_rerun_after_a_corrupted_checkpoint_finishes_training(
    tiny_model, tmp_path, killed_after_two_checkpoints, uninterrupted, damaged
):
    """A truncated file in the newest checkpoint: the rerun names it, resumes the previous checkpoint and
    ends with the adapter an uninterrupted run gives."""
    run = tmp_path / "run"
    shutil.copytree(killed_after_two_checkpoints, run)
    bad = run / "checkpoint-6" / damaged
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.warns(UserWarning, match=f"damaged checkpoint removed: {bad}"):
        result = _train(tiny_model, run)
    assert result.resumed_from == str(run / "checkpoint-3") and result.steps == 8
    _same_adapter(uninterrupted, run)


def test_a_rerun_with_every_checkpoint_corrupted_starts_afresh(
    tiny_model, tmp_path, killed_after_two_checkpoints, uninterrupted
):
    run = tmp_path / "run"
    shutil.copytree(killed_after_two_checkpoints, run)
    for step in (3, 6):
        (run / f"checkpoint-{step}" / "optimizer.pt").write_bytes(b"")
    with pytest.warns(UserWarning, match="damaged checkpoint removed"):
        result = _train(tiny_model, run)
    assert result.resumed_from is None and result.steps == 8
    _same_adapter(uninterrupted, run)
