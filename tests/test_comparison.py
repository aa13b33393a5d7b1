"""The comparison runner: experiments as data, every field recorded, failures reported and survived."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from utils.comparison import (
    DEFAULT_EXPERIMENTS,
    FAMILY_LEARNING_RATES,
    RECORD_FIELDS,
    Budget,
    ComparisonData,
    Experiment,
    forgetting_texts,
    load_experiments,
    metrics,
    pareto_front,
    reading,
    results_table,
    run_comparison,
    text_loss,
    write_results,
)

BUDGET = Budget(
    max_steps=2, batch_size=4, max_length=128, warmup_steps=0, eval_limit=6, max_new_tokens=6, n_forgetting=8
)


def test_experiments_are_validated_with_the_field_named():
    with pytest.raises(ValueError, match=r"experiments\[1\]: unknown field\(s\) \['rank'\]"):
        load_experiments([{"name": "a", "method": "lora"}, {"name": "b", "method": "lora", "rank": 4}])
    with pytest.raises(ValueError, match=r"experiments\[0\]: field 'method': unknown method 'houlsby'"):
        load_experiments([{"name": "a", "method": "houlsby"}])
    with pytest.raises(ValueError, match="duplicate experiment names"):
        load_experiments([{"name": "a", "method": "lora"}, {"name": "a", "method": "ia3"}])
    defaults = load_experiments(DEFAULT_EXPERIMENTS)
    assert {e.method for e in defaults} >= {
        "lora",
        "qlora",
        "bottleneck",
        "full",
        "prefix",
        "adaption_prompt",
    }


def test_learning_rate_comes_from_the_family_unless_set():
    assert Experiment("a", "dora").rate() == FAMILY_LEARNING_RATES["lora"]
    assert (
        Experiment("a", "prompt").rate() == FAMILY_LEARNING_RATES["prompt"] != FAMILY_LEARNING_RATES["lora"]
    )
    assert Experiment("a", "lora", learning_rate=1e-5).rate() == 1e-5


def _table(rows):
    base = {
        "family": "x",
        "seeds": 2,
        "failed_seeds": 0,
        "learning_rate": 1e-3,
        "quantization": "none",
        "trainable_share": 0.01,
        "adapter_bytes": 1,
        "train_seconds": 1.0,
        "tokens_per_second": 1.0,
        "peak_memory_mb": 1.0,
        "final_train_loss": 1.0,
        "validation_loss": 1.0,
        "forgetting": 0.0,
        "error": None,
        "status": "ok",
    }
    return pd.DataFrame([base | r for r in rows])


def test_reading_ranks_by_validation_loss_when_seeds_blur_accuracy():
    table = _table(
        [
            {
                "method": m,
                "trainable_parameters": 10,
                "accuracy": a,
                "accuracy_min": a - 0.02,
                "accuracy_max": a + 0.02,
                "validation_loss": v,
            }
            for m, a, v in [
                ("lora", 0.03, 0.71),
                ("full", 0.01, 0.68),
                ("prompt", 0.02, 2.05),
                ("ia3", 0.02, 0.94),
            ]
        ]
    )
    text = "\n".join(reading(table))
    assert "span 0.020: at this budget accuracy does not separate the methods" in text
    assert "lowest for full 0.680, lora 0.710, ia3 0.940; highest for prompt 2.050" in text


def test_pareto_front_keeps_only_the_undominated():
    table = _table(
        [
            {"method": "small", "trainable_parameters": 10, "accuracy": 0.2},
            {"method": "dominated", "trainable_parameters": 50, "accuracy": 0.1},
            {"method": "big", "trainable_parameters": 100, "accuracy": 0.5},
            {"method": "huge", "trainable_parameters": 1000, "accuracy": 0.5},
            {"method": "broken", "trainable_parameters": math.nan, "accuracy": math.nan, "status": "failed"},
        ]
    )
    assert pareto_front(table, "trainable_parameters") == ["small", "big"]


def test_reading_quotes_the_table():
    table = _table(
        [
            {
                "method": "lora",
                "trainable_parameters": 1000,
                "accuracy": 0.42,
                "accuracy_min": 0.40,
                "accuracy_max": 0.44,
                "forgetting": 0.05,
            },
            {
                "method": "full",
                "trainable_parameters": 90000,
                "trainable_share": 1.0,
                "accuracy": 0.30,
                "accuracy_min": 0.2,
                "accuracy_max": 0.4,
                "forgetting": 0.31,
            },
            {
                "method": "prompt",
                "trainable_parameters": 100,
                "accuracy": 0.0,
                "accuracy_min": 0.0,
                "accuracy_max": 0.0,
                "forgetting": -0.01,
            },
            {
                "method": "vera",
                "status": "failed",
                "error": "RuntimeError: boom",
                "trainable_parameters": math.nan,
                "accuracy": math.nan,
                "accuracy_min": math.nan,
                "accuracy_max": math.nan,
                "forgetting": math.nan,
            },
        ]
    )
    text = "\n".join(reading(table))
    assert "Best held-out accuracy: lora, 0.420" in text and "1,000 parameters" in text
    assert "scores 0.300, 0.120 below lora" in text
    assert "Scoring 0 at this budget: prompt." in text
    assert "up to 0.200 (full)" in text and "span 0.420: the gaps" in text
    assert "largest for full (+0.310)" in text and "smallest for prompt (-0.010)" in text
    assert "vera failed: RuntimeError: boom" in text


@pytest.fixture(scope="module")
def small_data(tiny_model):
    from utils.modeling import load_tokenizer
    from utils.prep import to_example
    from utils.prompts import render_example
    from utils.synthetic import generate_problems

    tokenizer = load_tokenizer(str(tiny_model))
    rows = [
        render_example(tokenizer, to_example(p, "reasoning")) for p in generate_problems(12, split="test")
    ]
    return ComparisonData(
        rows[:8],
        generate_problems(BUDGET.eval_limit, split="test"),
        forgetting_texts(8),
        validation_rows=rows[8:],
    )


def test_text_loss_matches_the_models_own_loss(tiny_model):
    from utils.modeling import load_model

    model, tokenizer = load_model(str(tiny_model))
    text = forgetting_texts(2)[0]
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = model(input_ids=ids, labels=ids).loss.item()
    assert text_loss(model, tokenizer, [text]) == pytest.approx(expected, rel=1e-4)
    # Padding in a batch must not change the per-token loss.
    texts = forgetting_texts(6)
    pooled = text_loss(model, tokenizer, texts, batch_size=6)
    assert pooled == pytest.approx(text_loss(model, tokenizer, texts, batch_size=1), rel=1e-4)


@pytest.fixture(scope="module")
def comparison(tiny_model, small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("comparison")
    experiments = load_experiments(
        [
            {"name": "lora", "method": "lora"},
            # Deliberately broken: peft refuses target modules the model does not have.
            {"name": "broken", "method": "lora", "options": {"target_modules": ["no_such_module"]}},
            {"name": "bottleneck", "method": "bottleneck"},
            {"name": "full", "method": "full"},
            {"name": "qlora", "method": "qlora"},
        ]
    )
    lines = []
    records = run_comparison(experiments, [0, 1], small_data, BUDGET, str(tiny_model), out, log=lines.append)
    return records, lines, out


def test_runner_records_every_field_and_survives_a_failure(comparison):
    records, lines, out = comparison
    assert [(r["name"], r["seed"]) for r in records] == [
        (n, s) for n in ("lora", "broken", "bottleneck", "full", "qlora") for s in (0, 1)
    ]
    for r in records:
        assert set(r) == set(RECORD_FIELDS)
        assert json.loads((out / r["name"] / f"seed{r['seed']}.json").read_text()) == json.loads(
            json.dumps(r)
        )
        if r["name"] == "broken":
            assert r["status"] == "failed" and "no_such_module" in r["error"]
            continue
        assert r["status"] == "ok" and r["error"] is None
        missing = [k for k, v in r.items() if v is None and k != "error"]
        assert not missing, (r["name"], missing)
        assert r["steps"] == BUDGET.max_steps and r["tokens"] > 0 and r["train_seconds"] > 0
        assert 0 <= r["accuracy"] <= 1 and math.isfinite(r["forgetting"])
        assert r["forgetting"] == pytest.approx(r["forgetting_loss_after"] - r["forgetting_loss_before"])
    assert any("broken" in line and "FAILED" in line for line in lines)


def test_runner_measures_what_each_method_trains(comparison):
    records, _, out = comparison
    by = {(r["name"], r["seed"]): r for r in records}
    lora, bottleneck, full = by["lora", 0], by["bottleneck", 0], by["full", 0]
    assert full["trainable_parameters"] == full["base_parameters"] and full["trainable_share"] == 1.0
    # Shares are of the unquantized model: a 4-bit base packs two weights a byte but has as many.
    qlora = by["qlora", 0]
    assert (
        qlora["base_parameters"] == lora["base_parameters"]
        and qlora["trainable_share"] == lora["trainable_share"]
    )
    assert 0 < lora["trainable_share"] < 0.2 and 0 < bottleneck["trainable_share"] < 0.2
    assert (
        lora["adapter_bytes"] < full["adapter_bytes"] / 5
        and bottleneck["adapter_bytes"] < full["adapter_bytes"] / 5
    )
    assert (out / "bottleneck" / "seed0" / "adapter" / "bottleneck_model.safetensors").is_file()
    # Every method starts from the same base: the same loss on the forgetting text before training.
    assert (
        len(
            {
                r["forgetting_loss_before"]
                for r in records
                if r["status"] == "ok" and r["quantization"] == "none"
            }
        )
        == 1
    )
    # Seeds change the initialisation and the data order, and so the trained weights.
    assert by["lora", 0]["final_train_loss"] != by["lora", 1]["final_train_loss"]


def test_qlora_trains_every_layer_on_a_4bit_base_and_is_scored(comparison):
    records, _, out = comparison
    qlora = next(r for r in records if r["name"] == "qlora")
    assert qlora["status"] == "ok" and qlora["quantization"] == "4bit" and qlora["accuracy"] is not None
    weights = load_file(out / "qlora" / "seed0" / "adapter" / "adapter_model.safetensors")
    ups = {k: v for k, v in weights.items() if "lora_B" in k}
    # bitsandbytes' CPU repacking left early layers without gradient: every lora_B must have moved from 0.
    assert len(ups) == sum("lora_A" in k for k in weights) > 0 and all(
        v.abs().sum() > 0 for v in ups.values()
    ), [k for k, v in ups.items() if not v.any()]


def test_results_table_csv_and_metrics(comparison):
    records, _, out = comparison
    table = results_table(records)
    assert list(table["method"]) == ["lora", "broken", "bottleneck", "full", "qlora"]
    broken = table.set_index("method").loc["broken"]
    assert (
        broken["status"] == "failed" and broken["failed_seeds"] == 2 and "no_such_module" in broken["error"]
    )
    lora = table.set_index("method").loc["lora"]
    accs = [r["accuracy"] for r in records if r["name"] == "lora"]
    assert lora["accuracy"] == pytest.approx(sum(accs) / 2)
    assert (lora["accuracy_min"], lora["accuracy_max"]) == (min(accs), max(accs))
    paths = write_results(records, table, out)
    read = pd.read_csv(paths["results"])
    assert list(read["method"]) == list(table["method"]) and list(read.columns) == list(table.columns)
    assert len(pd.read_csv(paths["runs"])) == len(records)
    m = metrics(records, table, BUDGET, [0, 1])
    assert set(m["methods"]) == {"lora", "broken", "bottleneck", "full", "qlora"}
    assert all(set(run) == set(RECORD_FIELDS) for v in m["methods"].values() for run in v["runs"])
    json.dumps(m, allow_nan=False)  # NaN means become null: valid JSON for any reader


def test_a_rerun_keeps_finished_runs_only_when_nothing_changed(comparison, small_data, tiny_model):
    """`reuse=True` (a Kaggle session that died mid-comparison, rerun): a finished run with the same
    experiment, seed, budget, model and data is read back; change any of them and it trains again."""
    from dataclasses import replace

    from utils.comparison import run_experiment

    records, _, out = comparison
    lora = load_experiments([{"name": "lora", "method": "lora"}])[0]
    first = next(r for r in records if r["name"] == "lora" and r["seed"] == 0)
    kept = run_experiment(lora, 0, small_data, BUDGET, str(tiny_model), out, reuse=True)
    assert kept == json.loads(json.dumps(first)) and kept["fingerprint"]
    longer = replace(BUDGET, max_steps=3)
    again = run_experiment(lora, 0, small_data, longer, str(tiny_model), out, reuse=True)
    assert again["steps"] == 3 and again["fingerprint"] != first["fingerprint"]
    spec = {"name": "broken", "method": "lora", "options": {"target_modules": ["no_such_module"]}}
    path = out / "broken" / "seed0.json"
    before = path.stat().st_mtime_ns
    failed = run_experiment(
        load_experiments([spec])[0], 0, small_data, BUDGET, str(tiny_model), out, reuse=True
    )
    assert failed["status"] == "failed" and path.stat().st_mtime_ns > before  # tried again, not kept
