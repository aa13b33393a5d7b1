"""Notebook 03's runner: experiment folders read as peft does, one runner for every kind, tiers that never
rank noise, and forgetting whose sign means what the notebook says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from utils.comparison import (
    ComparisonData,
    config_code,
    describe,
    forgetting_texts,
    load_experiment,
    load_experiments,
    metrics,
    reading,
    results_table,
    run_all,
    separated_pairs,
    tiers,
)

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments" / "03_adapter_comparison"
BUDGET = {"max_steps": 2, "per_device_train_batch_size": 4, "max_length": 128, "logging_steps": 1}


def test_every_folder_of_the_repository_loads_as_its_method():
    from peft import IA3Config, LoraConfig, MissConfig, PromptTuningConfig

    from utils.adapters import BottleneckConfig

    methods = {e.name: e for e in load_experiments(EXPERIMENTS / "methods")}
    assert isinstance(methods["lora"].config, LoraConfig) and methods["lora"].config.init_lora_weights is True
    assert methods["pissa"].config.init_lora_weights == "pissa"
    assert isinstance(methods["miss"].config, MissConfig) and isinstance(methods["ia3"].config, IA3Config)
    assert isinstance(methods["prompt_tuning"].config, PromptTuningConfig)
    assert (
        isinstance(methods["bottleneck"].config, BottleneckConfig)
        and methods["bottleneck"].kind == "bottleneck"
    )
    assert methods["full"].kind == "full" and methods["full"].config is None
    # Each folder's rate overrides the shared default; methods that train vectors get far larger ones.
    assert methods["ia3"].training["learning_rate"] > 10 * methods["full"].training["learning_rate"]
    assert methods["lora"].training["lr_scheduler_type"] == "cosine"  # from default_training_params.json
    ranks = {e.name: e.config.r for e in load_experiments(EXPERIMENTS / "rank")}
    assert sorted(ranks.values()) == [1, 4, 16, 64]


def test_the_budget_overrides_every_folder_and_config_code_shows_what_differs(tmp_path):
    from peft import LoraConfig

    folder = tmp_path / "set" / "mine"
    LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj"], task_type="CAUSAL_LM").save_pretrained(folder)
    (tmp_path / "set" / "default_training_params.json").write_text(
        '{"learning_rate": 0.5, "warmup_steps": 3}'
    )
    (folder / "training_params.json").write_text('{"learning_rate": 0.1, "max_steps": 999}')
    exp = load_experiment(folder, {"max_steps": 7})
    assert exp.training == {"learning_rate": 0.1, "warmup_steps": 3, "max_steps": 7}
    assert config_code(exp) == "LoraConfig(r=4, target_modules={'q_proj'}, lora_alpha=16)"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no adapter_config.json"):
        load_experiment(tmp_path / "empty")


def _table(intervals: dict[str, tuple[float, float]]):
    records = [
        {
            "name": n,
            "kind": "peft",
            "seed": s,
            "status": "ok",
            "error": None,
            "learning_rate": 0.01,
            "accuracy": acc,
            "trainable_parameters": 100 * (i + 1),
            "trainable_share": 0.01 * (i + 1),
            "adapter_bytes": 1024.0,
            "train_seconds": 1.0,
            "peak_memory_mb": 1.0,
            "final_train_loss": 0.5,
            "forgetting": 0.01 * (i - 1),
        }  # fmt: skip
        for i, (n, pair) in enumerate(intervals.items())
        for s, acc in enumerate(pair)
    ]
    return records, *results_table(records)


def test_tiers_group_overlapping_intervals_and_rank_only_separated_ones():
    # a and b overlap; c overlaps b only (a chain): one tier. d is below all three; e and f overlap.
    records, table, failed = _table(
        {
            "a": (0.40, 0.50),
            "b": (0.30, 0.42),
            "c": (0.25, 0.31),
            "d": (0.10, 0.20),
            "e": (0.0, 0.05),
            "f": (0.01, 0.03),
        }
    )
    assert failed == [] and list(table.index) == ["a", "b", "c", "d", "e", "f"]
    assert list(table["tier"]) == [1, 1, 1, 2, 3, 3]
    pairs = set(separated_pairs(table))
    assert ("a", "c") in pairs and ("a", "b") not in pairs and ("b", "c") not in pairs
    assert ("e", "f") not in pairs and ("f", "e") not in pairs and ("d", "e") in pairs
    # Every method of a tier beats every method of every tier below, on every seed.
    for hi, lo in [
        (x, y) for x in table.index for y in table.index if table.loc[x, "tier"] < table.loc[y, "tier"]
    ]:
        assert (hi, lo) in pairs
    # A wide interval low down reaches up into the top tier: it joins it, never ranked below it.
    _, wide, _ = _table({"a": (0.40, 0.50), "b": (0.30, 0.32), "w": (0.05, 0.45)})
    assert list(wide["tier"]) == [1, 1, 1]
    assert tiers(wide) == [1, 1, 1]


def test_reading_names_tiers_indistinguishable_methods_and_forgetting():
    records, table, failed = _table({"a": (0.40, 0.50), "b": (0.38, 0.44), "c": (0.0, 0.1)})
    text = "\n".join(reading(table, failed + ["broken"]))
    assert "Tier 1: a 0.450 [0.400, 0.500], b 0.410 [0.380, 0.440] (indistinguishable" in text
    assert "Tier 2: c 0.050 [0.000, 0.100]." in text
    assert "Cheapest in tier 1: a, 100 trainable parameters" in text
    assert "2 of 3 pairs of methods are separated" in text
    assert "from -0.010 (a) to +0.010 (c); 1 of 3 methods forgot" in text
    assert "broken failed on every seed" in text
    m = metrics(records, table, [], {"seeds": [0, 1]})
    assert m["methods"]["a"]["accuracy_std"] == pytest.approx(0.05) and m["seeds"] == [0, 1]
    json.dumps(m, allow_nan=False)


def test_forgetting_probe_is_text_the_task_does_not_teach():
    texts = forgetting_texts(10)
    assert len(texts) == 10 and all("\\boxed" not in t or "```python" in t for t in texts)
    assert not any("Please reason step by step" in t for t in texts)
    assert forgetting_texts(10) == texts and forgetting_texts(10, seed=7) != texts


@pytest.fixture(scope="module")
def small_data(tiny_model):
    from utils.modeling import load_tokenizer
    from utils.prep import to_example
    from utils.prompts import render_example
    from utils.synthetic import generate_problems

    tokenizer = load_tokenizer(str(tiny_model))
    problems = [p for p in generate_problems(40, split="test") if p.metadata["kind"] == "mental"]
    rows = [render_example(tokenizer, to_example(p, "reasoning")) for p in problems[:8]]
    return ComparisonData(rows, problems[8:12], forgetting_texts(8))


@pytest.fixture(scope="module")
def runs(tiny_model, small_data, tmp_path_factory):
    from peft import LoraConfig

    out = tmp_path_factory.mktemp("runs")
    root = tmp_path_factory.mktemp("experiments")
    # Deliberately broken: peft refuses target modules the model does not have.
    LoraConfig(target_modules=["no_such_module"], task_type="CAUSAL_LM").save_pretrained(root / "broken")
    experiments = [
        load_experiment(EXPERIMENTS / "methods" / n, BUDGET) for n in ("lora", "bottleneck", "full")
    ]
    experiments.append(load_experiment(root / "broken", BUDGET))
    jobs = [(e, s, small_data, str(tiny_model), out, 8) for e in experiments for s in (0, 1)]
    return run_all(jobs), out


def test_runner_records_every_metric_and_survives_a_failure(runs):
    records, out = runs
    assert [(r["name"], r["seed"]) for r in records] == [
        (n, s) for n in ("lora", "bottleneck", "full", "broken") for s in (0, 1)
    ]
    for r in records:
        assert json.loads((out / r["name"] / f"seed{r['seed']}.json").read_text()) == json.loads(
            json.dumps(r)
        )
        if r["name"] == "broken":
            assert r["status"] == "failed" and "no_such_module" in r["error"] and "FAILED" in describe(r)
            continue
        assert r["status"] == "ok" and r["error"] is None
        assert 0 <= r["accuracy"] <= 1 and r["train_seconds"] > 0 and r["peak_memory_mb"] > 0
        assert r["forgetting"] == pytest.approx(r["forgetting_loss_after"] - r["forgetting_loss_before"])
    table, failed = results_table(records)
    assert failed == ["broken"] and set(table.index) == {"lora", "bottleneck", "full"}


def test_runner_measures_what_each_method_trains_and_saves(runs):
    records, out = runs
    by = {(r["name"], r["seed"]): r for r in records}
    lora, bottleneck, full = by["lora", 0], by["bottleneck", 0], by["full", 0]
    assert (
        full["trainable_share"] == 1.0
        and 0 < lora["trainable_share"] < 0.2
        and 0 < bottleneck["trainable_share"] < 0.2
    )
    assert (
        lora["adapter_bytes"] < full["adapter_bytes"] / 5
        and bottleneck["adapter_bytes"] < full["adapter_bytes"] / 5
    )
    assert (out / "bottleneck" / "seed0" / "adapter" / "bottleneck_model.safetensors").is_file()
    assert not (out / "bottleneck" / "seed0" / "train" / "final").exists()  # the whole model is not kept
    assert not list(out.glob("*/seed*/train/checkpoint-*"))
    # Every method starts from the same base: the same loss on the probe before training.
    assert len({r["forgetting_loss_before"] for r in records if r["status"] == "ok"}) == 1
    # Seeds change the initialisation and the data order, and so the trained weights.
    assert by["lora", 0]["final_train_loss"] != by["lora", 1]["final_train_loss"]


def test_forgetting_is_positive_when_tuning_damages_the_probe(tiny_model, small_data, tmp_path):
    """The sign the notebook's prose gives: a full fine-tune at a rate far too high wrecks what the model
    knew, and its forgetting is large and positive."""
    exp = load_experiment(
        EXPERIMENTS / "methods" / "full", BUDGET | {"learning_rate": 0.05, "warmup_steps": 0}
    )
    (record,) = run_all([(exp, 0, small_data, str(tiny_model), tmp_path, 8)])
    assert record["status"] == "ok" and record["forgetting"] > 0.5
