"""Prompts and chat formatting, in DeepSeek-Math's formats (see ../shared/docs/aimo.md).

Chat: `<bos>User: {question}\\n\\nAssistant: {answer}<eos>`, no system prompt. Two instructions follow the
question: step-by-step reasoning, or tool-integrated reasoning (prose and Python programs).
Everything goes through the tokenizer's chat template, so a model with its own template keeps it.
"""

from __future__ import annotations

import re

from utils.answers import matching_brace
from utils.data import Problem

MODES = ("reasoning", "tools")
INSTRUCTIONS = {
    "reasoning": "Please reason step by step, and put your final answer within \\boxed{}.",
    "tools": (
        "Please integrate natural language reasoning with programs to solve the problem above, "
        "and put your final answer within \\boxed{}."
    ),
}

# DeepSeek-Math's format as a Jinja template; the {% generation %} markers let TRL's
# assistant_only_loss find the answer tokens in conversational data.
DEEPSEEK_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}User: {{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}Assistant: {% generation %}{{ message['content'] }}{{ eos_token }}"
    "{% endgeneration %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def user_message(problem: str, mode: str = "reasoning") -> str:
    if mode not in INSTRUCTIONS:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return f"{problem.strip()}\n{INSTRUCTIONS[mode]}"


def ensure_chat_template(tokenizer) -> None:
    """Base checkpoints (DeepSeek-Math-7B-base) ship without a chat template: give them DeepSeek's."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEEPSEEK_CHAT_TEMPLATE


def build_prompt(tokenizer, problem: str, mode: str = "reasoning") -> str:
    """The text the model continues: the chat template up to and including `Assistant:`.

    The BOS text is dropped when the tokenizer adds BOS itself, so that it is not doubled.
    """
    return chat_prompt(tokenizer, user_message(problem, mode))


def chat_prompt(tokenizer, user_content: str) -> str:
    ensure_chat_template(tokenizer)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": user_content}], tokenize=False, add_generation_prompt=True
    )
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and _adds_bos(tokenizer):
        text = text[len(bos) :]
    return text


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("1", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def solution_for(problem: Problem, mode: str) -> str | None:
    """The worked solution to train on, ending in `\\boxed{answer}`; None when the problem has none.

    Tool-integrated when there is one and the mode asks for it. GSM8K's solutions lose their calculator
    annotations (`<<48/2=24>>`) and their `#### 72` line, which the prompt's `\\boxed{}` replaces. A row with
    only an answer (AIME 1983-2024) is never a target: it would teach answering without reasoning."""
    if mode == "tools":
        messages = problem.metadata.get("messages") or []
        replies = [m["content"] for m in messages if m.get("role") == "assistant"]
        tool = problem.metadata.get("tool_solution") or (replies[-1] if replies else None)
        if tool:
            return ending_in_box(tool, problem.answer)
    if not problem.solution:
        return None
    if problem.source == "gsm8k":
        return gsm8k_solution(problem.solution, problem.answer)
    return ending_in_box(problem.solution, problem.answer)


_CALCULATOR = re.compile(r"<<[^<>]*>>")
_CLOSING = re.compile(r"[\s$.,;:!)\]\\]*")  # what may follow the final box: closing math and punctuation


def gsm8k_solution(solution: str, answer: int | None) -> str:
    """GSM8K's worked solution as reasoning that ends in the boxed answer."""
    body = _CALCULATOR.sub("", solution.rsplit("####", 1)[0]).strip()
    return f"{body}\nThe answer is $\\boxed{{{answer}}}$."


def ending_in_box(solution: str, answer: int | None) -> str:
    """`solution` unchanged when its last `\\boxed{}` closes it; else with a closing line that boxes the answer
    (MATH solutions often go on after their box: a remark, a diagram)."""
    after = text_after_last_box(solution)
    if after is not None and _CLOSING.fullmatch(after):
        return solution
    return f"{solution.rstrip()}\nThe answer is $\\boxed{{{answer}}}$."


def text_after_last_box(text: str) -> str | None:
    """What follows the last `\\boxed{...}` (braces matched), or None when there is no closed box."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    end = matching_brace(text, start + len("\\boxed"))
    return None if end is None else text[end + 1 :]


def render_example(tokenizer, example: dict) -> dict:
    """A chat example (`messages`: user, assistant) as a prompt/completion pair for TRL, which then puts
    the loss on the completion only. The space after `Assistant:` opens the completion, so that the
    prompt never ends in a space (a tokenization pitfall: see stack.md)."""
    user, assistant = example["messages"][0]["content"], example["messages"][1]["content"]
    return {
        "prompt": chat_prompt(tokenizer, user),
        "completion": " " + assistant.strip() + (tokenizer.eos_token or ""),
    }
