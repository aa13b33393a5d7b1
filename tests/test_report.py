"""The README's results section is generated from the notebooks' metrics.json files as they are written."""

from __future__ import annotations

import json

from utils.report import render


def _write(root, notebook: str, metrics: dict) -> None:
    folder = root / "outputs" / notebook
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_every_notebook_with_metrics_gets_its_table(tmp_path):
    _write(
        tmp_path,
        "02_lora_sft",
        {
            "base_accuracy": 0.0,
            "tuned_accuracy": 0.75,
            "base_by_kind": {"mental": 0.0, "compute": 0.0},
            "tuned_by_kind": {"mental": 0.74, "compute": 0.72},
            "eval_problems": 300,
            "trainable_parameters": 157696,
            "total_parameters": 1118592,
            "steps": 400,
        },
    )
    _write(
        tmp_path,
        "03_adapter_comparison",
        {
            "budget": {"max_steps": 30, "batch_size": 8},
            "seeds": [0, 1],
            "methods": {
                "lora": {
                    "accuracy": 0.25,
                    "accuracy_std": 0.01,
                    "trainable_share": 0.08,
                    "train_seconds": 5.0,
                    "final_train_loss": 0.7,
                    "forgetting": 0.2,
                }
            },
        },
    )
    _write(
        tmp_path,
        "05_submission",
        {
            "accuracy": {"greedy reasoning": 0.5, "vote of 8, tools": 0.7},
            "by_kind": {"greedy reasoning": {"compute": 0.0}, "vote of 8, tools": {"compute": 0.8}},
        },
    )
    _write(
        tmp_path,
        "06_grpo",
        {"sft_accuracy": 0.65, "grpo_accuracy": 0.7, "sft_vote_accuracy": 0.48, "grpo_vote_accuracy": 0.5,
         "eval_problems": 300, "steps": 20, "num_generations": 16, "trained_groups": ["compute_product"],
         "vote_samples": 4},
    )  # fmt: skip
    text = render(tmp_path)
    assert "| after GRPO | 0.700 | 0.500 |" in text and "vote of 4" in text
    assert "| LoRA-tuned | 0.750 | 0.740 | 0.720 |" in text
    assert "| lora | 0.250 | 0.010 | 0.080 | 5.000 | 0.700 | 0.200 |" in text
    assert "30 steps of batch 8" in text
    assert "| vote of 8, tools | 0.700 | 0.800 |" in text


def test_without_outputs_it_says_how_to_make_them(tmp_path):
    assert "make run-all" in render(tmp_path)


def test_the_benchmarks_bars_come_from_the_generated_benchmarks_readme(tmp_path):
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    (folder / "README.md").write_text(
        "# Benchmarks\n\n## The bars\n\n| bar | target |\n| --- | --- |\n| answers/s | >= 3 |\n\n## Training\n\nmore\n"
    )
    text = render(tmp_path)
    assert "### Benchmarks" in text and "| answers/s | >= 3 |" in text and "## Training" not in text
    assert "benchmarks/README.md" in text
