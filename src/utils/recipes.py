"""Recipes: the notebooks' parameters for one (model, hardware) pair, as papermill parameter files.

`recipes/<name>/recipe.yaml` says what the recipe is for (`model`, `gpu`, `description`);
`recipes/<name>/<notebook>.yaml` holds that notebook's parameters, each with a one-line reason as a comment,
and `papermill -f recipes/<name>/<notebook>.yaml` applies it (`make run-all RECIPE=<name>` does so for every
notebook; `make kaggle RECIPE=<name>` writes the values into the Kaggle kernels' parameters cells).

`check_recipe` is what the tests and `python -m utils.recipes check <name>` run: every parameter exists in its
notebook, every value has a reason, and the values are sane for the hardware (no bf16 on a T4 or P100, memory
plans that fit, learning rates in range for the method and size, enough new tokens to finish a solution).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from utils.memory import BIG_MODEL
from utils.paths import project_root

RECIPES_DIR = project_root() / "recipes"
NOTEBOOKS_DIR = project_root() / "notebooks"
LORA_LR = (1e-6, 1e-3)  # LoRA/QLoRA on a 1B+ model (2e-4 is the usual; the tiny model trains at 1e-2)
MIN_NEW_TOKENS = {"05_submission": 1024, "06_grpo": 512, "02_lora_sft": 512, "04_quantized_inference": 512}


class RecipeError(ValueError):
    """A recipe that names an unknown parameter, lacks a reason, or does not suit its hardware."""


@dataclass
class Recipe:
    name: str
    model: str
    gpu: str  # "cpu", "2xT4", "4xL4", "H100": the memory plan's card
    description: str
    params: dict  # notebook name -> {parameter: value}
    folder: Path

    def file(self, notebook: str) -> Path:
        return self.folder / f"{notebook}.yaml"


def available(recipes_dir: Path | None = None) -> list[str]:
    return sorted(p.parent.name for p in (recipes_dir or RECIPES_DIR).glob("*/recipe.yaml"))


def load_recipe(name: str, recipes_dir: Path | None = None) -> Recipe:
    folder = (recipes_dir or RECIPES_DIR) / name
    meta_path = folder / "recipe.yaml"
    if not meta_path.is_file():
        raise RecipeError(f"no recipe {name!r}: {meta_path} is missing (recipes: {', '.join(available())})")
    meta = _read_yaml(meta_path)
    for key in ("model", "gpu", "description"):
        if key not in meta:
            raise RecipeError(f"{meta_path}: no {key!r}")
    params = {p.stem: _read_yaml(p) for p in sorted(folder.glob("[0-9]*.yaml"))}
    return Recipe(name, str(meta["model"]), str(meta["gpu"]), str(meta["description"]), params, folder)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping of NAME: value")
    return data


def notebook_parameters(notebook: str, notebooks_dir: Path = NOTEBOOKS_DIR) -> dict:
    """The names and default values of a notebook's `parameters` cell, read from its .py source."""
    source = (notebooks_dir / f"{notebook}.py").read_text(encoding="utf-8")
    cell = re.search(r'# %% tags=\["parameters"\]\n(.*?)(?=\n# %%)', source, re.S)
    if not cell:
        raise RecipeError(f"{notebook}: no cell tagged parameters")
    values = {}
    for node in ast.parse(cell.group(1)).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def unreasoned_lines(path: Path) -> list[str]:
    """Parameter lines without a `# reason` comment."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln for ln in lines if re.match(r"^[A-Z_][A-Z0-9_]*\s*:", ln) and "#" not in ln]


def check_recipe(recipe: Recipe) -> list[str]:
    """Every problem found; an empty list is a recipe that passes."""
    problems = []
    for notebook, params in recipe.params.items():
        problems += _check_names(recipe, notebook, params)
        problems += [
            f"{recipe.file(notebook)}: no reason given for `{ln}`"
            for ln in unreasoned_lines(recipe.file(notebook))
        ]
    if problems:
        return problems
    return _check_hardware(recipe)


def _check_names(recipe: Recipe, notebook: str, params: dict) -> list[str]:
    if not (NOTEBOOKS_DIR / f"{notebook}.py").is_file():
        return [f"{recipe.file(notebook)}: no notebook {notebook}"]
    known = notebook_parameters(notebook)
    return [f"{recipe.file(notebook)}: {notebook} has no parameter {k}" for k in params if k not in known]


def merged_parameters(recipe: Recipe, notebook: str) -> dict:
    """The values a notebook runs with under the recipe: its defaults, then the recipe's."""
    return notebook_parameters(notebook) | recipe.params.get(notebook, {})


def _check_hardware(recipe: Recipe) -> list[str]:
    from utils.memory import CARDS_WITHOUT_BF16, architecture, model_config, notebook_plans, parse_card

    card = parse_card(recipe.gpu)
    problems = []
    for notebook, params in recipe.params.items():
        for key, value in params.items():
            if card.name in CARDS_WITHOUT_BF16 and re.search(r"bf16|bfloat16", str(value), re.I):
                problems.append(f"{recipe.file(notebook)}: {key}={value!r}, but a {card.name} has no bf16")
    arch = architecture(model_config(recipe.model))
    big = arch.params > BIG_MODEL
    for notebook in recipe.params:
        values = merged_parameters(recipe, notebook)
        problems += _check_learning_rate(recipe, notebook, values, big)
        problems += _check_new_tokens(recipe, notebook, values, big)
        try:
            plans = notebook_plans(notebook, values, arch, card)
        except ValueError as e:  # a value the plan cannot read (an unknown quantization, say)
            problems.append(f"{recipe.file(notebook)}: {e}")
            continue
        problems += [f"{recipe.file(notebook)}: {plan}" for plan in plans if not plan.fits]
    return problems


def _check_learning_rate(recipe: Recipe, notebook: str, values: dict, big: bool) -> list[str]:
    lr = values.get("LEARNING_RATE")
    if lr is None or not big:
        return []
    low, high = LORA_LR
    if not low <= float(lr) <= high:
        return [
            f"{recipe.file(notebook)}: LEARNING_RATE {lr} is outside [{low}, {high}] for LoRA on a 1B+ model"
        ]
    return []


def _check_new_tokens(recipe: Recipe, notebook: str, values: dict, big: bool) -> list[str]:
    need = MIN_NEW_TOKENS.get(notebook)
    problems = []
    for knob in ("MAX_NEW_TOKENS", "MAX_COMPLETION_LENGTH"):
        have = values.get(knob)
        if big and need and have is not None and int(have) < need:
            problems.append(
                f"{recipe.file(notebook)}: {knob} {have} is too few for a real model to finish a solution "
                f"(at least {need})"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.recipes", description="List or check recipes.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    check = sub.add_parser("check")
    check.add_argument("names", nargs="*", help="recipes to check (default: all)")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in available():
            recipe = load_recipe(name)
            print(f"{name:28} {recipe.gpu:6} {recipe.model}: {recipe.description}")
        return 0
    failed = False
    for name in args.names or available():
        try:
            problems = check_recipe(load_recipe(name))
        except RecipeError as e:
            problems = [str(e)]
        failed |= bool(problems)
        print(
            f"recipe {name}: {'ok' if not problems else 'FAILS'}", file=sys.stderr if problems else sys.stdout
        )
        for p in problems:
            print(f"  {p}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
