"""Recipes: every parameter exists in its notebook, has a reason, and suits the recipe's hardware."""

from __future__ import annotations

import shutil

import pytest

from utils.recipes import (
    RECIPES_DIR,
    available,
    check_recipe,
    load_recipe,
    merged_parameters,
    notebook_parameters,
)

SHIPPED = [
    "tiny-cpu",
    "deepseek-math-7b-2xt4",
    "deepseek-math-7b-4xl4",
    "deepseek-math-7b-h100",
    "qwen3-8b-h100",
]


def test_the_recipes_the_series_promises_exist():
    assert set(SHIPPED) <= set(available())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_recipe_passes_its_checks(name):
    assert check_recipe(load_recipe(name)) == []


def test_tiny_cpu_is_the_notebooks_defaults():
    recipe = load_recipe("tiny-cpu")
    for notebook, params in recipe.params.items():
        defaults = notebook_parameters(notebook)
        assert {k: v for k, v in params.items() if k != "GPU"} == {
            k: defaults[k] for k in params if k != "GPU"
        }


def test_the_t4_recipe_is_qlora_and_fits_the_real_model():
    values = merged_parameters(load_recipe("deepseek-math-7b-2xt4"), "02_lora_sft")
    assert values["QUANTIZATION"] == "4bit" and values["GPU"] == "2xT4" and values["MAX_NEW_TOKENS"] >= 512


def broken_copy(tmp_path, name: str, notebook: str, line: str):
    folder = tmp_path / name
    shutil.copytree(RECIPES_DIR / name, folder)
    path = folder / f"{notebook}.yaml"
    path.write_text(path.read_text() + line + "\n")
    return load_recipe(name, tmp_path)


@pytest.mark.parametrize(
    ("notebook", "line", "problem"),
    [
        ("02_lora_sft", "NO_SUCH_KNOB: 3  # a typo", "has no parameter NO_SUCH_KNOB"),
        ("02_lora_sft", "LORA_DROPOUT: 0.1", "no reason given"),
        ("02_lora_sft", "LEARNING_RATE: 0.01  # the tiny model's rate", "LEARNING_RATE 0.01 is outside"),
        ("05_submission", "MAX_NEW_TOKENS: 64  # the tiny model's", "MAX_NEW_TOKENS 64 is too few"),
        ("03_adapter_comparison", "METHODS: lora,full  # full fine-tuning too", "DOES NOT FIT"),
        ("02_lora_sft", "BATCH_SIZE: 16  # too many tokens a step", "DOES NOT FIT"),
        ("05_submission", "QUANTIZATION: bf16  # forced", "has no bf16"),
    ],
)
def test_a_recipe_that_does_not_suit_its_t4s_is_refused(tmp_path, notebook, line, problem):
    recipe = broken_copy(tmp_path, "deepseek-math-7b-2xt4", notebook, line)
    problems = check_recipe(recipe)
    assert any(problem in p for p in problems), problems


def test_the_check_command_fails_on_a_bad_recipe(tmp_path, monkeypatch, capsys):
    from utils import recipes

    broken_copy(tmp_path, "tiny-cpu", "02_lora_sft", "NOPE: 1  # typo")
    monkeypatch.setattr(recipes, "RECIPES_DIR", tmp_path)
    assert recipes.main(["check", "tiny-cpu"]) == 1
    assert "has no parameter NOPE" in capsys.readouterr().err
