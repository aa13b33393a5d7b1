"""The embedded data set: generated integer-answer word problems with worked solutions.

Two kinds, so that the series can show two different lessons on a model that fits a laptop CPU:
- `mental`: two-step problems with small numbers, solvable in the head once the model has learned
  the arithmetic facts (pretraining) and the procedure and answer format (fine-tuning, notebook 02);
- `compute`: products of two 2-digit numbers, which a tiny model that knows single-digit facts cannot do in its head,
  but can solve by writing the expression as code (tool-integrated reasoning, notebook 05).

Each problem carries a reasoning solution and a tool-integrated solution (ToRA's format: a
```python block, its ```output block, then `\\boxed{}`), so notebook 01 can format both kinds of
training example. Everything is a pure function of the seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from utils.data import Problem

NAMES = [
    "Ava",
    "Ben",
    "Cara",
    "Dev",
    "Eli",
    "Fay",
    "Gus",
    "Hana",
    "Ivan",
    "Jo",
    "Kai",
    "Lena",
    "Max",
    "Nia",
    "Omar",
    "Pia",
]
ITEMS = ["apples", "marbles", "stamps", "cards", "shells", "coins", "books", "pens", "stickers", "beads"]


def _mental_add_sub(r: random.Random, name: str, item: str):
    a, b = r.randint(2, 9), r.randint(2, 9)
    c = r.randint(1, min(9, a + b))
    text = f"{name} has {a} {item}. {name} buys {b} more and then gives {c} away. How many {item} does {name} have now?"
    return text, [(a, "+", b), ("_", "-", c)]


def _mental_add_add(r: random.Random, name: str, item: str):
    a, b, c = r.randint(1, 9), r.randint(1, 9), r.randint(1, 9)
    text = f"{name} collects {a} {item} on Monday, {b} on Tuesday and {c} on Wednesday. How many {item} does {name} collect in total?"
    return text, [(a, "+", b), ("_", "+", c)]


def _mental_sub_add(r: random.Random, name: str, item: str):
    a = r.randint(10, 18)
    b = r.randint(a - 9, 9)
    c = r.randint(1, 9)
    text = f"{name} had {a} {item} and lost {b} of them. Then {name} won {c} {item}. How many {item} does {name} have?"
    return text, [(a, "-", b), ("_", "+", c)]


def _mental_product(r: random.Random, name: str, item: str):
    a, b = r.randint(2, 9), r.randint(2, 9)
    text = f"{name} buys {a} bags with {b} {item} in each bag. How many {item} does {name} buy?"
    return text, [(a, "*", b)]


def _compute_product(r: random.Random, name: str, item: str, first: tuple = (11, 99)):
    a, b = r.randint(*first), r.randint(11, 99)
    text = f"A shop packs {a} {item} into each crate. {name} orders {b} crates. How many {item} does {name} order?"
    return text, [(a, "*", b)]


def _compute_product_sub(r: random.Random, name: str, item: str, first: tuple = (11, 99)):
    a, b = r.randint(*first), r.randint(11, 99)
    c = r.randint(11, 99)
    text = f"{name} saves {a} {item} every week for {b} weeks and then gives {c} {item} away. How many {item} does {name} have left?"
    return text, [(a, "*", b), ("_", "-", c)]


TEMPLATES: dict[str, list[Callable]] = {
    "mental": [_mental_add_sub, _mental_add_add, _mental_sub_add, _mental_product],
    "compute": [_compute_product, _compute_product_sub],
}
_OPS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}


def _steps(chain):
    """Evaluate a chain of (left, op, right) steps, '_' standing for the previous result."""
    steps, value = [], None
    for left, op, right in chain:
        left = value if left == "_" else left
        value = _OPS[op](left, right)
        steps.append((left, op, right, value))
    return steps, value


def _numbers(steps) -> str:
    """The problem's numbers in order: the first step of every solution, so that the model reads before it
    computes (a chain of thought a small model can follow)."""
    numbers = [steps[0][0]] + [b for _, _, b, _ in steps]
    return "Numbers: " + ", ".join(map(str, numbers)) + "."


def reasoning_solution(steps, answer: int) -> str:
    lines = [f"{a} {op} {b} = {v}." for a, op, b, v in steps]
    return _numbers(steps) + " " + " ".join(lines) + f" The answer is \\boxed{{{answer}}}."


def tool_solution(steps, answer: int) -> str:
    a, op, b, _ = steps[0]
    expr = f"{a} {op} {b}"
    for _, op, b, _ in steps[1:]:
        expr = f"({expr}) {op} {b}"
    return f"{_numbers(steps)}\n```python\nprint({expr})\n```\n```output\n{answer}\n```\nThe answer is \\boxed{{{answer}}}."


def make_problem(
    r: random.Random, kind: str, index: int, split: str, first_factor: tuple = (11, 99)
) -> Problem:
    template = r.choice(TEMPLATES[kind])
    name, item = r.choice(NAMES), r.choice(ITEMS)
    text, chain = (
        template(r, name, item, first=first_factor) if kind == "compute" else template(r, name, item)
    )
    steps, answer = _steps(chain)
    return Problem(
        id=f"embedded-{split}-{index:05d}",
        source="embedded",
        problem=text,
        solution=reasoning_solution(steps, answer),
        answer=answer,
        metadata={
            "kind": kind,
            "template": template.__name__.lstrip("_"),
            "split": split,
            "tool_solution": tool_solution(steps, answer),
        },
    )


def generate_problems(
    n: int, seed: int = 0, compute_share: float = 0.25, split: str = "all", first_factor: tuple = (11, 99)
) -> list[Problem]:
    """`n` problems, `compute_share` of them of the `compute` kind; a pure function of the seed.
    `first_factor` bounds a compute problem's first factor (the pretraining text reads 3-digit ones)."""
    r = random.Random(f"{seed}-{split}")
    kinds = ["compute" if i < round(n * compute_share) else "mental" for i in range(n)]
    r.shuffle(kinds)
    return [make_problem(r, kind, i, split, first_factor) for i, kind in enumerate(kinds)]


def arithmetic_facts(seed: int = 0, copies: int = 12, n_big_products: int = 500) -> list[str]:
    """The pretraining corpus' arithmetic: every fact a mental problem needs (single-digit sums and
    products, differences up to 18 - 9, and a digit added to 10..18), `copies` times over, plus big
    products the tiny model sees but cannot learn: a real but limited skill."""
    digits = range(0, 10)
    facts = [f"{a} + {b} = {a + b}" for a in digits for b in digits]
    facts += [f"{a} * {b} = {a * b}" for a in digits for b in digits]
    facts += [f"{a} - {b} = {a - b}" for a in range(0, 19) for b in digits if b <= a]
    facts += [f"{a} + {b} = {a + b}" for a in range(10, 19) for b in range(1, 10)]
    r = random.Random(seed)
    corpus = facts * copies
    for _ in range(n_big_products):
        a, b = r.randint(101, 999), r.randint(11, 99)
        corpus.append(f"{a} * {b} = {a * b}")
    r.shuffle(corpus)
    return corpus


def format_snippets(seed: int = 0, n: int = 400) -> list[str]:
    """Text in the formats fine-tuning will use, but never a solved word problem: boxed answers, Python
    snippets with their output, the two instructions, and short dialogues. A real base model has seen
    LaTeX, code and chat before its fine-tuning; so has ours, so that fine-tuning teaches the procedure
    rather than the spelling of `\\boxed`."""
    from utils.prompts import INSTRUCTIONS

    r = random.Random(f"{seed}-snippets")
    docs = []
    for _ in range(n):
        a, b = r.randint(0, 99), r.randint(0, 99)
        op = r.choice("+-*")
        value = _OPS[op](a, b)
        docs.append(f"The answer is \\boxed{{{r.randint(0, 999)}}}.")
        docs.append(f"```python\nprint({a} {op} {b})\n```\n```output\n{value}\n```")
    greetings = ["Hello.", "What is your name?", "Can you help me?", "Thank you.", "Good morning."]
    replies = [
        "Hello! How can I help?",
        "I am a small model.",
        "Yes, I can help.",
        "You are welcome.",
        "Good morning!",
    ]
    docs += [f"User: {q}\n\nAssistant: {a}" for q, a in zip(greetings, replies, strict=False)] * 20
    docs += list(INSTRUCTIONS.values()) * 20
    return docs


def expression_chains(seed: int = 0, n: int = 3000) -> list[str]:
    """Bare arithmetic worked step by step ("Compute 3 + 4 - 2. 3 + 4 = 7. 7 - 2 = 5."): math text a
    base model has read, which teaches it to carry numbers into a chain, but not which operations a
    word problem's words ask for, nor how to answer in the chat format."""
    r = random.Random(f"{seed}-chains")
    templates = [t for t in TEMPLATES["mental"]]
    docs = []
    for _ in range(n):
        _, chain = r.choice(templates)(r, "x", "y")
        steps, _ = _steps(chain)
        a, op, b, _ = steps[0]
        expr = f"{a} {op} {b}" + "".join(f" {o} {c}" for _, o, c, _ in steps[1:])
        docs.append(f"Compute {expr}. " + " ".join(f"{x} {o} {y} = {v}." for x, o, y, v in steps))
    return docs


def problem_statements(seed: int = 0, n: int = 1200) -> list[str]:
    """Word problems with their numbers listed, but never solved: reading comprehension a base model
    has, which fine-tuning turns into solving."""
    docs = []
    for p in generate_problems(n, seed=seed, split="pretrain", first_factor=(101, 999)):
        numbers = [int(t) for t in re.findall(r"\d+", p.problem)]
        docs.append(f"{p.problem} Numbers: {', '.join(map(str, numbers))}.")
    return docs


def copy_sequences(seed: int = 0, n: int = 3000) -> list[str]:
    """Number sequences written twice, with words in between: the copying that lets a model carry a
    problem's numbers into its working and a program's output into its answer (what induction heads do
    in large models). Numbers of one to four random digits, so that copying is the only way to predict them."""
    r = random.Random(f"{seed}-copy")
    filler = ["then", "and", "so", "we", "have", "the", "list", "again", "is"]
    docs = []
    for _ in range(n):
        seq = ", ".join(str(r.randint(0, 10 ** r.randint(1, 4) - 1)) for _ in range(r.randint(2, 5)))
        gap = " ".join(r.choice(filler) for _ in range(r.randint(1, 10)))
        docs.append(f"List: {seq}. {gap.capitalize()}. Numbers: {seq}.")
    return docs


def program_snippets(seed: int = 0, n: int = 2000) -> list[str]:
    """Bare expressions worked with Python ("Compute 37 * 23 - 15." then the program, its output and the
    boxed result): the code a base model has read, which teaches it to carry numbers into a program and a
    program's output into an answer, but not which expression a word problem's words ask for."""
    r = random.Random(f"{seed}-programs")
    docs = []
    for _ in range(n):
        a, b = r.randint(2, 99), r.randint(2, 99)
        op = r.choice("+-*")
        expr, value = f"{a} {op} {b}", _OPS[op](a, b)
        if r.random() < 0.5:
            c = r.randint(2, 99)
            op = r.choice("+-")
            expr, value = f"({expr}) {op} {c}", _OPS[op](value, c)
        flat = expr.replace("(", "").replace(")", "")
        docs.append(
            f"Compute {flat}.\n```python\nprint({expr})\n```\n```output\n{value}\n```\n"
            f"The answer is \\boxed{{{value}}}."
        )
    return docs
