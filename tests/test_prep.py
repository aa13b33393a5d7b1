"""Data preparation: embedded problems, real sets, decontamination, formats and deterministic splits."""

from __future__ import annotations

import json

from utils.answers import extract_answer
from utils.data import Problem
from utils.prep import PrepConfig, prepare, to_example
from utils.prompts import (
    build_prompt,
    ending_in_box,
    gsm8k_solution,
    render_example,
    solution_for,
    text_after_last_box,
    user_message,
)
from utils.synthetic import arithmetic_facts, generate_problems


def test_generated_problems_are_deterministic_and_correct():
    a, b = generate_problems(50, seed=3), generate_problems(50, seed=3)
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b]
    assert generate_problems(50, seed=4)[0].problem != a[0].problem
    for p in a:
        assert p.answer is not None and p.answer >= 0
        assert p.solution.endswith(f"\\boxed{{{p.answer}}}.")
        assert f"```output\n{p.answer}\n```" in p.metadata["tool_solution"]
    kinds = [p.metadata["kind"] for p in generate_problems(400, compute_share=0.25)]
    assert kinds.count("compute") == 100


def test_tool_solutions_run_to_the_answer():
    from utils.generation import last_code_block

    for p in generate_problems(20, seed=1):
        code = last_code_block(p.metadata["tool_solution"])
        assert eval(code.removeprefix("print(").strip()[:-1]) == p.answer  # noqa: S307 - our own generated code


def test_pretraining_facts_cover_every_mental_step():
    facts = set(arithmetic_facts(copies=1, n_big_products=0))
    for p in generate_problems(300, seed=5, compute_share=0.0):
        for step in p.solution.split(". ")[1:]:
            if "=" in step and "boxed" not in step:
                assert step.strip(". ") in facts, step


def test_examples_use_the_deepseek_prompts():
    p = generate_problems(1, seed=0, compute_share=1.0)[0]
    tools = to_example(p, "tools")
    assert tools["messages"][0]["content"] == user_message(p.problem, "tools")
    assert "integrate natural language reasoning with programs" in tools["messages"][0]["content"]
    assert tools["messages"][1]["content"] == solution_for(p, "tools") == p.metadata["tool_solution"]


def test_render_example_puts_the_space_in_the_completion(tiny_tokenizer):
    p = generate_problems(1, seed=0)[0]
    row = render_example(tiny_tokenizer, to_example(p, "reasoning"))
    assert row["prompt"] == build_prompt(tiny_tokenizer, p.problem, "reasoning")
    assert row["prompt"].endswith("Assistant:") and row["completion"].startswith(" Numbers:")
    assert row["completion"].endswith(tiny_tokenizer.eos_token)


def test_prepare_with_real_data(data_dir, tmp_path):
    config = PrepConfig(n_embedded_train=200, n_embedded_validation=20, n_embedded_eval=50)
    result = prepare(config, data_dir, tmp_path)
    assert result.raw_counts["gsm8k_train"] == 7473 and result.raw_counts["aime"] == 933
    assert result.decontamination["dropped_per_set"].get("aime", 0) >= 300  # MATH train holds AIME problems
    train_ids = {e["id"].rsplit("-", 1)[0] for e in result.train}
    eval_ids = {p.id for p in result.evaluation}
    assert not train_ids & eval_ids
    sources = {e["source"] for e in result.train}
    assert {"embedded", "gsm8k", "math", "tora"} <= sources
    assert all(e["answer"] is not None for e in result.train)
    # deterministic: the same files again
    again = prepare(config, data_dir, tmp_path / "again")
    assert [e["id"] for e in again.train] == [e["id"] for e in result.train]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["counts"]["train"] == len(result.train)


def test_prepare_without_data_uses_embedded_only(tmp_path):
    result = prepare(
        PrepConfig(n_embedded_train=100, n_embedded_validation=10, n_embedded_eval=30), None, tmp_path
    )
    assert {e["source"] for e in result.train} == {"embedded"}
    assert len(result.evaluation) == 30
    assert len(result.train) == 100  # one example per problem, in the style it is trained in
    assert {e["mode"] for e in result.train if e["kind"] == "compute"} == {"tools"}
    assert {e["mode"] for e in result.train if e["kind"] == "mental"} == {"reasoning"}


CLOSING = set(" \n$.,;:!)]\\")  # what may follow a target's final box


def test_real_training_targets_are_worked_solutions_ending_in_their_answer(data_dir, tmp_path):
    result = prepare(
        PrepConfig(n_embedded_train=100, n_embedded_validation=10, n_embedded_eval=20), data_dir, tmp_path
    )
    for example in result.train + result.validation:
        target = example["messages"][1]["content"]
        assert "<<" not in target and "####" not in target, example["id"]
        after = text_after_last_box(target)
        assert after is not None and set(after) <= CLOSING, (example["id"], after and after[:80])
        assert extract_answer(target) == example["answer"], example["id"]
    assert not any(e["source"] == "aime" for e in result.train)  # answers only: evaluated, never trained
    assert any(p.source == "aime" for p in result.evaluation)
    tools = [e for e in result.train if e["mode"] == "tools" and e["source"] == "tora"]
    with_code = [e for e in tools if "```python" in e["messages"][1]["content"]]
    assert len(with_code) >= 0.7 * len(tools) > 0  # ToRA answered some problems without a program
    first = [e["source"] for e in result.validation[:100]]
    assert {"gsm8k", "math"} <= set(first)  # validation draws from the training sources, mixed


def test_gsm8k_targets_lose_calculator_notes_and_gain_a_box():
    text = "She sold 48/2 = <<48/2=24>>24 clips.\nIn all 48+24 = <<48+24=72>>72.\n#### 72"
    assert (
        gsm8k_solution(text, 72)
        == "She sold 48/2 = 24 clips.\nIn all 48+24 = 72.\nThe answer is $\\boxed{72}$."
    )


def test_a_solution_that_goes_on_after_its_box_gets_a_closing_line():
    kept = "So $x = \\boxed{\\frac{6}{2}}$."
    assert ending_in_box(kept, 3) == kept
    extended = ending_in_box("So $x=\\boxed{3}$ is obtained when the rectangle is a square.", 3)
    assert extended.endswith("The answer is $\\boxed{3}$.") and extract_answer(extended) == 3
    assert ending_in_box("No box at all.", 5).endswith("$\\boxed{5}$.")


def test_rows_without_a_worked_solution_are_never_targets():
    answer_only = Problem("aime-1983-1", "aime", "Find w.", None, 60, {})
    assert solution_for(answer_only, "reasoning") is None
    assert solution_for(answer_only, "tools") is None
