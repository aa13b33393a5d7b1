"""The GRPO reward functions: TRL's signature, answers read as the evaluation reads them, the competition's
range, the format check, and the sandboxed program's output."""

import pytest

from utils.rewards import boxed_format_reward, completion_text, correctness_reward, program_output_reward

TOOL = "Numbers: 12, 34.\n```python\nprint({expr})\n```\n```output\n{shown}\n```\nThe answer is \\boxed{{{boxed}}}."


def test_correctness_pays_the_right_answer_only():
    completions = ["So \\boxed{42}.", "So \\boxed{41}.", "The answer is 42", "no answer", ""]
    assert correctness_reward([""] * 5, completions, answer=[42] * 5) == [1.0, 0.0, 1.0, 0.0, 0.0]


def test_correctness_reads_latex_and_the_last_box():
    completions = ["\\boxed{7} then \\boxed{1{,}000}", "$\\boxed{\\dfrac{12}{4}}$", "\\boxed{\\frac{1}{2}}"]
    assert correctness_reward(None, completions, answer=[1000, 3, 0]) == [1.0, 1.0, 0.0]


def test_correctness_applies_the_competition_range():
    # AIMO 3 takes 0..99999 as is: 123456 is out of range, so wrong even when it is the true value.
    assert correctness_reward(None, ["\\boxed{123456}"], answer=[123456]) == [0.0]
    # AIMO 1 and 2 take the answer mod 1000: 1042 and 42 score the same.
    assert correctness_reward(None, ["\\boxed{1042}"], answer=[42], competition="aimo2") == [1.0]
    assert correctness_reward(None, ["\\boxed{1042}"], answer=[42], competition=["aimo3"]) == [0.0]


def test_correctness_takes_conversational_completions():
    completions = [[{"role": "assistant", "content": "\\boxed{9}"}], [{"role": "assistant", "content": "8"}]]
    assert correctness_reward(None, completions, answer=[9, 9]) == [1.0, 0.0]
    assert completion_text([]) == "" and completion_text(None) == ""


def test_correctness_ignores_trl_extras_and_needs_an_answer():
    extras = {"trainer_state": object(), "completion_ids": [[1]], "log_metric": print, "kind": ["mental"]}
    assert correctness_reward(["p"], ["\\boxed{5}"], answer=[5], **extras) == [1.0]
    assert correctness_reward(["p"], ["\\boxed{5}"], answer=[None]) == [0.0]


def test_format_wants_one_closed_box_at_the_end():
    completions = [
        "2 + 3 = 5. The answer is \\boxed{5}.",
        "$\\boxed{5}$",
        "\\boxed{5} and then more words",
        "The answer is \\boxed{5",  # cut off before the box closed
        "The answer is \\boxed{}.",
        "The answer is 5.",
        "\\boxed{\\frac{1}{2}}",  # a box, closed, at the end: format is not correctness
    ]
    assert boxed_format_reward(None, completions) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_program_reward_runs_the_code_not_the_written_output():
    right_code_wrong_copy = TOOL.format(expr="12 * 34", shown="999", boxed=999)
    wrong_code_right_copy = TOOL.format(expr="12 * 35", shown="408", boxed=408)
    crashing = TOOL.format(expr="1 / 0", shown="408", boxed=408)
    no_code = "Numbers: 12, 34. The answer is \\boxed{408}."
    rewards = program_output_reward(
        None, [right_code_wrong_copy, wrong_code_right_copy, crashing, no_code], answer=[408] * 4
    )
    assert rewards == [1.0, 0.0, 0.0, 0.0]


def test_program_reward_applies_only_to_tool_completions():
    tool = TOOL.format(expr="(12 * 34) - 8", shown="400", boxed=400)
    rewards = program_output_reward(
        None, [tool, tool, "\\boxed{400}"], answer=[400, 401, 400], mode=["tools", "tools", "reasoning"]
    )
    assert rewards == [1.0, 0.0, None]


@pytest.mark.parametrize("reward", [correctness_reward, program_output_reward])
def test_one_reward_per_completion(reward):
    completions = [TOOL.format(expr="2 * 3", shown="6", boxed=6)] * 3
    assert len(reward(["p"] * 3, completions, answer=[6, 6, 7])) == 3
