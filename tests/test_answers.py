"""utils.answers: reading integers from model outputs and data sets, competition ranges, voting."""

from __future__ import annotations

import itertools
import json
import logging
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import utils.answers as answers
from utils.answers import (
    COMPETITION_RANGES,
    VoteResult,
    extract_answer,
    last_boxed,
    majority_vote,
    matching_brace,
    normalize_for_competition,
    parse_integer_answer,
    vote_is_decided,
)

# ---------------------------------------------------------------- realistic model outputs

DEEPSEEK_COT = (
    "To find the remainder when $2^{100}$ is divided by $7$, note that $2^3 = 8 \\equiv 1 \\pmod{7}$.\n"
    "So $2^{100} = (2^3)^{33} \\cdot 2 \\equiv 2 \\pmod{7}$.\n\nThe remainder is $\\boxed{2}$."
)
DEEPSEEK_INTERMEDIATE_BOXES = (
    "First, $a = \\boxed{3}$ from the first equation.\nThen $b = 7$, so $a + b = \\boxed{10}$.\n"
)
DEEPSEEK_TRUNCATED_BOX = (
    "Let's compute: $15 \\times 4 = 60$ and $60 + 12 = 72$.\n\nSo the answer is $\\boxed{"
)
DEEPSEEK_TRUNCATED_PARTIAL = "The answer is 42.\nLet me double check: $6 \\times 7 = 42$. So $\\boxed{4"
TORA_FULL = (
    "Let's write a program.\n```python\ndef solve():\n    return sum(range(1, 13))\n\nprint(solve())\n```\n"
    "```output\n78\n```\nThe sum is $\\boxed{78}$."
)
TORA_OUTPUT_ONLY = "```python\nprint(10**6)\n```\n```output\n1000000\n```\n"
TORA_FLOAT_OUTPUT = "```python\nprint(42/2)\n```\n```output\n21.0000000000000\n```"
TORA_STOPPED_AT_OUTPUT = "```python\nx = 10**6 + 7\nprint(x % 1000)\n```\n```output"
TORA_HALF_WRITTEN_CODE = "Let me check with code.\n```python\nfor i in range(10):\n    total += i * 37"
TORA_PRINTS_A_BOX = (  # the box in the code is no answer; the one in the output block is
    '```python\nresult = 3 * 5\nprint(f"\\\\boxed{{{result}}}")\n```\n```output\n\\boxed{15}\n```\n'
)
TORA_CODE_BOX_ONLY = '```python\nprint(f"\\\\boxed{{{7 * 6}}}")\n```\n```output'
GSM8K_SOLUTION = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)
MINERVA = "So $x = 1000$.\nFinal Answer: The final answer is $1{,}000$. I hope it is correct."
QWEN_FINAL = "Thus the angle is $336^\\circ$.\n\n**Final Answer**\n\\[\n\\boxed{336^\\circ}\n\\]"
BOLD_ANSWER = "Adding these up gives 42.\n\n**Answer:** 42"
FINAL_ANSWER_NEXT_LINE = "We are done.\n\n**Final Answer**\n\n17"
REPEATED_PHRASE = "The answer is 5. The answer is 5. The answer is"
PROMPT_ECHO = "Please put your final answer within \\boxed{}.\nThe answer is 7."
DISPLAY_MATH = "Therefore\n\\[\n n = 42\n\\]\n"
POLITE_TAIL = "The total is 128 marbles.\nI hope this helps!"

CASES = [
    # the last box, LaTeX inside it
    (DEEPSEEK_COT, 2),
    (DEEPSEEK_INTERMEDIATE_BOXES, 10),
    ("So \\boxed{1,000}.", 1000),
    ("So \\boxed{1\\,000}.", 1000),
    ("So $\\boxed{1{,}000}$.", 1000),
    ("$\\boxed{12,345,678}$", 12345678),
    ("$\\boxed{\\$1,\\!000}$", 1000),
    ("$\\boxed{\\dfrac{12}{4}}$", 3),
    ("$\\boxed{\\tfrac{8}{2}}$", 4),
    ("$\\boxed{-\\frac{10}{2}}$", -5),
    ("$\\boxed{2^{10}}$", 1024),
    ("$\\boxed{2^5 \\cdot 3^2}$", 288),
    ("$\\boxed{3 \\cdot 10^3}$", 3000),
    ("$\\boxed{\\binom{5}{2}}$", 10),
    ("$\\boxed{\\sqrt{16}}$", 4),
    ("$\\boxed{42^\\circ}$", 42),
    ("$\\boxed{90^{\\circ}}$", 90),
    ("$\\boxed{42 \\text{ cm}}$", 42),
    ("$\\boxed{15 \\mbox{ cm}^2}$", 15),
    ("$\\boxed{\\text{18 dollars}}$", 18),
    ("$\\boxed{\\$18.00}$", 18),
    ("$\\boxed{20\\%}$", 20),
    ("$\\boxed{x = 5}$", 5),
    ("$\\boxed{n=12}$", 12),
    ("$m+n = \\boxed{ 113 }$", 113),
    ("$\\boxed{m+n=113}$", 113),
    ("$\\boxed{5.0}$", 5),
    ("$\\boxed{-7}$", -7),
    ("$\\boxed{\u22127}$", -7),
    ("$\\boxed{042}$", 42),
    ("$\\boxed{0}$", 0),
    ("$\\boxed{\\text{42}}$", 42),
    ("$\\boxed{\\textbf{42}}$", 42),
    ("$\\boxed{\\boxed{8}}$", 8),
    ("$\\boxed{1.5 \\times 10^3}$", 1500),
    ("$\\boxed{21.0000000000000}$", 21),
    ("\\[ \\boxed{\\textbf{(D)}\\ 120} \\]", 120),  # AMC style: the value after the choice's letter
    ("$\\boxed{\\text{(C) } 42}$", 42),
    ("$\\boxed{\\text{The answer is } 42}$", 42),
    (TORA_PRINTS_A_BOX, 15),
    ("The answer is 42</s>", 42),
    ("So the total is 42<\uff5cend\u2581of\u2581sentence\uff5c>", 42),
    ("The answer is 12<|im_end|>", 12),
    ("\\boxed 5", 5),
    ("$\\boxed -12$", -12),
    ("\\fbox{17}", 17),
    ("\\boxed {33}", 33),
    ("The answer is 99. Then \\boxed{3} and finally \\boxed{5}", 5),
    (QWEN_FINAL, 336),
    (TORA_FULL, 78),
    # a box that is not an integer decides: no falling back to other numbers
    ("$\\boxed{\\frac{1}{2}}$", None),
    ("The answer is 4. $\\boxed{3\\sqrt{2}}$", None),
    ("$\\boxed{2.5}$", None),
    ("$\\boxed{1.5 \\times 3}$", None),
    ("$\\boxed{4\\frac{1}{2}}$", None),  # a mixed number, not 4 * 1/2
    ("$\\boxed{\\pi}$", None),
    ("$\\boxed{\\infty}$", None),
    ("$\\boxed{(1, 2)}$", None),
    ("$\\boxed{3, 5}$", None),
    ("$\\boxed{5 \\text{ or } 6}$", None),
    ("$\\boxed{x=2 \\text{ or } x=3}$", None),
    ("$\\boxed{x^2 + 7x + 10}$", None),
    ("$\\boxed{2x = 10}$", None),
    ("$\\boxed{\\text{(B)}}$", None),
    ("$\\boxed{A}$", None),
    ("$\\boxed{\\pm 3}$", None),
    ("$\\boxed{6.24499799839840}$", None),
    # no box: answer phrases
    ("The answer is 42.", 42),
    ("The answer is: 18 apples", 18),
    ("The answer is $18.", 18),
    ("The answer is \\$18.", 18),
    ("The answer is **42**.", 42),
    ("The answer is $-5$.", -5),
    ("The answer is \u22125", -5),
    ("The answer is 10%.", 10),
    ("The answer is 5 cm.", 5),
    ("The answer is 72, since 8 * 9 = 72.", 72),
    ("The answer is $x=5$.", 5),
    ("The answer is 1 000", 1000),
    ("The final answer is 2.0", 2),
    ("The answer to the problem is 17.", 17),
    ("ANSWER: 17", 17),
    ("Answer = 23", 23),
    ("#### 1,000", 1000),
    ("#### $18", 18),
    ("the answer is \\frac{1}{2}.", None),
    ("the answer is $\\frac{1}{2}$.", None),
    ("The answer is 3/4", None),
    ("The answer is 2.5 hours.", None),
    (GSM8K_SOLUTION, 72),
    (MINERVA, 1000),
    (BOLD_ANSWER, 42),
    (FINAL_ANSWER_NEXT_LINE, 17),
    (REPEATED_PHRASE, 5),
    (PROMPT_ECHO, 7),
    # truncated outputs: the unclosed box is dropped, other cues are used
    (DEEPSEEK_TRUNCATED_BOX, 72),
    (DEEPSEEK_TRUNCATED_PARTIAL, 42),
    ("We get $x = 42$.\n\nTherefore, the final answer is $\\boxed{", 42),
    ("Earlier we found \\boxed{12}. Let me verify \\boxed{1", 12),
    # no box, no phrase: the final line
    ("42", 42),
    ("-7", -7),
    ("So x = 5", 5),
    ("We have $2^{10} = 1024$ ways.", 1024),
    ("So 42 is the value of $n$.", 42),
    ("So the ratio is 3/4", None),  # not the 4
    ("So the ratio is 8/4", 2),
    ("We get 2^{10}", 1024),  # not the 10
    ("Hence x = -5", -5),
    ("It is \u22127", -7),
    ("It is 2 - 3", 3),  # a dash after a digit is no sign
    ("Thus the area is $\\frac{1}{2}$.", None),
    ("The total time is 2.5 hours", None),
    (DISPLAY_MATH, 42),
    (POLITE_TAIL, 128),
    (TORA_OUTPUT_ONLY, 1000000),
    (TORA_FLOAT_OUTPUT, 21),
    (TORA_STOPPED_AT_OUTPUT, None),
    (TORA_CODE_BOX_ONLY, None),
    (TORA_HALF_WRITTEN_CODE, None),
    ("```python\n# the answer is 5\nprint(2 + 3)\n```\n```output\n5\n```\nSo we get 5 cakes.", 5),
    ("Inline ```x = 3``` code.\nThe answer is 9.", 9),  # a one-line fence opens no block
    # nothing to read
    ("", None),
    ("   \n\t", None),
    ("\\boxed{}", None),
    ("Let me think about this problem carefully.", None),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[f"{i:03d}" for i in range(len(CASES))])
def test_extract_answer_realistic_outputs(text, expected):
    got = extract_answer(text)
    assert got == expected, f"{text!r}: got {got!r}, expected {expected!r}"
    assert got is None or type(got) is int


@pytest.mark.parametrize("value", [None, 42, 4.2, b"\\boxed{5}", ["\\boxed{5}"]])
def test_extract_answer_non_strings_give_none(value):
    assert extract_answer(value) is None


def _junk(rng: random.Random, n: int) -> str:
    pieces = [
        "\\boxed{",
        "\\boxed",
        "}",
        "{",
        "$",
        "$$",
        "\\frac",
        "\\sqrt",
        "^",
        "_",
        "(",
        ")",
        "[",
        "]",
        "\\",
        "```",
        "```output\n",
        "```python\n",
        "\n",
        " ",
        "The answer is",
        "Answer:",
        "####",
        "**",
        ",",
        ".",
        "-",
        "1",
        "42",
        "1,000",
        "x",
        "=",
        "!",
        "\\text{",
        "\\left(",
        "\u2212",
        "\u2009",
        "%",
        "°",
        "\\dfrac{12}{4}",
        "2^{10}",
        "9999999999",
        "\\infty",
        "\x00",
        "é",
    ]
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, n)))


def test_extract_answer_never_raises_on_random_junk():
    rng = random.Random(1234)
    start = time.monotonic()
    for _ in range(400):
        got = extract_answer(_junk(rng, 60))
        assert got is None or type(got) is int
    assert time.monotonic() - start < 10


@pytest.mark.parametrize(
    "text",
    [
        "\\boxed{" * 20000,
        "The answer is " * 10000,
        "The answer is\n" + "\n" * 100000,
        "$" * 100000,
        "\\boxed{" + "(" * 150 + "1" + ")" * 150 + "}",  # math_verify's parser is slow on deep nesting
        "\\boxed{(10^{9})!}",  # would take minutes to evaluate
        "\\boxed{2^{2^{2^{100}}}}",
        "\\boxed{\\binom{10^{9}}{10^{8}}}",
        "\\boxed{" + "9" * 100000 + "}",  # beyond Python's int-from-string limit
    ],
    ids=[
        "unclosed-boxes",
        "phrases",
        "newlines",
        "dollars",
        "nested-parens",
        "factorial",
        "tower",
        "binom",
        "digits",
    ],
)
def test_extract_answer_is_fast_on_pathological_input(text):
    start = time.monotonic()
    got = extract_answer(text)
    assert time.monotonic() - start < 2.0
    assert got is None


def test_extract_answer_works_off_the_main_thread():
    texts = ["$\\boxed{\\dfrac{12}{4}}$", "\\boxed{2^{10}}", "\\boxed{\\sqrt{16}}", "\\boxed{\\frac{1}{2}}"]
    answers._latex_to_int.cache_clear()  # make every thread really call math_verify
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(extract_answer, texts * 5))
    assert got == [3, 1024, 4, None] * 5


@pytest.mark.skipif(not hasattr(signal, "alarm"), reason="signal.alarm is POSIX-only")
def test_extract_answer_leaves_the_callers_alarm_alone():
    # math_verify's own timeout calls signal.alarm(0) on exit, cancelling a caller's alarm: we must not use it.
    assert threading.current_thread() is threading.main_thread()
    answers._latex_to_int.cache_clear()
    old = signal.signal(signal.SIGALRM, lambda *_: None)
    try:
        signal.alarm(100)
        assert extract_answer("\\boxed{\\dfrac{100}{4}}") == 25
        remaining = signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert 90 <= remaining <= 100


def test_math_verify_timeout_warning_is_silenced(monkeypatch, caplog):
    import math_verify.parser

    monkeypatch.setattr(math_verify.parser, "TIMEOUT_WARNING_SHOWN", False)
    answers._latex_to_int.cache_clear()
    with caplog.at_level(logging.WARNING):
        assert parse_integer_answer("\\frac{36}{4}") == 9
    assert math_verify.parser.TIMEOUT_WARNING_SHOWN  # the warning was emitted ...
    assert not [r for r in caplog.records if "Timeout is disabled" in r.getMessage()]  # ... and dropped


# ---------------------------------------------------------------- answer formats models write


def _boxed(latex: str) -> str:
    return f"Putting it together, the answer is $\\boxed{{{latex}}}$."


FORMAT_CASES = [
    # functions of several arguments: their commas are no list
    (_boxed("\\gcd(18, 3)"), 3),
    (_boxed("\\gcd(830,450)"), 10),  # "830,450" is two arguments here, not 830450
    (_boxed("\\operatorname{gcd}(12, 18)"), 6),
    (_boxed("\\text{lcm}(4, 6)"), 12),
    (_boxed("\\mathrm{lcm}(4,6)"), 12),
    (_boxed("\\operatorname{lcm}(21, 6)"), 42),
    (_boxed("\\lcm(8, 12)"), 24),
    (_boxed("\\max(3, 17, 9)"), 17),
    (_boxed("\\min\\left(5, 2, 8\\right)"), 2),
    (_boxed("\\max\\{3, 7\\}"), 7),
    (_boxed("\\gcd(12, 18) = 6"), 6),
    ("Hence $\\gcd(84, 36) = 12$", 12),
    (_boxed("\\max(\\frac{1}{2}, 3)"), 3),
    (_boxed("\\min(\\frac{1}{2}, 3)"), None),
    (_boxed("\\gcd(0.42, 2)"), None),
    # thousands separators
    (_boxed("10,\\! 000"), 10000),
    (_boxed("1,\\!234,\\!567"), 1234567),
    (_boxed("12{,}345"), 12345),
    (_boxed("1{,}000{,}000"), 1000000),
    ("The final answer is $1{,}024$.", 1024),
    ("Final Answer: The final answer is $14 {, }916$. I hope it is correct.", 14916),
    ("The answer is $10,\\!000$.", 10000),
    ("The answer is 1 000 000", 1000000),
    ("So the total number of ways is 1 000", 1000),
    ("It is 10\u202f000", 10000),
    ("We get 1,000,000 ways.", 1000000),
    # a comma that is no thousands separator: a decimal comma or a list
    (_boxed("3,5"), None),
    (_boxed("3{,}5"), None),
    (_boxed("0,111"), None),
    (_boxed("1,5000"), None),
    (_boxed("12,34"), None),
    ("The answer is 3,5", None),
    ("The answer is 0,75.", None),
    ("So the probability is 0,25", None),
    ("So the result is 2,5 kg", None),
    # approximately, congruent
    (_boxed("\\approx 42"), 42),
    (_boxed("x \\approx 17"), 17),
    ("Therefore the answer is $\\approx 42$", 42),
    ("The probability is $\\approx 0.42$", None),
    (_boxed("42 \\pmod{1000}"), 42),
    (_boxed("2^{100} \\equiv 2 \\pmod{7}"), 2),
    (_boxed("10 \\bmod 3"), 1),
    # a closing statement of the answer after a box overrides it; a check does not
    ("So $x = \\boxed{12}$.\n\nWait, I forgot the last case. The final answer is 13.", 13),
    ("We get \\boxed{12}.\n\nRechecking the count...\n\n**Final Answer:** 14", 14),
    ("Thus \\boxed{12}.\n\nAnswer: 15", 15),
    ("Thus \\boxed{12}.\n\nWe may check our answer: $3 \\cdot 4 = 12 \\equiv 1 \\pmod{11}$.", 12),
    ("Thus \\boxed{12}.\n\nThe answer is correct since $3 \\cdot 4 = 12$.", 12),
    ("So \\boxed{12}.\n\nThe final answer is $\\boxed{13}$", 13),
    ("So \\boxed{144}.\n\nThe final answer is 6!/(2!2!2!)*2!*(4!)^3 which gives the same.", 144),
    (_boxed("40\\text{ min}"), 40),  # a unit, not the function min
    (_boxed("\\min(4, 6) \\text{ min}"), 4),
    # not an integer, whatever digits it shows
    (_boxed("\\mathrm{e}"), None),
    (_boxed("2\\mathrm{e}"), None),
    (_boxed("3\\mathrm{i}"), None),
    (_boxed("3 + 4 i"), None),
    (_boxed("x != 5"), None),
    (_boxed("x \\neq 5"), None),
    (_boxed("x \\ne 5"), None),
    (_boxed("n \\geq 3"), None),
    (_boxed("1 < x < 3"), None),
    (_boxed("x \\in \\{1, 2\\}"), None),
    (_boxed("5!=120"), 120),  # a factorial, then "="
    (_boxed("0.\\overline{9}"), None),
    (_boxed("1.\\overline{3}"), None),
    (_boxed("0.9999999999"), None),
    (_boxed("\\sqrt{\\min(99.9999999999999, 100)}"), None),
    (_boxed("1e-3"), None),
    (_boxed("99\\cdots9"), None),
    (_boxed("\\sum_{k=1}^{n} k"), None),  # the "=" in a subscript is no equation
    ("\\(\\boxed{1}\\) and \\(\\boxed{-2}\\).", None),  # several boxed answers
    ("$\\boxed{2}, \\boxed{3}, \\boxed{5}$", None),
    ("$$\\boxed{k = 45} \\quad \\text{and} \\quad \\boxed{n = 2}$$", None),
    ("The solutions are \\boxed{7} and \\boxed{7}.", 7),  # the same answer twice
    ("The answer is 3 and 5", None),
    ("The answer is $2$ or $3$.", None),
    ("[1, 2, 3]", None),
    ("```output\n(1, 2)\n```", None),
    ("The values are 1, 2, and 3", None),
    ("So the roots are $1$, $2$ and $3$", None),
    ("The solutions are $4$ and $9$", None),
    ("So it lies between 5 and 10", None),
    ("The sum of 5 and 10 is 15", 15),
    ("So 12 apples and 3 pears", 3),
    ("so it is 10 which is 1,000.99m", None),
    # exact arithmetic
    (_boxed("4.2 \\times 10^1"), 42),
    (_boxed("{16 \\choose 2}"), 120),
    (_boxed("1e+3"), 1000),
    ("```output\n1e+20\n```", 10**20),
    ("The answer is 5!", 5),  # prose punctuation; "$5!$" is 120
    ("The answer is $5!$", 120),
]


@pytest.mark.parametrize(
    ("text", "expected"), FORMAT_CASES, ids=[f"{i:03d}" for i in range(len(FORMAT_CASES))]
)
def test_extract_answer_reads_answer_formats(text, expected):
    got = extract_answer(text)
    assert got == expected, f"{text!r}: got {got!r}, expected {expected!r}"
    assert got is None or type(got) is int


# Long model outputs in the styles the notebooks sample, each ending with its answer.
_REASONING = "Let me set up the count. " + "We try each case in turn and add what it gives. " * 40 + "\n"
MODEL_OUTPUTS = [
    (
        _REASONING + "Adding the cases gives $120 + 24 = 144$.\n\n**Final Answer**\n\\[\n\\boxed{144}\n\\]",
        144,
    ),
    (
        "<think>\n"
        + _REASONING
        + "So maybe \\boxed{41}? Wait, recount.\n</think>\n\nThe answer is $\\boxed{42}$.",
        42,
    ),
    (
        _REASONING
        + "```python\nprint(sum(range(1, 101)))\n```\n```output\n5050\n```\nSo the sum is $\\boxed{5050}$.",
        5050,
    ),
    (_REASONING + "```python\nprint(2**10)\n```\n```output\n1024\n```", 1024),
    (_REASONING + "Final Answer: The final answer is $12{,}345$. I hope it is correct.", 12345),
    (_REASONING + "The remainder when divided by 1000 is $\\boxed{042}$.", 42),
    (_REASONING + "Therefore $\\gcd(a, b) = \\boxed{\\gcd(84, 126)}$.", 42),
    (_REASONING + "#### 1,234", 1234),
    (_REASONING + "So the answer is $\\boxed{\\frac{7}{2}}$.", None),
    (_REASONING + "The answer is \\boxed{3,5}.", None),
    (_REASONING + "So the answer is $\\boxed{2\\sqrt{3}}$.", None),
    (_REASONING + "So $x = \\boxed{3}$ and $y = \\boxed{4}$.", None),
    (
        _REASONING
        + "The answer is 42.\nLet me double check: $6 \\times 7 = 42$. So the answer is $\\boxed{4",
        42,
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), MODEL_OUTPUTS, ids=[f"{i:02d}" for i in range(len(MODEL_OUTPUTS))]
)
def test_extract_answer_reads_the_end_of_long_outputs(text, expected):
    assert extract_answer(text) == expected


# ---------------------------------------------------------------- bounded time on any input

_ADVERSARIAL = {
    "nested-braces": "\\boxed{" + "{" * 8000 + "1" + "}" * 8000 + "}",
    "nested-braces-unclosed": "The final answer is $" + "{" * 50000,
    "nested-fracs": "\\boxed{" + "\\frac{1}{" * 3000 + "2" + "}" * 3000 + "}",
    "nested-sqrt": "\\boxed{" + "\\sqrt{" * 40 + "2" + "}" * 40 + "}",
    "nested-left": "\\boxed{" + "\\left(" * 300 + "1" + "\\right)" * 300 + "}",
    "power-of-power": "\\boxed{(10^{4000})^{10000} - 1}",
    "power-of-power-3": "\\boxed{((2^{100})^{100})^{100}}",
    "tower": "\\boxed{2^{3^{4^{5}}}}",
    "flat-tower": "\\boxed{" + "2^" * 60 + "2}",
    "braced-tower": "\\boxed{" + "9^{" * 6 + "9" + "}" * 6 + "}",
    "product-of-huge": "\\boxed{10^{9999} \\cdot 10^{9999} \\cdot 10^{9999}}",
    "factorials": "\\boxed{(((3!)!)!)!}",
    "factorial-of-power": "\\boxed{(10^{9})!}",
    "binomial": "\\boxed{\\binom{10^{5}}{5 \\cdot 10^{4}}}",
    "literal-binomial": "\\boxed{\\binom{1000000}{500000}}",
    "literal-choose": "\\boxed{{1000000 \\choose 500000}}",
    "sum": "\\boxed{\\sum_{k=1}^{10^{12}} k^2}",
    "product": "\\boxed{\\prod_{i=1}^{10^{9}} i}",
    "sin-of-huge": "\\boxed{\\sin(10^{9999})}",
    "gcd-of-huge": "\\boxed{\\gcd(" + ",".join(["10^{9999}"] * 20) + ")}",
    "max-of-towers": "\\boxed{\\max(9^{9^{9}}, 9^{9^{9}}, 9^{9^{9}})}",
    "scientific": "\\boxed{1.5e999999}",
    "long-number-box": "\\boxed{" + "9" * 100000 + "}",
    "long-number-prose": "The answer is " + "1" * 200000,
    "long-number-line": "1" * 1_000_000,
    "spaced-digits": ("1" + " " * 99999) * 3,
    "open-math": "$" + "\\(" * 100000,
    "open-display": "\\[" * 100000 + "1",
    "open-fences": "```output\n" * 50000,
    "bold": "**" * 200000 + "Answer: 5",
    "repeated-phrase": "The answer is 5.\n" * 20000,
    "repeated-boxes": "\\boxed{5} and " * 20000,
    "commas": "0," * 100000,
    "equals": "\\boxed{x" + "=1" * 5000 + "}",
    "approx": "\\boxed{" + "\\approx 1" * 3000 + "}",
    "group-seps": "\\boxed{" + "{,}" * 5000 + "}",
}


@pytest.fixture(scope="module")
def warm_reader():
    """Import math_verify and sympy once: the first read of a process pays ~1 s for the import."""
    assert parse_integer_answer("\\frac{12}{4}") == 3


@pytest.mark.parametrize("text", list(_ADVERSARIAL.values()), ids=list(_ADVERSARIAL))
def test_reading_is_bounded_on_adversarial_input(text, warm_reader):
    for read in (extract_answer, parse_integer_answer):
        answers._latex_to_int.cache_clear()
        start = time.monotonic()
        got = read(text)
        elapsed = time.monotonic() - start
        assert elapsed < 1.5, f"{read.__name__} took {elapsed:.2f} s"
        assert got is None or (type(got) is int and len(str(got)) <= 4001)


@pytest.mark.parametrize(
    ("latex", "expected"),
    [
        ("2^{2^{10}}", 2**1024),
        ("(9^{9})^{9}", 9**81),
        ("\\frac{10^{400}}{10^{399}}", 10),
        ("\\binom{100}{50}", 100891344545564193334812497256),
    ],
)
def test_large_but_bounded_values_are_computed(latex, expected):
    assert parse_integer_answer(latex) == expected


def test_answers_beyond_four_thousand_digits_are_refused():
    assert parse_integer_answer("2^{4950}") == 2**4950  # a MATH answer, 1491 digits
    assert parse_integer_answer("10^{3999}") == 10**3999
    assert parse_integer_answer("10^{4000}") is None  # str() refuses ints past 4300 digits
    assert extract_answer("\\boxed{" + "9" * 4001 + "}") is None


def test_a_slow_evaluation_is_stopped_in_a_worker_thread(monkeypatch):
    def stuck(latex):  # a parser that never returns and swallows ordinary exceptions
        while True:
            try:
                time.sleep(0.001)
            except Exception:  # noqa: BLE001, S110
                pass

    monkeypatch.setattr(answers, "_math_verify_parse", stuck)
    answers._latex_to_int.cache_clear()
    with ThreadPoolExecutor(max_workers=2) as pool:
        start = time.monotonic()
        got = list(pool.map(extract_answer, ["\\boxed{\\frac{12}{4}}", "\\boxed{\\sqrt{16}}"]))
        elapsed = time.monotonic() - start
    assert got == [None, None]
    assert elapsed < 2.5


def test_an_evaluation_that_swallows_the_stop_is_stopped_again(monkeypatch):
    def stubborn(latex):
        caught = 0
        while True:
            try:
                time.sleep(0.001)
            except BaseException:  # a library that swallows the first few, as cleanup code can
                caught += 1
                if caught > 3:
                    raise

    monkeypatch.setattr(answers, "_math_verify_parse", stubborn)
    answers._latex_to_int.cache_clear()
    start = time.monotonic()
    assert extract_answer("\\boxed{\\frac{12}{4}}") is None
    assert time.monotonic() - start < 2.5


def test_the_time_limit_never_fires_after_a_read_returns(monkeypatch):
    monkeypatch.setattr(answers, "_EVAL_SECONDS", 0.002)  # deadlines race every read's own end
    monkeypatch.setattr(answers, "_MIN_EVAL_SECONDS", 0.0)
    texts = [f"\\boxed{{\\frac{{{4 * i}}}{{4}}}}" for i in range(1, 80)]
    answers._latex_to_int.cache_clear()

    def read_then_work(text):
        got = extract_answer(text)
        total = 0
        for i in range(200_000):  # a stray _OutOfTime would surface here, in the caller's code
            total += i
        time.sleep(0.06)  # longer than the time limit's retries
        return got

    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(read_then_work, texts))
    assert all(g is None or g == i for g, i in zip(got, range(1, 80), strict=True))


def test_a_first_read_in_a_fresh_interpreter_is_bounded_too():
    # The first read imports math_verify and sympy (~1 s); the time limit's floor keeps the whole call short.
    code = (
        "import sys, time; sys.path.insert(0, 'src'); from utils.answers import extract_answer; "
        "t = time.monotonic(); got = extract_answer(sys.argv[1]); print(got, time.monotonic() - t)"
    )
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "-c", code, "The answer is \\boxed{(10^{4000})^{10000} - 9^{9^{9^{9}}}}"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    got, elapsed = run.stdout.split()
    assert got == "None"
    assert float(elapsed) < 3.0


def test_timed_out_reads_do_not_pile_up_threads(monkeypatch):
    monkeypatch.setattr(answers, "_EVAL_SECONDS", 0.0)  # every evaluation runs out of time at once
    monkeypatch.setattr(answers, "_MIN_EVAL_SECONDS", 0.0)
    answers._latex_to_int.cache_clear()
    before = threading.active_count()
    for i in range(60):
        assert extract_answer(f"\\boxed{{\\frac{{{2 * i}}}{{7}}}}") is None
    assert threading.active_count() - before <= 3  # stopped workers are reused


# ---------------------------------------------------------------- ground-truth answers


@pytest.mark.parametrize(
    ("text", "boxed"),
    [
        (r"so $x=\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"first \boxed{1}, then \boxed{2^{3}}", "2^{3}"),
        (r"the set $\boxed{\{1, 2\}}$", r"\{1, 2\}"),
        (r"an escaped brace $\boxed{\}}$ is text", r"\}"),
        (r"$\boxed 5$.", "5"),
        (r"\fbox{7}", "7"),
        (r"\boxed{1} then \boxed{\frac{1}{2}", None),  # the last box is never closed
        ("no box here", None),
    ],
)
def test_last_boxed_reads_a_worked_solutions_last_box(text, boxed):
    assert last_boxed(text) == boxed


def test_matching_brace_skips_escaped_braces_and_says_when_a_brace_is_never_closed():
    text = r"\boxed{a\}{b}c} {"
    assert matching_brace(text, 6) == len(text) - 3
    assert matching_brace(text, 10) == 12
    assert matching_brace(text, len(text) - 1) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("42", 42),
        (" 42 ", 42),
        ("1,000", 1000),
        ("-5", -5),
        ("+5", 5),
        ("042", 42),
        ("0", 0),
        ("336^\\circ", 336),
        ("\\$18", 18),
        ("\\frac{12}{4}", 3),
        ("\\dfrac{12}{4}", 3),
        ("5.0", 5),
        ("\\boxed{5}", 5),
        ("2^{10}", 1024),
        ("1\\,000", 1000),
        ("1{,}000", 1000),
        ("10,\\!080", 10080),
        ("\\$32,\\!348", 32348),
        ("864 \\mbox{ inches}^2", 864),
        ("125\\textnormal{ miles}", 125),
        ("25 \\, \\text{km}", 25),
        ("90\\text{ square\nunits}", 90),
        ("x = 5", 5),
        ("52_8", 42),
        ("4210_{5}", 555),
        ("10!", 3628800),
        ("\\sqrt{16}", 4),
        ("90°", 90),
        ("\u22125", -5),
        (7, 7),
        (7.0, 7),
        (-3, -3),
        ("\\frac{1}{2}", None),
        ("3\\sqrt{2}", None),
        ("2.5", None),
        (".0000672", None),
        ("p - q", None),
        ("2s", None),
        ("1,-2", None),
        ("3, 5, 7", None),
        ("(2,3)", None),
        ("\\text{Evelyn}", None),
        ("6 - 5i", None),
        ("5x - 7y + 11z + 4 = 0", None),
        ("080 or 081 (both were accepted)", None),
        ("", None),
        (7.5, None),
        (float("nan"), None),
        (float("inf"), None),
        (None, None),
        (True, None),
        ([1], None),
    ],
)
def test_parse_integer_answer(value, expected):
    got = parse_integer_answer(value)
    assert got == expected
    assert got is None or type(got) is int


def test_parse_integer_answer_accepts_numpy_integers():
    np = pytest.importorskip("numpy")
    assert parse_integer_answer(np.int64(12)) == 12
    assert parse_integer_answer(np.float64(12.0)) == 12


def test_parse_integer_answer_never_raises_on_random_junk():
    rng = random.Random(99)
    for _ in range(300):
        got = parse_integer_answer(_junk(rng, 12))
        assert got is None or type(got) is int


# ---------------------------------------------------------------- real data


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.realdata
def test_tora_outputs_agree_with_their_ground_truth(data_dir):
    rows = _jsonl(data_dir / "tir" / "tora_examples.jsonl")
    assert len(rows) == 30
    for row in rows:
        output = row["messages"][-1]["content"]
        assert extract_answer(output) == parse_integer_answer(row["gt"]), row["id"]
    assert sum(parse_integer_answer(r["gt"]) is not None for r in rows) >= 20


@pytest.mark.realdata
def test_gsm8k_solutions_read_their_final_line(data_dir):
    rows = _jsonl(data_dir / "gsm8k" / "test.jsonl")
    for row in rows:
        expected = int(row["answer"].rsplit("####", 1)[1].strip().replace(",", ""))
        assert extract_answer(row["answer"]) == expected, row["question"][:60]


@pytest.mark.realdata
def test_math500_solutions_agree_with_their_answers(data_dir):
    rows = _jsonl(data_dir / "math" / "math500.jsonl")
    pairs = [(extract_answer(r["solution"]), parse_integer_answer(r["answer"])) for r in rows]
    assert all(got == want for got, want in pairs), [
        (r["answer"], g) for r, (g, w) in zip(rows, pairs, strict=True) if g != w
    ]
    assert 300 <= sum(w is not None for _, w in pairs) <= 400  # about 62% of MATH answers are integers


@pytest.mark.realdata
def test_every_aime_answer_is_an_integer_in_range(data_dir):
    rows = _jsonl(data_dir / "aime" / "aime_1983_2024.jsonl") + _jsonl(data_dir / "aime" / "aime_2025.jsonl")
    values = [parse_integer_answer(r.get("Answer", r.get("answer"))) for r in rows]
    assert sum(v is None for v in values) == 1  # "080 or 081 (both were accepted)"
    assert all(0 <= v <= 999 for v in values if v is not None)
    assert 336 in values  # AIME 2025's "336^\circ"


# ---------------------------------------------------------------- competition ranges


@pytest.mark.parametrize(
    ("answer", "competition", "expected"),
    [
        (1234, "aimo1", 234),
        (-1, "aimo1", 999),
        (1000, "aimo2", 0),
        (999, "aimo2", 999),
        (0, "aimo1", 0),
        (-1000, "aimo2", 0),
        (12345, "AIMO2", 345),
        (None, "aimo1", None),
        (99999, "aimo3", 99999),
        (12345, "aimo3", 12345),
        (0, "aimo3", 0),
        (100000, "aimo3", None),
        (-1, "aimo3", None),
        (None, "aimo3", None),
        (-5, "raw", -5),
        (10**20, "none", 10**20),
        (None, "raw", None),
    ],
)
def test_normalize_for_competition(answer, competition, expected):
    assert normalize_for_competition(answer, competition) == expected


def test_normalized_answers_fall_in_the_competition_range():
    rng = random.Random(7)
    for competition, (low, high) in COMPETITION_RANGES.items():
        for _ in range(500):
            value = normalize_for_competition(rng.randint(-(10**7), 10**7), competition)
            assert value is None or low <= value <= high


def test_normalize_for_an_unknown_competition_names_it():
    with pytest.raises(ValueError, match="aimo4"):
        normalize_for_competition(5, "aimo4")


# ---------------------------------------------------------------- voting


def test_majority_vote_counts_and_share():
    result = majority_vote([3, 3, None, 4])
    assert result == VoteResult(answer=3, count=2, total=4, share=0.5, counts={3: 2, 4: 1})


@pytest.mark.parametrize(
    ("votes", "winner"),
    [([5, 7, 7, 5], 7), ([5, 7, 5, 7], 5), ([1, 2, 3], 1), ([3, 2, 1], 3), ([2, 1, 1, 2, 2, 1], 2)],
)
def test_majority_vote_tie_goes_to_the_first_to_reach_the_count(votes, winner):
    assert majority_vote(votes).answer == winner


def test_majority_vote_is_deterministic_and_matches_a_streaming_leader():
    rng = random.Random(3)
    for _ in range(300):
        votes = [rng.choice([1, 2, 3, None]) for _ in range(rng.randint(0, 12))]
        result = majority_vote(votes, fallback=-1)
        assert result == majority_vote(list(votes), fallback=-1)
        leader, lead, seen = -1, 0, {}
        for v in votes:  # the leader a loop watching samples arrive would hold
            if v is not None:
                seen[v] = seen.get(v, 0) + 1
                if seen[v] > lead:
                    leader, lead = v, seen[v]
        assert (result.answer, result.count) == (leader, lead)
        assert result.count == max(result.counts.values(), default=0)


@pytest.mark.parametrize("votes", [[], [None, None]])
def test_majority_vote_falls_back_when_nothing_parsed(votes):
    result = majority_vote(votes, fallback=123)
    assert (result.answer, result.count, result.total, result.share, result.counts) == (
        123,
        0,
        len(votes),
        0.0,
        {},
    )


@pytest.mark.parametrize(
    ("counts", "left", "min_votes", "decided"),
    [
        ({5: 3, 7: 1}, 1, None, True),
        ({5: 3, 7: 1}, 2, None, True),  # 7 could only tie, and ties keep the leader
        ({5: 3, 7: 1}, 3, None, False),
        ({5: 3}, 3, None, True),
        ({5: 3}, 4, None, False),
        ({5: 4}, 100, 4, True),
        ({5: 3}, 100, 4, False),
        ({}, 5, None, False),
        ({}, 0, None, True),
        ({5: 1, 7: 1}, 0, None, True),
        ({None: 9, 5: 1}, 1, None, True),  # unparsed samples are not a candidate
        ({None: 9, 5: 1}, 2, None, False),
    ],
)
def test_vote_is_decided(counts, left, min_votes, decided):
    assert vote_is_decided(counts, left, min_votes=min_votes) is decided


def test_vote_is_decided_without_the_margin_rule_waits_for_min_votes():
    assert not vote_is_decided({5: 3}, 1, unbeatable=False)
    assert vote_is_decided({5: 3}, 1, min_votes=3, unbeatable=False)
    assert vote_is_decided(majority_vote([5, 5, 5]), 1)  # a VoteResult works too


def test_vote_is_decided_rejects_bad_arguments():
    with pytest.raises(ValueError, match="samples_left"):
        vote_is_decided({5: 1}, -1)
    with pytest.raises(ValueError, match="min_votes"):
        vote_is_decided({5: 1}, 1, min_votes=0)


def test_a_decided_vote_never_changes_whatever_comes_next():
    # Exhaustive over short histories: when the margin rule says stop, no continuation changes the winner.
    choices = [1, 2, 3, None]
    for n_seen, n_left in [(3, 2), (4, 3), (5, 2)]:
        for seen in itertools.product(choices, repeat=n_seen):
            current = majority_vote(seen)
            if not vote_is_decided(current.counts, n_left):
                continue
            for rest in itertools.product(choices, repeat=n_left):
                assert majority_vote(seen + rest).answer == current.answer, (seen, rest)


def test_early_stop_saves_samples_on_a_clear_vote():
    samples = [7, 7, 7, 3, 7, 7, 7, 7]
    used = next(
        i
        for i in range(1, len(samples) + 1)
        if vote_is_decided(majority_vote(samples[:i]).counts, len(samples) - i, min_votes=4)
    )
    assert used == 5  # four 7s: stop with three samples unused
