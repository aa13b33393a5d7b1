"""Verifiable rewards for reinforcement learning (GRPO, notebook 06): each one a plain function a program
can check, never a learned judge.

Every function has TRL's reward signature, `f(prompts, completions, **kwargs) -> list[float | None]`: the
data set's columns arrive as keyword arguments (`answer`, and optionally `mode` and `competition`), one
value per completion. A completion is a string (prompt/completion data) or a list of chat messages
(conversational data). None means "this reward does not apply to this completion" (TRL skips it there).

Answers are read exactly as the evaluation and the submission read them (`utils.answers`), and fitted to
the competition's range, so the policy is rewarded for what the leaderboard would score.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from utils.answers import extract_answer, matching_brace, normalize_for_competition
from utils.generation import last_code_block

__all__ = ["boxed_format_reward", "correctness_reward", "program_output_reward", "completion_text"]

DEFAULT_COMPETITION = "aimo3"
_BOX_OPEN_RE = re.compile(r"\\boxed\s*\{")
_AFTER_BOX_RE = re.compile(r"^[\s.$]*(?:\\\]|\\\))?[\s.$]*$")  # what may follow the final box: ".", "$", "\]"


def completion_text(completion) -> str:
    """The text of a completion: the string itself, or the content of a conversation's last message."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    return ""


def _column(values, n: int, default) -> list:
    """A per-completion column from the kwargs: a list as given, a scalar repeated, or the default."""
    if values is None:
        return [default] * n
    if isinstance(values, (list, tuple)):
        return list(values)
    return [values] * n


def _same_answer(predicted: int | None, truth, competition: str) -> bool:
    """Whether two answers score the same on the competition: both fitted to its range first."""
    if predicted is None or truth is None:
        return False
    fitted = normalize_for_competition(int(predicted), competition)
    return fitted is not None and fitted == normalize_for_competition(int(truth), competition)


def correctness_reward(prompts, completions, answer, competition=None, **kwargs) -> list[float]:
    """1.0 when the completion's answer (`extract_answer`: its last `\\boxed{}`, else its answer phrase)
    equals the integer `answer` once both are fitted to the competition's range (default AIMO 3:
    0..99999, out of range is wrong), else 0.0. The reward the leaderboard gives."""
    texts = [completion_text(c) for c in completions]
    truths = _column(answer, len(texts), None)
    comps = _column(competition, len(texts), DEFAULT_COMPETITION)
    return [
        1.0 if _same_answer(extract_answer(t), a, comp) else 0.0
        for t, a, comp in zip(texts, truths, comps, strict=True)
    ]


def boxed_format_reward(prompts, completions, **kwargs) -> list[float]:
    """1.0 when the completion ends with one closed, non-empty `\\boxed{}` (only a full stop or math
    delimiters after it), else 0.0: the format every answer reader and the submission rely on. It says
    nothing about whether the answer is right, so it should weigh less than `correctness_reward`."""
    return [1.0 if _ends_with_box(completion_text(c)) else 0.0 for c in completions]


def _ends_with_box(text: str) -> bool:
    text = text.rstrip()
    opens = list(_BOX_OPEN_RE.finditer(text))
    if not opens:
        return False
    last = opens[-1]
    close = matching_brace(text, last.end() - 1)
    if close is None or not text[last.end() : close].strip():
        return False
    return bool(_AFTER_BOX_RE.match(text[close + 1 :]))


def program_output_reward(
    prompts, completions, answer, mode=None, competition=None, timeout: float = 5.0, **kwargs
) -> list[float | None]:
    """For tool-integrated completions: run the last ```python block in the sandbox
    (`utils.sandbox.run_python`) and give 1.0 when the integer it prints equals `answer` (fitted to the
    competition), 0.0 when it prints something else, fails or there is no program. None for completions
    whose `mode` is not "tools" (the reward does not apply to them).

    The output block a model writes after its code is its own guess; during sampling nothing runs the
    code, so this reward checks the program itself: writing the right computation is what it pays for."""
    from utils.sandbox import run_python

    texts = [completion_text(c) for c in completions]
    truths = _column(answer, len(texts), None)
    modes = _column(mode, len(texts), "tools")
    comps = _column(competition, len(texts), DEFAULT_COMPETITION)
    rewards: list[float | None] = []
    runs: dict[str, int | None] = {}  # a group's samples often write the same program: run it once
    for text, truth, m, comp in zip(texts, truths, modes, comps, strict=True):
        if m != "tools":
            rewards.append(None)
            continue
        code = last_code_block(text)
        if code is None:
            rewards.append(0.0)
            continue
        if code not in runs:
            result = run_python(code, timeout=timeout)
            runs[code] = None if result.error else extract_answer(result.stdout)
        rewards.append(1.0 if _same_answer(runs[code], truth, comp) else 0.0)
    return rewards
