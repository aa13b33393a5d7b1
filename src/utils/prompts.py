"""Prompts and chat formatting, in DeepSeek-Math's formats (see ../shared/docs/aimo.md).

Chat: `<bos>User: {question}\\n\\nAssistant: {answer}<eos>`, no system prompt. Two instructions follow the
question: step-by-step reasoning, or tool-integrated reasoning (prose and Python programs).
Everything goes through the tokenizer's chat template, so a model with its own template keeps it.
"""

from __future__ import annotations

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


def solution_for(problem: Problem, mode: str) -> str:
    """The worked solution to train on: tool-integrated when there is one and the mode asks for it."""
    if mode == "tools":
        messages = problem.metadata.get("messages") or []
        replies = [m["content"] for m in messages if m.get("role") == "assistant"]
        tool = problem.metadata.get("tool_solution") or (replies[-1] if replies else None)
        if tool:
            return tool
    return problem.solution or f"The answer is \\boxed{{{problem.answer}}}."


def render_example(tokenizer, example: dict) -> dict:
    """A chat example (`messages`: user, assistant) as a prompt/completion pair for TRL, which then puts
    the loss on the completion only. The space after `Assistant:` opens the completion, so that the
    prompt never ends in a space (a tokenization pitfall: see stack.md)."""
    user, assistant = example["messages"][0]["content"], example["messages"][1]["content"]
    return {
        "prompt": chat_prompt(tokenizer, user),
        "completion": " " + assistant.strip() + (tokenizer.eos_token or ""),
    }
