"""Integer answers: read them from model outputs and data sets, fit them to a competition, vote.

`extract_answer` reads what a model wrote (the last `\\boxed{}`, else answer phrases, else the final
line); `parse_integer_answer` reads a data set's ground truth. Both turn LaTeX into an int through a
thin layer over `math_verify` (imported lazily: loaders that only see plain integers never pay for
sympy). Neither raises: anything that is not an integer is None.

Both are bounded on any input, on any thread: text and expressions are capped in length and nesting
before any work, sympy's unevaluated trees are sized before evaluation ((10^4000)^10000 is refused,
not computed), and a time limit stops what is left after `_EVAL_SECONDS` (signal.alarm, math_verify's
own timeout, works only on the main thread). A read takes well under a second.
"""

from __future__ import annotations

import contextlib
import ctypes
import fractions
import functools
import logging
import math
import numbers
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "COMPETITION_RANGES",
    "VoteResult",
    "extract_answer",
    "majority_vote",
    "normalize_for_competition",
    "parse_integer_answer",
    "vote_is_decided",
]

# --------------------------------------------------------------------------------------------------
# Turning one short answer expression into an int
# --------------------------------------------------------------------------------------------------

# A number as models write it: thousands separated by ",", "\,", "{,}", ",\!", "\!", "\ " or a thin space.
_SEP = r"(?:,\\!\s*|\{,\}|,|\\,|\\!|\\ |\\;|[\u2009\u202f\u00a0'])"
_UNSIGNED = rf"(?:[1-9]\d{{0,2}}(?:{_SEP}\d{{3}})+(?!\d)|\d+)(?:\.\d+)?"  # "0,5" is no thousands
_NUM = rf"[-\u2212]?{_UNSIGNED}"
_PLAIN_INT_RE = re.compile(rf"^[-+]?(?:[1-9]\d{{0,2}}(?:(?:{_SEP}| )\d{{3}})+|\d+)(?:\.0*)?$")
# LaTeX thousands separators, removed before anything reads commas: "1{,}000", "10,\! 000", "1\,000",
# "14 {, }916".
# Only before whole 3-digit groups: "3{,}5" is a decimal comma (3.5), and stays a comma.
_LATEX_GROUP_SEP_RE = re.compile(
    r"(?:(?<=[1-9])|(?<=\d\d))\s*(?:,\\!|\{\s*,\s*\}|\\,|\\!|\\;)\s*(?=\d{3}(?!\d))"
)

_TEXT_CMDS = r"text|textnormal|textup|textrm|mathrm|mbox|hbox"
_FUNCTIONS = r"gcd|lcm|max|min"
# Decoration that never changes an integer's value: math delimiters, sizing, spacing, fonts.
_DROP_RE = re.compile(
    r"\\left|\\right|\\displaystyle|\\textstyle|\\!|\\quad|\\qquad|^\\\(|\\\)$|^\\\[|\\\]$|\$|"
    rf"\\(?:{_TEXT_CMDS}|mathbf|textbf|mathit|textit|bf|rm|operatorname)\s*(?=\{{)"
)
# Units and trailing words: "42 \text{ cm}^2", "18 dollars", "60^\circ", "20\%". Not `\mathrm{e}` or
# `\mathrm{i}` (constants: "2\mathrm{e}" is no 2) nor `\text{lcm}(4, 6)` (a function; "\text{ min}" is a unit).
_UNIT_RE = re.compile(
    r"(?:\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degrees?|°|\\%|%|\\\$|"
    rf"\\(?:{_TEXT_CMDS})\s*\{{(?!\s*(?:[ei]\s*\}}|(?:{_FUNCTIONS})\s*\}}\s*\())\s*[A-Za-z][^{{}}]*\}}"
    r"(?:\s*\^\s*\{?\d\}?)?)"
)
# "\gcd(18, 3)", "\operatorname{lcm}(4,6)" (once `\operatorname` is dropped: "{lcm}(4,6)"), "max(3,7)".
_FUNCTION_CALL_RE = re.compile(
    rf"(?:\\|\{{\s*)?(?<![A-Za-z])({_FUNCTIONS})(?:\s*\}})?\s*(?=\()", re.IGNORECASE
)
_FUNCTION_LATEX = {"gcd": r"\gcd", "lcm": r"\operatorname{lcm}", "max": r"\max", "min": r"\min"}
_CALL_OPEN_RE = re.compile(r"(?:\\gcd|\\max|\\min|\\operatorname\{lcm\})\s*\(")
_CHOICE_RE = re.compile(r"^\{?\s*\(\s*[A-E]\s*\)\s*\}?\s*(?:\\ |~|\\quad|:)?\s*(?=[\d\\-])")
_EDGE_SPACE_RE = re.compile(r"^(?:\s|\\[,;: ]|~)+|(?:\s|\\[,;: ]|~)+$")
_TRAILING_WORDS_RE = re.compile(r"(?<=[\d}])\s+(?![ei]\b)[A-Za-z][A-Za-z .\-]*$")  # not "3 + 4 i"
# Relations other than "=" and "\approx": "x != 5", "x \ne 5", "n > 3", "a \le 5" state no value. A "!"
# right after a digit or bracket is a factorial: "5!=120" is 5! = 120.
_RELATION_RE = re.compile(
    r"[<>\u2260\u2264\u2265]|(?<![\d)}!])!=|"
    r"\\(?:neq?|not|notin|leq?|geq?|leqq|geqq|leqslant|geqslant|lt|gt|ll|gg|in|subset|subseteq|"
    r"supset|supseteq|sim|propto|mid|nmid|pm|mp)(?![A-Za-z])"
)
# The value is the last side: "x = 5", "\approx 42", "2^{100} \equiv 2 \pmod 7".
_EQUALS_RE = re.compile(r"=|\\(?:approx|simeq|equiv)(?![A-Za-z])|[\u2248\u2261]")
# A residue's modulus after its value: "42 \pmod{1000}", "2 (\bmod 7)".
_MODULUS_NOTE_RE = re.compile(r"\s*(?:\\pmod\s*(?:\{[^{}]*\}|\d+)|\(\s*\\b?mod\s*\{?\s*\d+\s*\}?\s*\))$")
# "\max\{3, 7\}" is "\max(3, 7)".
_SET_ARGUMENTS_RE = re.compile(rf"(\\(?:{_FUNCTIONS})|\{{(?:{_FUNCTIONS})\}})\s*\\\{{([^{{}}]*?)\\\}}")
# No value to compute: Knuth arrows (powers and factorials: see _storage_digits), repeating decimals
# ("0.\overline{9}"), elided digits or terms ("99\cdots9", "1, 2, \ldots").
_REFUSED_RE = re.compile(r"\\(?:uparrow|overline|dot|ddot|cdots|ldots|dots)(?![A-Za-z])")
# sympy computes binomials of literal integers while math_verify parses: \binom{10^6}{5*10^5} takes minutes.
_LITERAL_BINOMIAL_RE = re.compile(r"\\[dt]?binom\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}")
_EQUATION_LHS_RE = re.compile(r"\d\s*[A-Za-z]")  # a coefficient: "2x", "11 z"
_SEVERAL_RE = re.compile(r",|;|\\text|\bor\b|\band\b")
_MIXED_RE = re.compile(r"(\d)\s*(\\[dt]?frac)")  # "4\frac{1}{2}" is 4 1/2, not 4 * 1/2
_THOUSANDS_RE = re.compile(r"(?<![\d.,])[1-9]\d{0,2}(?:,\d{3})+(?!\d|,\d)")  # "1,000"; not "0,111"
_DECIMAL_RE = re.compile(r"(?<![\d.])(\d*)\.(\d+)(?![\d.])")
_SCIENTIFIC_RE = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d{1,3}$")  # Python prints 1e+20
_INFIX_FRACTION_RE = re.compile(
    r"\{([^{}]*)\\(choose|over)(?![A-Za-z])([^{}]*)\}|^([^{}]*)\\(choose|over)(?![A-Za-z])([^{}]*)$"
)
_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.DOTALL)  # an escaped character ("\\{") or a brace
# A box in a worked solution: `\boxed{` / `\fbox{`, or `\boxed 5` (one token, trailing "$.," dropped).
_SOLUTION_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*(\{|\s+(\S+))")
_BASE_RE = re.compile(r"^(\d[0-9A-Za-z]*)_\{?(\d{1,2})\}?$")  # "52_8", "4210_{5}": digits in a base

# Bounds checked before any work that grows with them. Reading is linear in the text; what could
# still run long (math_verify's parser on deep nesting, sympy on huge numbers) is refused by size
# first, and cut by a time limit last (see _Evaluator).
_MAX_INPUT_CHARS = 1000  # one answer expression; longer is prose or a degenerate repeat
_MAX_BRACE_DEPTH = 50  # each level of "{{...}}" is one more pass of _clean
_MAX_EXPR_CHARS = 200  # what math_verify is given
_MAX_PAREN_DEPTH = 4  # nested "(" cost math_verify 0.1-0.5 s at depth 4-6 (loaded CPU), 7 s at 50
_MAX_EVAL_BRACE_DEPTH = 8  # 20 nested "{" cost math_verify 4 s (it builds nested sets)
_MAX_DIGITS = 10_000  # any number sympy would build on the way; 10^4 digits take milliseconds
_MAX_EXPONENT_DIGITS = 5  # an exponent beyond 10^5 makes a number beyond _MAX_DIGITS from any base >= 2
_MAX_ANSWER_DIGITS = 4000  # MATH has 2^{4950} (1491 digits); str() refuses 4300+ digits by default
_EVAL_SECONDS = 0.8  # time one public call may spend before its evaluations are stopped, all together
_MIN_EVAL_SECONDS = 0.3  # ... but at least this much after the one-off import (~1 s on a first call)

_log = logging.getLogger(__name__)


def _clean(expr: str) -> str:
    """Strip delimiters, fonts, units and an `x =` prefix; keep the value's LaTeX."""
    s = re.sub(r"\.\s*$", "", expr.strip())  # a sentence's full stop, not the "." of ".5"
    s = _LATEX_GROUP_SEP_RE.sub("", s.replace("\u2212", "-")).replace("{,}", ",")
    s = _UNIT_RE.sub(" ", s)  # before _DROP_RE, which would eat the "$" of "\$" and the "\text" of units
    s = _DROP_RE.sub("", s)
    s = _SET_ARGUMENTS_RE.sub(r"\1(\2)", s.replace("\\bmod", "\\mod"))  # math_verify misreads \bmod
    s = _FUNCTION_CALL_RE.sub(lambda m: _FUNCTION_LATEX[m.group(1).lower()], s)
    s = _INFIX_FRACTION_RE.sub(_infix_to_prefix, s)  # "{16 \choose 2}" is \binom{16}{2}, not 16 then 2
    s = _CHOICE_RE.sub("", s)  # "\textbf{(D)}\ 120": the value after a multiple-choice label
    s = _EDGE_SPACE_RE.sub("", s)  # "25 \, \text{km}" leaves "25 \,"
    if _RELATION_RE.search(s):
        return ""  # "x != 5", "n \geq 3": no single value
    # "x = 5", "m+n = 42", "a+b = 2+3 = 5", "\approx 42": the last side is the value (not the "=" of
    # "\sum_{k=1}^{n}", inside braces),
    last_equals = _last_top_level_equals(s)
    if last_equals is not None:
        head, s = _mask_call_commas(s[: last_equals.start()]), s[last_equals.end() :]
        if _EQUATION_LHS_RE.search(head) or _SEVERAL_RE.search(head):
            return ""  # unless it is an equation to solve ("2x = 10") or several ("x=2 \text{ or } x=3")
    s = _MODULUS_NOTE_RE.sub("", _TRAILING_WORDS_RE.sub("", s.strip()))
    s = _MIXED_RE.sub(r"\1+\2", s)
    return re.sub(r"\.\s*$", "", s.strip()).strip()


def _last_top_level_equals(s: str) -> re.Match | None:
    """The last "=" (or "\\approx") outside braces, in one pass."""
    depth, last, matches = 0, None, {m.start(): m for m in _EQUALS_RE.finditer(s)}
    for i, c in enumerate(s):
        depth += (c == "{") - (c == "}")
        if depth == 0 and i in matches:
            last = matches[i]
    return last


def _infix_to_prefix(m: re.Match) -> str:
    top, command, bottom = (m.group(1), m.group(2), m.group(3)) if m.group(2) else m.group(4, 5, 6)
    return rf"{{\{'binom' if command == 'choose' else 'frac'}{{{top.strip()}}}{{{bottom.strip()}}}}}"


def _mask_call_commas(s: str) -> str:
    """`s` with the commas between a function's arguments (`\\gcd(18, 3)`) blanked out, for the checks
    that read any other comma as a list ("3, 5") or a decimal comma ("3,5")."""
    calls = {m.end() - 1 for m in _CALL_OPEN_RE.finditer(s)}
    out, open_parens, inside_calls = [], [], 0
    for i, c in enumerate(s):
        if c == "(":
            open_parens.append(i in calls)
            inside_calls += i in calls
        elif c == ")" and open_parens:
            inside_calls -= open_parens.pop()
        out.append("\x00" if c == "," and inside_calls else c)
    return "".join(out)


def _plain_int(s: str) -> int | None:
    """'1,000', '-5', '042', '5.0', '1\\,000' -> int without sympy; None if not this simple."""
    if _SCIENTIFIC_RE.match(s):  # exact, as a fraction: "1.5e3" is 1500, "1e-3" is no integer
        value = fractions.Fraction(s)
        return int(value) if value.denominator == 1 and _log10(int(value)) < _MAX_ANSWER_DIGITS else None
    if not _PLAIN_INT_RE.match(s):
        return None
    digits = re.sub(_SEP, "", s).replace(" ", "").split(".")[0]
    return int(digits) if len(digits.lstrip("+-0")) <= _MAX_ANSWER_DIGITS else None


def _sympy_to_int(value: object) -> int | None:
    """An int when `value` is a sympy number (or `x = n`) of integer value, else None."""
    import sympy

    if isinstance(value, sympy.Equality):
        value = value.rhs
    if not isinstance(value, sympy.Basic) or not value.is_number or _storage_digits(value) > _MAX_DIGITS:
        return None
    value = value.doit()
    if value.is_Integer:
        return int(value) if _log10(int(value)) < _MAX_ANSWER_DIGITS else None
    if value.is_Rational:
        return None  # an Integer is Rational too, but was caught above
    if value.is_Float:  # "1.5 \times 10^3"; sympy >= 1.13 says Float(1500.0) != 1500, so compare by hand
        nearest = int(value.round())
        return nearest if abs(value - nearest) <= 1e-9 * max(1, abs(nearest)) else None
    if value.has(sympy.zoo, sympy.oo, -sympy.oo, sympy.nan, sympy.I):
        return None
    # sqrt(16) is 4, 3*sqrt(2) is not: compare with the nearest integer far beyond float precision.
    approx = value.evalf(60)
    if not approx.is_Float or abs(approx) > 10**30:
        return None
    nearest = int(approx.round())
    return nearest if abs(value.evalf(80) - nearest) < sympy.Float(10) ** -50 else None


def _log10(n: int) -> float:
    """log10(|n|), and for huge n an upper bound within one that costs no conversion (0 for 0)."""
    n = abs(n)
    return math.log10(n) if 0 < n < 2**1000 else n.bit_length() * 0.30103


def _storage_digits(node) -> float:
    """An upper bound on the digits of the numbers that evaluating `node` builds; inf past _MAX_DIGITS.

    Read on math_verify's unevaluated tree before `doit()`, so that (10^4000)^10000 (4*10^7 digits),
    2^(2^100), (10^9)! or binom(10^9, 10^8) are refused in microseconds instead of computed for minutes.
    """
    import sympy

    # oo, -oo, zoo: also the limit of a sum that would never end. Compared by identity: assumption
    # queries such as `is_infinite` can evaluate the tree (9^(9^9)) to answer.
    if any(
        node is infinity for infinity in (sympy.S.Infinity, sympy.S.NegativeInfinity, sympy.S.ComplexInfinity)
    ):
        return math.inf
    if node.is_Integer:
        return _log10(int(node))
    if node.is_Rational:
        return _log10(node.p) + _log10(node.q)
    if node.is_Float:
        return _log10(int(abs(node))) if abs(node) < sympy.Float(10) ** _MAX_DIGITS else math.inf
    args = node.args
    if isinstance(node, sympy.Pow):
        base, exponent = args
        exponent_digits = _storage_digits(exponent)
        if exponent_digits > _MAX_EXPONENT_DIGITS:
            return math.inf
        times = abs(exponent.p) if exponent.is_Rational else 10**exponent_digits  # p of a root p/q
        size = _storage_digits(base) * max(times, 1)
    elif isinstance(
        node, (sympy.factorial, sympy.factorial2, sympy.subfactorial, sympy.gamma, sympy.binomial)
    ):
        n = _bounded_value(args[0])
        size = n * math.log10(n + 1) + sum(map(_storage_digits, args))  # n! has about n log10(n) digits
    elif isinstance(node, (sympy.Sum, sympy.Product)):  # as many terms as the limits span
        terms = math.prod(_bounded_value(limit[2]) + _bounded_value(limit[1]) for limit in node.limits)
        size = _storage_digits(node.function) * terms if terms <= 10**4 else math.inf
    else:  # sums, products, functions, constants, symbols
        size = sum(map(_storage_digits, args)) + 1
    return size if size <= _MAX_DIGITS else math.inf


def _bounded_value(node) -> float:
    """An upper bound on |node|'s value, for the counts (exponents, factorials' n) that sizes scale with."""
    digits = _storage_digits(node)
    return 10**digits if digits <= _MAX_EXPONENT_DIGITS else math.inf


# One public call's time budget, per thread: `active` while extract_answer or parse_integer_answer runs,
# from `started`; `deadline` is set by its first evaluation.
_clock = threading.local()


class _OutOfTime(BaseException):
    """The time limit passed. A BaseException: math_verify and sympy catch `Exception` and carry on."""


@contextlib.contextmanager
def _time_budget():
    _clock.active, _clock.started, _clock.deadline = True, time.monotonic(), None
    try:
        yield
    finally:
        _clock.active = False


def _raise_in_thread(thread_id: int, exception: type[BaseException] | None) -> None:
    """Have `exception` raised in another thread at its next bytecode (None: cancel a pending one)."""
    pending = ctypes.py_object(exception) if exception is not None else None  # None passes NULL
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), pending)


@dataclass(eq=False)
class _Job:
    fn: Callable
    args: tuple
    done: threading.Event = field(default_factory=threading.Event)
    value: object = None
    error: BaseException | None = None
    abandoned: bool = False  # its caller stopped waiting


class _Evaluator:
    """Runs evaluations in worker threads, so that a time limit can stop them whatever thread reads.

    signal.alarm (math_verify's own timeout) works only on the main thread and cancels a caller's alarm;
    the solver and a gateway read answers in worker threads. Here the caller waits for its job until the
    deadline, then has _OutOfTime raised in the worker (PyThreadState_SetAsyncExc) and returns. Only
    workers ever receive that exception: raised in a caller, it could land inside a lock's `__enter__`
    and leave the lock held for good. A worker that swallows it is told again a few times, then left
    to finish on its own; the caller never waits longer. It cannot stop one long C call (a huge integer
    power): the size checks in _storage_digits keep those from starting.
    """

    _RETRIES = 5
    _RETRY_SECONDS = 0.02

    def __init__(self) -> None:
        self._idle: list[_Worker] = []  # list.pop and list.append are atomic: no lock to hold

    def run_before(self, deadline: float, fn: Callable, *args):
        """`fn(*args)`, or _OutOfTime once `deadline` (time.monotonic) has passed."""
        job, worker = _Job(fn, args), self._idle_worker()
        worker.jobs.put(job)
        if not job.done.wait(max(0.0, deadline - time.monotonic())):
            for _ in range(self._RETRIES):
                worker.stop(job)
                if job.done.wait(self._RETRY_SECONDS):
                    break
            raise _OutOfTime
        if job.error is not None:
            raise job.error
        return job.value

    def _idle_worker(self) -> _Worker:
        while True:
            try:
                worker = self._idle.pop()
            except IndexError:
                return _Worker(self._idle)
            if worker.thread.is_alive():  # not in a forked child, where no thread was copied
                return worker


class _Worker:
    def __init__(self, idle: list[_Worker]) -> None:
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self.current: _Job | None = None
        self._idle = idle
        self.thread = threading.Thread(target=self._serve, name="answers-evaluation", daemon=True)
        self.thread.start()

    def stop(self, job: _Job) -> None:
        job.abandoned = True  # set before reading `current`, which _run sets before reading this
        if self.current is job:
            _raise_in_thread(self.thread.ident, _OutOfTime)

    def _serve(self) -> None:
        while True:
            try:
                self._run(self.jobs.get())
            except BaseException:  # noqa: BLE001 - a stop that came after its job ended: nothing to stop
                self.current = None

    def _run(self, job: _Job) -> None:
        self.current = job
        try:
            if job.abandoned:
                raise _OutOfTime  # its caller gave up before it started
            job.value = job.fn(*job.args)
        except BaseException as error:  # noqa: BLE001 - _OutOfTime, or whatever fn raised: the caller's
            job.error = error
        self.current = None
        _raise_in_thread(self.thread.ident, None)  # a stop sent as the job ended must not reach the next
        job.done.set()
        self._idle.append(self)


_evaluator = _Evaluator()


def _math_verify_int(latex: str) -> int | None:
    """The integer math_verify reads in `latex` (None if it reads none), within the call's time budget."""
    _warm_up_math_verify()  # outside the time limit: the first import and parse take ~1 s
    active = getattr(_clock, "active", False)
    deadline = _clock.deadline if active else None
    if deadline is None:
        started = _clock.started if active else time.monotonic()
        deadline = max(started + _EVAL_SECONDS, time.monotonic() + _MIN_EVAL_SECONDS)
        if active:
            _clock.deadline = deadline
    return _evaluator.run_before(deadline, _parse_and_convert, latex)


@functools.cache
def _warm_up_math_verify() -> None:
    """Import math_verify and parse once (ANTLR builds its tables on first use), outside any time limit."""
    _math_verify_parse("\\frac{1}{2}")


def _parse_and_convert(latex: str) -> int | None:
    for value in _math_verify_parse(latex):
        try:
            result = _sympy_to_int(value)
        except Exception:  # noqa: BLE001
            result = None
        if result is not None or not isinstance(value, str):
            return result  # math_verify's first sympy result decides; its strings are fallbacks
    return None


def _math_verify_parse(latex: str) -> list:
    """`math_verify.parse` without its signal-based timeout (see _Evaluator); [] on any error."""
    try:
        import math_verify

        logging.getLogger("math_verify.parser").addFilter(_drop_timeout_warning)
        return math_verify.parse(f"${latex}$", parsing_timeout=None)
    except Exception:  # noqa: BLE001 - a reader of model output must never raise
        _log.debug("math_verify failed on %r", latex, exc_info=True)
        return []


def _drop_timeout_warning(record: logging.LogRecord) -> bool:
    return "Timeout is disabled" not in record.getMessage()


@functools.lru_cache(maxsize=4096)  # data sets and vote batches repeat the same answers
def _latex_to_int(expr: str) -> int | None:
    """The integer value of one short answer expression (box content, ground truth), or None."""
    if len(expr) > _MAX_INPUT_CHARS or _depth(expr, "{", "}") > _MAX_BRACE_DEPTH:
        return None
    s = _clean(expr)
    while True:  # "\boxed{\boxed{5}}", "{5}"
        inner = _strip_wrapper(s)
        if inner is None:
            break
        s = _clean(inner)
    if not s:
        return None
    based = _BASE_RE.match(s)
    if based:
        return _int_in_base(*based.groups())
    fast = _plain_int(s)
    if fast is not None:
        return fast
    too_deep = _depth(s, "([", ")]") > _MAX_PAREN_DEPTH or _depth(s, "{", "}") > _MAX_EVAL_BRACE_DEPTH
    if len(s) > _MAX_EXPR_CHARS or too_deep or _REFUSED_RE.search(s) or _has_huge_binomial(s):
        return None  # math_verify's parser slows down steeply with nesting
    # "\frac{1,000}{8}" has a thousands comma; "\gcd(830,450)" has an argument separator
    checked = _THOUSANDS_RE.sub(lambda m: m.group(0).replace(",", ""), _mask_call_commas(s))
    if "," in checked or re.search(r"\d\s+\d", checked):
        return None  # a list, tuple or interval: "3, 5", "(1,2)", "[0, \pi]", "3 5"; or "3,5" (3.5)
    if re.search(r"[A-Za-z]", _COMMAND_RE.sub("", checked.replace(r"\operatorname{lcm}", ""))):
        return None  # a variable is left: "2x^2-18", "p - q", "2{e}" (a command such as \sqrt is fine)
    # Decimals as exact fractions: sympy's binary floats would make sqrt(99.9999999999999) "10".
    return _math_verify_int(_DECIMAL_RE.sub(_decimal_as_fraction, checked.replace("\x00", ",")))


def _decimal_as_fraction(m: re.Match) -> str:
    """2.50 -> (\\frac{25}{10}), in parentheses (math_verify reads braces in arguments as sets); 2.0 -> 2."""
    whole, decimals = m.group(1) or "0", m.group(2).rstrip("0")
    return rf"(\frac{{{whole}{decimals}}}{{1{'0' * len(decimals)}}})" if decimals else whole


def _has_huge_binomial(s: str) -> bool:
    """Whether a binomial of literal integers has more than _MAX_DIGITS digits (about k log10(n))."""
    for m in _LITERAL_BINOMIAL_RE.finditer(s):
        n, k = int(m.group(1)), int(m.group(2))
        if min(k, max(n - k, 0)) * math.log10(n + 1) > _MAX_DIGITS:
            return True
    return False


def _depth(s: str, opening: str, closing: str) -> int:
    """How deeply `opening` brackets nest in `s`, in one pass."""
    depth = deepest = 0
    for c in s:
        if c in opening:
            depth += 1
            deepest = max(deepest, depth)
        elif c in closing:
            depth -= 1
    return deepest


def _int_in_base(digits: str, base: str) -> int | None:
    """`52_8` is 42: the value, so that a model's `52_8` and the data set's `52_8` agree."""
    try:
        return int(digits, int(base)) if 2 <= int(base) <= 36 else None
    except ValueError:
        return None


def _strip_wrapper(s: str) -> str | None:
    """The inside of `{...}` or `\\boxed{...}` spanning the whole string, else None."""
    m = re.match(r"^\\(?:boxed|fbox|framebox)\s*(?=\{)|^(?=\{)", s)
    if m is None:
        return None
    end = _brace_pairs(s).get(m.end())
    return s[m.end() + 1 : end] if end == len(s) - 1 else None


def _brace_pairs(s: str) -> dict[int, int]:
    """Map each `{` that gets closed to its `}` (escaped braces skipped), in one pass over the braces."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE_TOKEN_RE.finditer(s):
        if m.group() == "{":
            stack.append(m.start())
        elif m.group() == "}" and stack:
            pairs[stack.pop()] = m.start()
    return pairs


def matching_brace(text: str, open_index: int) -> int | None:
    """The index of the `}` that closes the `{` at `open_index` (escaped braces skipped), or None when
    it is never closed."""
    return _brace_pairs(text).get(open_index)


# --------------------------------------------------------------------------------------------------
# Ground truth from data sets
# --------------------------------------------------------------------------------------------------


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`, `\\boxed 5`) in `text`, braces balanced;
    None when there is none or the last one is never closed.

    How a worked solution states its answer (MATH's). A model's output is read by `extract_answer`,
    which also skips a truncated box and reads boxes listed together.
    """
    starts = list(_SOLUTION_BOX_RE.finditer(text))
    if not starts:
        return None
    match = starts[-1]
    if match.group(2) is not None:  # `\boxed 5`: one token, no braces
        return match.group(2).rstrip("$.,")
    end = matching_brace(text, match.end() - 1)
    return None if end is None else text[match.end() : end]


def parse_integer_answer(text: str | int | float | None) -> int | None:
    """A data set's ground-truth answer as an int, or None when it is not an integer.

    Accepts ints, integral floats (7.0), and strings such as "1,000", "042", "-5", "336^\\circ",
    "\\$18", "\\frac{12}{4}", "\\boxed{5}". `\\frac{1}{2}`, "2.5", "3\\sqrt{2}", bools, NaN -> None.
    """
    try:
        if text is None or isinstance(text, bool):
            return None
        if isinstance(text, numbers.Integral):
            return int(text)
        if isinstance(text, numbers.Real):
            value = float(text)
            return int(value) if math.isfinite(value) and value.is_integer() else None
        if not isinstance(text, str):
            return None
        with _time_budget():
            return _latex_to_int(text)
    except _OutOfTime:
        _log.debug("parse_integer_answer ran out of time on %r", text[:200])
        return None
    except Exception:  # noqa: BLE001 - one bad row must not stop a loader
        _log.debug("parse_integer_answer failed on %r", text, exc_info=True)
        return None


# --------------------------------------------------------------------------------------------------
# Answers in model outputs
# --------------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox|framebox)(?![A-Za-z])")
_OPEN_BRACE_RE = re.compile(r"\s*\{")
_BARE_BOX_RE = re.compile(r"\s+([^\s$]+)")
# Between boxes that list several answers, on one line: separators only ("and", ",", "\quad", "$")
# and variables' names ("$x = \boxed{3}$ and $y = \boxed{4}$").
_LIST_GAP_RE = re.compile(
    r"(?:[ \t,;&~$]|(?<![A-Za-z\\])[A-Za-z](?:_\{?\w{1,3}\}?)?\s*=|\\[,;:! ()\[\]]|\\q?quad\b|"
    r"\\text\s*\{\s*(?:and|or|,)?\s*\}|\band\b|\bor\b)*"
)
# Phrases that introduce an answer; the last one followed by a value wins: "The final answer is 42",
# "the answer is $1{,}000$", "Answer: 42" ("**Answer:** 42" once the bold is gone), GSM8K's "#### 72".
_PHRASE_RE = re.compile(
    r"(?:final\s+answer(?:\s+is|\s*[:=])?|####|\banswer\s*[:=]|"
    r"\banswers?(?:\s+(?:to|for|of)\b[^.\n$]{0,60}?)?\s+(?:is|would\s+be|will\s+be|should\s+be))\s*:?",
    re.IGNORECASE,
)
# After a box, only a statement of the answer overrides it: not "We may check our answer: $17 \cdot 44 ...$".
_CLOSING_PHRASE_RE = re.compile(
    r"(?:final\s+answer(?:\s+is|\s*[:=])?|^[^\w\n]*answer\s*[:=]|\bthe\s+answer\s+is)\s*:?",
    re.IGNORECASE | re.MULTILINE,
)
_MATH_CHUNK_RE = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")  # prose, not a LaTeX command or a variable
# A number in prose, with a sign only where it cannot be a dash ("3-5"), read with what binds to it:
# "3/4" (so not 4), "2^{10}" (so not 10 or 2).
# Thousands may be grouped by plain spaces in prose ("1 000"); a comma between digits that is no
# thousands separator is a decimal comma ("3,5") or a list ("1,2"), so neither side is read.
_PROSE_UNSIGNED = rf"(?:[1-9]\d{{0,2}}(?:(?:{_SEP}| )\d{{3}})+(?!\d)|\d+)(?:\.\d+)?"
_BARE_NUM_RE = re.compile(
    rf"(?:(?<![\w)\]}}.^_{{\\/])[-\u2212]|(?<![\w.^_{{\\/\-\u2212]))(?<!\d,)(?<![eE]\+)(?>{_PROSE_UNSIGNED}(?:[eE][-+]?\d{{1,3}})?)"
    rf"(?:\s*/\s*(?>{_UNSIGNED})|\s*\^\s*(?:\d+|\{{\s*\d+\s*\}}))?(?P<glued>[A-Za-z]|,\d)?"
)
_LEADING_NUM_RE = re.compile(
    rf"^\$?\s*({_NUM})(?=\s+[A-Za-z(]|\s*(?:,(?!\s*\d)|!(?!\S)|[;:?)])|\s*$|\s*\.(?!\d))"
)
_SEVERAL_NUMBERS_RE = re.compile(rf"^\$?\s*{_NUM}\s*\$?\s*(?:,\s*)?(?:and|or)\s+\$?\s*[-\u2212]?\d")
# A number that follows another in a list: "1, 2, and 3", "[1, 2]", "between 5 and 10"; "$1$, $2$ and $3$".
_LIST_TAIL_RE = re.compile(r"\d\s*(?:[,;]\s*(?:(?:and|or)\s+)?|\s(?:and|or)\s+)$")
_LIST_GAP_WORDS_RE = re.compile(r"\s*(?:[,;]\s*(?:(?:and|or)\s+)?|(?:and|or)\s+)")
_NUMBER_CHUNK_RE = re.compile(rf"\s*{_NUM}\s*")
_SPECIAL_TOKEN_RE = re.compile(r"<\|[^<>\n]{0,40}?\|>|<\uff5c[^<>\n]{0,40}?\uff5c>|</?s>")  # <|im_end|>, </s>
_FENCE_RE = re.compile(r"^[ \t]*```[ \t]*(\w*)")
_MAX_TEXT_CHARS = 200_000  # the tail of a longer output is read (~50k tokens; answers come last)
_MAX_LINE_CHARS = 1000  # the tail of a final line that is read for its last number
_MAX_SEGMENT_CHARS = 300
_MAX_PHRASES = 20  # the last few phrases; a degenerate output can repeat one thousands of times
_MAX_LOOKBACK_LINES = 3  # lines without a digit skipped from the end ("I hope it helps.", a cut box)


def extract_answer(text: str) -> int | None:
    """The integer answer in a model's output, or None; never raises.

    Code blocks are ignored (```output blocks are kept), and so are special tokens (`</s>`).
    Then: the last complete `\\boxed{...}` / `\\fbox{...}` / `\\boxed 5`, which decides (`\\boxed{\\frac12}`
    gives None; boxes listed together, "\\boxed{1} and \\boxed{-2}", give None unless they agree)
    unless a closing statement follows it ("The final answer is 13" after `\\boxed{12}`); else the
    last answer phrase followed by a value ("the final answer is", "Answer:", "####"); else the last
    number of the last line that has one, among the final three lines. An unclosed (truncated)
    `\\boxed{` is skipped and what follows it dropped. Values are read as LaTeX: "1{,}000", "10,\\!000",
    "1 000", `\\dfrac{12}{4}`, `2^{10}`, `\\gcd(18, 3)`, `42^\\circ`, `x = 5`, `\\approx 42`, "5.0",
    "042" are integers; `\\frac{1}{2}`, "2.5", "3,5" (a decimal comma), `3\\sqrt{2}`, `2\\mathrm{e}`,
    `x \\neq 5`, "3, 5", "3 and 5" are not. Only the last 200,000 characters are read, in bounded
    time (see the module notes).
    """
    try:
        if not isinstance(text, str) or not text.strip():
            return None
        with _time_budget():
            return _read_answer(_tail(text, _MAX_TEXT_CHARS))
    except _OutOfTime:
        _log.debug("extract_answer ran out of time")
        return None
    except Exception:  # noqa: BLE001 - a reader of sampled outputs must never stop a run
        _log.debug("extract_answer failed", exc_info=True)
        return None


def _tail(text: str, limit: int) -> str:
    """The last `limit` characters, less a token cut in two: a number's last digits are no number."""
    return text if len(text) <= limit else re.sub(r"^\S+", "", text[-limit:])


def _head(text: str, limit: int) -> str:
    return text if len(text) <= limit else re.sub(r"\S+$", "", text[:limit])


def _read_answer(text: str) -> int | None:
    text = "\n".join(_prose_and_output_lines(_SPECIAL_TOKEN_RE.sub("", text)))
    pairs = _brace_pairs(text) if _BOX_RE.search(text) else {}
    boxed, box_end = _last_box(text, pairs)
    if boxed is not None:
        found, value = _from_phrase(
            text[box_end:], _CLOSING_PHRASE_RE
        )  # "The final answer is 13" after \boxed{12}
        return value if found and value is not None else _latex_to_int(boxed)
    body = _drop_unclosed_box(text, pairs)
    found, value = _from_phrase(body)
    if found:
        return value
    return _from_final_lines(body)


def _last_box(text: str, pairs: dict[int, int]) -> tuple[str | None, int]:
    """Content and end of the last closed, non-empty box; an unclosed (truncated) box is skipped.

    Boxes listed together ("\\boxed{1} and \\boxed{-2}", "\\boxed{2}, \\boxed{3}") are several answers:
    their content is "" (no integer) unless they all agree.
    """
    listed: list[str] = []
    last_start, last_end = 0, 0
    for m in reversed(list(_BOX_RE.finditer(text))):
        content, box_end = _box_content(text, m, pairs)
        if not content.strip():
            continue
        if listed and not _LIST_GAP_RE.fullmatch(text, box_end, last_start):
            break
        listed.append(content.strip())
        last_start, last_end = m.start(), last_end or box_end
    if not listed:
        return None, 0
    return (listed[0] if len(set(listed)) == 1 else ""), last_end


def _box_content(text: str, m: re.Match, pairs: dict[int, int]) -> tuple[str, int]:
    """What the box at `m` holds and where it ends; "" for an unclosed one."""
    brace = _OPEN_BRACE_RE.match(text, m.end())
    if brace:
        end = pairs.get(brace.end() - 1)
        return (text[brace.end() : end], end + 1) if end is not None else ("", 0)
    token = _BARE_BOX_RE.match(text, m.end())  # "\boxed 5", "\boxed -12$"
    return (token.group(1), token.end()) if token else ("", 0)


def _drop_unclosed_box(text: str, pairs: dict[int, int]) -> str:
    """Cut a truncated tail at the first unclosed box: what follows it holds no answer."""
    for m in _BOX_RE.finditer(text):
        brace = _OPEN_BRACE_RE.match(text, m.end())
        if brace and brace.end() - 1 not in pairs:
            return text[: m.start()]
    return text


def _from_phrase(text: str, phrases: re.Pattern = _PHRASE_RE) -> tuple[bool, int | None]:
    """(found, value) for the last answer phrase that is followed by something."""
    plain = text.replace("**", "").replace("__", "")
    for m in list(phrases.finditer(plain))[-_MAX_PHRASES:][::-1]:
        found, value = _segment_value(_segment_after(plain, m.end()))
        if found:
            return True, value
    return False, None


def _segment_after(text: str, pos: int) -> str:
    """The rest of the line after `pos` (or the next non-empty line: "Final Answer\\n42"), to the full stop."""
    line = _line_at(text, pos)
    if not line.strip():  # the answer on the next non-empty line
        pos = text.find("\n", pos)
        while pos != -1 and not line.strip():
            line = _line_at(text, pos + 1)
            pos = text.find("\n", pos + 1)
    line = _head(line.strip(), _MAX_SEGMENT_CHARS)
    if _MATH_CHUNK_RE.match(line):
        return line  # "$x = 3.5$." must not be cut at the decimal point
    sentence = re.split(r"\.(?:\s|$)", line, maxsplit=1)[0].strip()
    return re.sub(r"(?<=\d)!$", "", sentence)  # "The answer is 5!" is excited, not 120


def _line_at(text: str, pos: int) -> str:
    end = text.find("\n", pos)
    return text[pos : end if end != -1 else len(text)]


def _segment_value(segment: str) -> tuple[bool, int | None]:
    """(found, value) for what follows a phrase. Found when it starts with math or a number;
    prose ("the final answer should be checked") is not an answer, and the search goes on."""
    if _SEVERAL_NUMBERS_RE.match(segment):
        return True, None  # "3 and 5", "$2$ or $3$": two answers are no integer answer
    chunk = _MATH_CHUNK_RE.match(segment)
    if chunk and not _WORD_RE.search(_chunk_text(chunk)):
        return True, _latex_to_int(_chunk_text(chunk))  # "$\frac{1}{2}$" decides: None
    lead = _LEADING_NUM_RE.match(segment)  # "42 apples", "$18 per day", "72, since ..."
    if re.search(r"[\d\\]", segment) and not _WORD_RE.search(segment.replace("\\text", "")):
        value = _latex_to_int(segment)  # pure math: "1{,}000", "\frac{12}{4}", "x = 5"
        return True, value if value is not None or lead is None else _latex_to_int(lead.group(1))
    if lead:
        return True, _latex_to_int(lead.group(1))
    return False, None


def _chunk_text(m: re.Match) -> str:
    return next(g for g in m.groups() if g is not None)


def _from_final_lines(text: str) -> int | None:
    """The last number (or math chunk) of the last line that has a digit, within the final few lines."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    for line in list(reversed(lines))[:_MAX_LOOKBACK_LINES]:
        if re.search(r"\d", line):
            return _last_value_in_line(_tail(line, _MAX_LINE_CHARS))
    return None


def _prose_and_output_lines(text: str) -> list[str]:
    """Lines outside code blocks, plus the lines of ```output blocks (the program's result).

    Code is dropped: a `\\boxed` in a print call or "# the answer is 5" in a comment is no answer, and
    a block left open (generation cut mid-code, or stopped at "```output") drops everything after it.
    """
    kept, block = [], None  # block: None outside a fence, else its label ("python", "output", "")
    for line in text.split("\n"):
        fence = _FENCE_RE.match(line)
        if fence and len(line.strip()) > 6 and line.rstrip().endswith("```"):
            continue  # "```print(1)```" on one line opens nothing
        if fence:
            block = fence.group(1).lower() if block is None else None
        elif block is None or block == "output":
            kept.append(line)
    return kept


def _last_value_in_line(line: str) -> int | None:
    """Whichever comes last: a `$...$` chunk (its value) or a bare number outside chunks. One that
    follows another number in a list ("1, 2, and 3", "$4$ and $9$") has no value: several answers."""
    candidates: list[tuple[int, str]] = []
    chunks = list(_MATH_CHUNK_RE.finditer(line))
    for previous, c in zip([None, *chunks], chunks, strict=False):
        if re.search(r"\d", _chunk_text(c)):  # "$n$" in "42 is the value of $n$" is no answer
            candidates.append((c.end(), "" if _listed_chunks(line, previous, c) else _chunk_text(c)))
    masked = _MATH_CHUNK_RE.sub(lambda c: " " * len(c.group(0)), line)
    for n in _BARE_NUM_RE.finditer(masked):  # "2x", "1,000.99m", "3,5", "[1, 2, 3]": last, but no value
        listed = _LIST_TAIL_RE.search(masked, 0, n.start())
        candidates.append((n.end(), "" if n.group("glued") or listed else n.group(0)))
    if not candidates:
        return None
    return _latex_to_int(max(candidates, key=lambda c: c[0])[1])


def _listed_chunks(line: str, previous: re.Match | None, chunk: re.Match) -> bool:
    """Whether `chunk` and the one before are two numbers of a list: "$4$ and $9$", not "$x=2$ and $y=3$"."""
    if previous is None or not _NUMBER_CHUNK_RE.fullmatch(_chunk_text(chunk)):
        return False
    gap = _LIST_GAP_WORDS_RE.fullmatch(line, previous.end(), chunk.start())
    return bool(gap) and bool(_NUMBER_CHUNK_RE.fullmatch(_chunk_text(previous)))


# --------------------------------------------------------------------------------------------------
# Competition ranges
# --------------------------------------------------------------------------------------------------

# Inclusive ranges a submitted answer must fall in. AIMO 1 and 2 ask for the answer mod 1000;
# AIMO 3 takes 0..99999 as is (a modulus, if any, is stated in the problem).
COMPETITION_RANGES: dict[str, tuple[int, int]] = {"aimo1": (0, 999), "aimo2": (0, 999), "aimo3": (0, 99999)}
_MODULUS = {"aimo1": 1000, "aimo2": 1000}
_RAW = ("none", "raw")


def normalize_for_competition(answer: int | None, competition: str) -> int | None:
    """Fit an answer to a competition's range.

    "aimo1"/"aimo2": `answer % 1000` (Python's `%`, so -1 -> 999). "aimo3": the answer if it lies
    in 0..99999, else None (there is no implicit modulus, so an out-of-range answer is wrong as it
    stands; None lets the vote ignore it rather than submit a guess). "none"/"raw": unchanged.
    An unknown competition raises ValueError: it is a caller's mistake, not a model's.
    """
    key = competition.strip().lower() if isinstance(competition, str) else competition
    if key not in COMPETITION_RANGES and key not in _RAW:
        raise ValueError(f"competition={competition!r}: expected one of {[*COMPETITION_RANGES, *_RAW]}")
    if answer is None or key in _RAW:
        return answer
    if key in _MODULUS:
        return int(answer) % _MODULUS[key]
    low, high = COMPETITION_RANGES[key]
    return int(answer) if low <= answer <= high else None


# --------------------------------------------------------------------------------------------------
# Self-consistency voting
# --------------------------------------------------------------------------------------------------


@dataclass
class VoteResult:
    """The outcome of a majority vote.

    `count` votes for `answer` out of `total` samples (unparsed ones included), `share` = count/total
    (0.0 when there were none), `counts` maps each parsed answer to its votes in first-seen order.
    A weighted vote also fills `weights`: each answer's summed sample weights (what decided the winner).
    """

    answer: int
    count: int
    total: int
    share: float
    counts: dict[int, int] = field(default_factory=dict)
    weights: dict[int, float] = field(default_factory=dict)


def majority_vote(
    answers: Sequence[int | None], fallback: int = 0, weights: Sequence[float] | None = None
) -> VoteResult:
    """The most common non-None answer; `fallback` with count 0 when none parsed.

    Ties go to the answer that reached the tied count first (scanning in order): the leader only
    changes when another answer gets strictly more votes. So [5, 7, 7, 5] gives 7, the same answer
    an early-stopping loop watching the samples arrive would have held.

    `weights` (one per answer, each in [0, 1], e.g. a sample's confidence) make it a weighted vote: the
    answer with the largest summed weight wins, with the same tie rule.
    """
    if weights is not None and len(weights) != len(answers):
        raise ValueError(f"{len(weights)} weights for {len(answers)} answers")
    counts: dict[int, int] = {}
    tally: dict[int, float] = {}
    leader, lead = fallback, -1.0  # below any tally: the first parsed answer leads, even with weight 0
    for a, w in zip(answers, weights if weights is not None else [1.0] * len(answers), strict=True):
        if a is None:
            continue
        counts[a] = counts.get(a, 0) + 1
        tally[a] = tally.get(a, 0.0) + w
        if tally[a] > lead:
            leader, lead = a, tally[a]
    total = len(answers)
    count = counts.get(leader, 0)
    return VoteResult(
        answer=leader,
        count=count,
        total=total,
        share=count / total if total else 0.0,
        counts=counts,
        weights=tally if weights is not None else {},
    )


def vote_is_decided(
    counts: Mapping[int | None, int] | VoteResult,
    samples_left: int,
    min_votes: int | None = None,
    unbeatable: bool = True,
) -> bool:
    """Whether sampling can stop: the vote's winner can no longer change, or enough samples agree.

    `unbeatable`: True once the runner-up, even given every one of the `samples_left` remaining
    samples, could at most tie the leader (ties keep the leader, see `majority_vote`).
    `min_votes`: True once the leader has that many votes (the AIMO 2 winner stopped at 4-5 agreeing),
    None to disable. None keys in `counts` (unparsed samples) are ignored. A weighted `VoteResult` is
    decided on its weights, each remaining sample able to add at most 1 (`min_votes` still counts samples).
    """
    if isinstance(counts, VoteResult):
        if counts.weights:
            return _weighted_vote_is_decided(counts, samples_left, min_votes, unbeatable)
        counts = counts.counts
    if samples_left < 0:
        raise ValueError(f"samples_left={samples_left}: must be >= 0")
    if min_votes is not None and min_votes < 1:
        raise ValueError(f"min_votes={min_votes}: must be >= 1 or None")
    votes = sorted((n for a, n in counts.items() if a is not None), reverse=True)
    leader = votes[0] if votes else 0
    runner_up = votes[1] if len(votes) > 1 else 0
    if samples_left == 0:
        return True
    if min_votes is not None and leader >= min_votes:
        return True
    return unbeatable and leader > 0 and runner_up + samples_left <= leader


def _weighted_vote_is_decided(
    vote: VoteResult, samples_left: int, min_votes: int | None, unbeatable: bool
) -> bool:
    if samples_left < 0:
        raise ValueError(f"samples_left={samples_left}: must be >= 0")
    if samples_left == 0 or (min_votes is not None and max(vote.counts.values(), default=0) >= min_votes):
        return True
    tallies = sorted(vote.weights.values(), reverse=True)
    leader, runner_up = (tallies + [0.0, 0.0])[:2]
    return unbeatable and leader > 0 and runner_up + samples_left <= leader
