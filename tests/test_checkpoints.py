"""Checkpoint validation: every file a resume reads is checked, a damaged one is named, and the newest
good checkpoint is chosen (the slow end-to-end runs are in test_training.py)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from utils.checkpoints import (
    checkpoint_folders,
    checkpoint_problem,
    file_problem,
    last_valid_checkpoint,
    valid_checkpoint,
)
from utils.training import RUN_FILE, recorded_fingerprint, resumable_checkpoint, run_fingerprint


@dataclass
class FakeArgs:
    learning_rate: float = 1e-3


def write_checkpoint(folder: Path, step: int) -> Path:
    """A checkpoint with the files Hugging Face's Trainer writes, made with the same libraries."""
    folder.mkdir(parents=True)
    layer = torch.nn.Linear(8, 4)
    save_file(
        {k: v.detach().clone() for k, v in layer.state_dict().items()}, folder / "adapter_model.safetensors"
    )
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "base_model_name_or_path": "tiny"}))
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    layer(torch.ones(2, 8)).sum().backward()
    optimizer.step()
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    torch.save(scheduler.state_dict(), folder / "scheduler.pt")
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    torch.save(rng, folder / "rng_state.pth")
    torch.save(FakeArgs(), folder / "training_args.bin")  # a pickle: never loaded on resume
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return folder


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


FILES = [
    "adapter_model.safetensors",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state.pth",
    "trainer_state.json",
    "adapter_config.json",
    "training_args.bin",
]


def test_a_whole_checkpoint_is_valid(tmp_path):
    folder = write_checkpoint(tmp_path / "checkpoint-3", 3)
    assert checkpoint_problem(folder) is None and valid_checkpoint(folder) == str(folder)


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("keep", [0.0, 0.5, 0.99], ids=["empty", "half", "last-byte-short"])
def test_a_truncated_file_is_named(tmp_path, name, keep):
    folder = write_checkpoint(tmp_path / "checkpoint-3", 3)
    truncate(folder / name, keep)
    problem = checkpoint_problem(folder)
    assert problem is not None and problem.startswith(str(folder / name)), problem
    assert valid_checkpoint(folder) is None


@pytest.mark.parametrize(
    ("name", "garbage", "words"),
    [
        ("optimizer.pt", b"PK\x03\x04 not really a zip", "torch archive"),
        ("adapter_model.safetensors", (10**9).to_bytes(8, "little") + b"{}", "truncated"),
        ("adapter_model.safetensors", (2).to_bytes(8, "little") + b"[]", "malformed"),
        ("trainer_state.json", b"\xff\xfe{}", "UTF-8"),
    ],
)
def test_garbage_is_named(tmp_path, name, garbage, words):
    folder = write_checkpoint(tmp_path / "checkpoint-3", 3)
    (folder / name).write_bytes(garbage)
    assert words in checkpoint_problem(folder)


def test_missing_state_or_weights(tmp_path):
    folder = write_checkpoint(tmp_path / "checkpoint-3", 3)
    (folder / "trainer_state.json").unlink()
    assert "trainer_state.json: missing" in checkpoint_problem(folder)
    other = write_checkpoint(tmp_path / "checkpoint-6", 6)
    (other / "adapter_model.safetensors").unlink()
    assert "no model weights" in checkpoint_problem(other)
    assert file_problem(tmp_path / "README.md") is None  # kinds not checked


def test_the_newest_good_checkpoint_is_chosen_and_damaged_newer_ones_removed(tmp_path):
    for step in (3, 6, 9, 12):
        write_checkpoint(tmp_path / f"checkpoint-{step}", step)
    (tmp_path / "checkpoint-9" / "optimizer.pt").write_bytes(b"")
    truncate(tmp_path / "checkpoint-12" / "rng_state.pth")
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint name: ignored
    assert [p.name for p in checkpoint_folders(tmp_path)] == [f"checkpoint-{s}" for s in (12, 9, 6, 3)]
    with pytest.warns(UserWarning) as record:
        assert last_valid_checkpoint(tmp_path) == str(tmp_path / "checkpoint-6")
    assert [str(w.message).split(": ")[0] for w in record] == ["damaged checkpoint skipped"] * 2
    assert (tmp_path / "checkpoint-12").is_dir()  # only looked at
    with pytest.warns(UserWarning) as record:
        assert last_valid_checkpoint(tmp_path, remove_damaged=True) == str(tmp_path / "checkpoint-6")
    messages = [str(w.message) for w in record]
    assert any("checkpoint-12/rng_state.pth" in m for m in messages)
    assert any("checkpoint-9/optimizer.pt" in m for m in messages)
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["checkpoint-6", "checkpoint-3"]


def test_no_good_checkpoint_left_means_start_afresh(tmp_path):
    write_checkpoint(tmp_path / "checkpoint-3", 3)
    truncate(tmp_path / "checkpoint-3" / "adapter_model.safetensors")
    (tmp_path / RUN_FILE).write_text(json.dumps({"fingerprint": "k"}))
    with pytest.warns(UserWarning, match="adapter_model.safetensors"):
        assert resumable_checkpoint(tmp_path, "k") is None
    assert checkpoint_folders(tmp_path) == []
    assert resumable_checkpoint(tmp_path, "k") is None  # and the next rerun is quiet


@pytest.mark.parametrize("text", ['{"fingerprint": "k"', "", "[1, 2]", '{"other": 1}'])
def test_a_damaged_run_file_is_reported_and_training_starts_afresh(tmp_path, text):
    write_checkpoint(tmp_path / "checkpoint-3", 3)
    (tmp_path / RUN_FILE).write_text(text)
    with pytest.warns(UserWarning, match=f"{RUN_FILE}: unreadable"):
        assert recorded_fingerprint(tmp_path / RUN_FILE) is None
    with pytest.warns(UserWarning):
        assert resumable_checkpoint(tmp_path, "k") is None
    assert json.loads((tmp_path / RUN_FILE).read_text()) == {"fingerprint": "k"}  # rewritten, atomically
    assert checkpoint_folders(tmp_path) == []


def test_the_same_run_resumes_its_newest_checkpoint(tmp_path):
    write_checkpoint(tmp_path / "checkpoint-3", 3)
    write_checkpoint(tmp_path / "checkpoint-6", 6)
    (tmp_path / RUN_FILE).write_text(json.dumps({"fingerprint": "k"}))
    assert resumable_checkpoint(tmp_path, "k") == str(tmp_path / "checkpoint-6")


@pytest.mark.filterwarnings(
    "ignore:`gradient_checkpointing` is deprecated"
)  # dataclasses.replace passes both names
def test_the_fingerprint_follows_what_trains_not_where_it_is_written_or_logged(tmp_path):
    """A run folder copied elsewhere, or logged and saved at another cadence, resumes; another learning
    rate, LoRA rank or training row does not."""
    from dataclasses import replace

    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig

    def lora_model(r: int):
        config = LlamaConfig(
            vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
        )
        return get_peft_model(LlamaForCausalLM(config), LoraConfig(r=r, target_modules="all-linear"))

    model = lora_model(4)
    args = SFTConfig(
        output_dir=str(tmp_path / "a"),
        use_cpu=True,
        bf16=False,
        learning_rate=1e-3,
        activation_checkpointing=False,
    )
    rows = [{"prompt": "1+1=", "completion": " 2"}]
    key = run_fingerprint(model, args, rows)
    moved = replace(args, output_dir=str(tmp_path / "b"), logging_steps=1, save_steps=7, report_to="none")
    assert run_fingerprint(model, moved, rows) == key
    assert run_fingerprint(model, replace(args, learning_rate=2e-3), rows) != key
    assert run_fingerprint(lora_model(8), args, rows) != key
    assert run_fingerprint(model, args, rows + rows) != key
