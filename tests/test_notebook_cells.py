"""Notebook 02 teaches with the libraries' own code: its cells tagged `library` hold the calls its prose
names, and each one, copied alone into a blank notebook with the variables it names defined, runs.

Each tagged cell is extracted from the jupytext source and executed in a fresh namespace holding only the
names it reads without defining them (so a cell that leans on another cell's import fails here), on the
embedded tiny model for two steps, in full precision and with a 4-bit (QLoRA) base.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TAG = "library"
CALLS = (
    "BitsAndBytesConfig",
    "from_pretrained",
    "prepare_model_for_kbit_training",
    "LoraConfig",
    "get_peft_model",
    "print_trainable_parameters",
    "SFTConfig",
    "SFTTrainer",
    "train",
)
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")


def cells(notebook: str, tag: str | None = None) -> list[str]:
    """The code cells of a jupytext percent source, or only those whose header carries `tag`."""
    found, header, lines = [], None, []
    for line in [*(NOTEBOOKS / notebook).read_text().splitlines(), "# %%"]:
        if line.startswith("# %%"):
            if header is not None and "[markdown]" not in header and (tag is None or tag in header):
                found.append("\n".join(lines))
            header, lines = line, []
        else:
            lines.append(line)
    return found


def free_names(code: str) -> set[str]:
    """Names the cell reads before it defines them (by assignment, import or def), builtins aside: the
    statements are walked in the order they run (an assignment's value before its target)."""
    defined, free = set(dir(builtins)), set()

    def visit(node) -> None:
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.NamedExpr)):
            if node.value is not None:
                visit(node.value)
            for target in getattr(node, "targets", None) or [node.target]:
                visit(target)
        elif isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load) and node.id not in defined:
                free.add(node.id)
            elif isinstance(node.ctx, ast.Store):
                defined.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        else:
            for child in ast.iter_child_nodes(node):
                visit(child)

    visit(ast.parse(code))
    return free


def called(code: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return names


def run_alone(code: str, variables: dict) -> dict:
    """Execute one cell in a namespace of only the variables it names; returns its new variables."""
    needed = free_names(code)
    missing = sorted(needed - variables.keys())
    assert not missing, f"this cell uses {missing} without importing or defining them:\n{code}"
    namespace = {"__name__": "__cell__", **{k: variables[k] for k in needed}}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(code, "<notebook 02 cell>", "exec"), namespace)
    namespace["_printed"] = out.getvalue()
    return {
        k: v for k, v in namespace.items() if not k.startswith("__") and not isinstance(v, types.ModuleType)
    }


def parameters(**changes) -> dict:
    """Notebook 02's parameters cell, with `changes`."""
    namespace: dict = {}
    exec(cells("02_lora_sft.py", "parameters")[0], namespace)
    return {k: v for k, v in namespace.items() if k.isupper()} | changes


def test_the_library_cells_hold_the_calls_the_chapter_teaches():
    library = cells("02_lora_sft.py", TAG)
    found = set().union(*(called(c) for c in library))
    assert set(CALLS) <= found, f"missing: {sorted(set(CALLS) - found)}"
    for code in library:  # the libraries alone: no project code in them
        assert "utils" not in code, code


def _rows(tokenizer, n: int = 12) -> list[dict]:
    from utils.prep import to_example
    from utils.prompts import render_example
    from utils.synthetic import generate_problems

    return [render_example(tokenizer, to_example(p, "reasoning")) for p in generate_problems(n, split="test")]


def run_library_cells(tiny_model, out_dir: Path, quantization: str) -> dict:
    """Notebook 02's library cells in order, each alone; between them, what the plumbing cells provide."""
    from utils.modeling import cpu_4bit_fallback
    from utils.training import sft_datasets

    state = parameters(QUANTIZATION=quantization, MAX_STEPS=2, BATCH_SIZE=4, SAVE_STEPS=1, MAX_LENGTH=128)
    state |= {"model_path": str(tiny_model), "adapter_dir": out_dir, "resume": None}
    printed = []
    for i, code in enumerate(cells("02_lora_sft.py", TAG)):
        state |= run_alone(code, state)
        printed.append(state.pop("_printed"))
        if i == 0:  # the data cell: the rows as datasets (and bitsandbytes' CPU fallback for odd widths)
            if state["quantization_config"] is not None:
                cpu_4bit_fallback(state["model"])
            rows = _rows(state["tokenizer"])
            state["train_dataset"], state["eval_dataset"] = sft_datasets(rows[:8], rows[8:])
    return state | {"printed": printed}


@pytest.mark.slow
def test_each_library_cell_runs_alone_and_trains(tiny_model, tmp_path):
    state = run_library_cells(tiny_model, tmp_path / "adapter", "none")
    assert any(
        text.startswith("trainable params: ") for text in state["printed"]
    )  # print_trainable_parameters
    trainer = state["trainer"]
    assert trainer.state.global_step == 2 and trainer.args.output_dir == str(tmp_path / "adapter")
    assert any("eval_loss" in h for h in trainer.state.log_history)  # eval_dataset was used
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.requires_grad for p in lora_b) and any(p.abs().sum() > 0 for p in lora_b)
    frozen = [p for n, p in trainer.model.named_parameters() if "lora_" not in n]
    assert not any(p.requires_grad for p in frozen)
    assert not state["args"].bf16 and state["args"].use_cpu  # picked from the hardware: a CPU here


@pytest.mark.slow
def test_the_qlora_path_loads_a_4bit_base_and_trains(tiny_model, tmp_path):
    import bitsandbytes as bnb

    state = run_library_cells(tiny_model, tmp_path / "adapter", "4bit")
    config = state["quantization_config"]
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in state["model"].modules())
    assert state["trainer"].state.global_step == 2


@pytest.mark.slow
def test_train_sft_trains_what_the_cells_train(tiny_model, tmp_path):
    """One code path: `train_sft` with the cells' SFTConfig and LoraConfig ends with the same adapter."""
    from peft import LoraConfig

    from utils.modeling import load_model
    from utils.training import train_sft

    state = run_library_cells(tiny_model, tmp_path / "cells", "none")
    p = parameters()
    model, tokenizer = load_model(str(tiny_model))
    rows = _rows(tokenizer)
    lora = LoraConfig(
        r=p["LORA_R"],
        lora_alpha=p["LORA_ALPHA"],
        lora_dropout=p["LORA_DROPOUT"],
        target_modules=p["TARGET_MODULES"],
        task_type="CAUSAL_LM",
    )
    args = replace(state["args"], output_dir=str(tmp_path / "train_sft"))
    result = train_sft(model, tokenizer, rows[:8], rows[8:], args, peft_config=lora)
    ours = {n: t for n, t in state["trainer"].model.named_parameters() if "lora_" in n}
    theirs = {n: t for n, t in result.model.named_parameters() if "lora_" in n}
    assert ours.keys() == theirs.keys() and ours
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=0)
    assert (tmp_path / "train_sft" / "final" / "adapter_model.safetensors").is_file()
