"""Deduplication (drop repeated problems) and decontamination (drop training problems that copy an
evaluation problem), on text normalized so that trivially reformatted copies compare equal.

Decontamination flags a training problem when its normalized text equals an evaluation problem's, or when
enough of its word n-grams (13 by default, as in the GPT-3 and Llama reports) occur in one evaluation
problem: reformatted copies, light paraphrases and copies with a sentence added or a question changed
are caught.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from utils.data import Problem

# Rewrites applied in order before tokenizing: LaTeX spelling variants that render the same.
_REWRITES: list[tuple[re.Pattern, str]] = [
    (re.compile(p), r)
    for p, r in [
        (r"\\[dt]frac", r"\\frac"),
        (r"\\leq?slant|\\leq\b", r"\\le"),
        (r"\\geq?slant|\\geq\b", r"\\ge"),
        (r"\\neq\b", r"\\ne"),
        (r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}", r" \1 "),
        (r"\\(?:left|right|[bB]igg?[lr]?|displaystyle|textstyle|quad|qquad)(?![a-zA-Z])", " "),
        (r"\\(?:begin|end)\s*\{[^{}]*\}", " "),  # environments: equation*, align...
        (r"\\[,;:! ]", " "),  # LaTeX spacing commands
        (
            r"\\(?:overline|underline|mathbf|mathrm|boldsymbol)(?![a-zA-Z])",
            " ",
        ),  # decoration: `\overline{AB}` is AB
        (r"\{,\}|(?<=\d),(?=\d{3}(?!\d))", ""),  # thousands separators: 1{,}000 and 1,000 -> 1000
    ]
]
_DIAGRAM = re.compile(r"\[asy\].*?(?:\[/asy\]|$)", re.DOTALL | re.IGNORECASE)
# Kept tokens: words, numbers (backslashes dropped, so `\frac` -> `frac`) and the operators that change a
# problem's meaning; brackets, `$`, `~` and punctuation are formatting and are dropped.
_TOKEN = re.compile(r"\d+|[^\W\d_]+|[+\-*/=<>^_|!]")  # digits apart from letters: `a^2b`, `\times5`


def tokenize(text: str) -> list[str]:
    """The normalized tokens of `text` (see `normalize_text`)."""
    text = unicodedata.normalize("NFKC", text)
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    return _TOKEN.findall(text.lower())


def normalize_text(text: str) -> str:
    """Lowercased, LaTeX noise (`$`, `\\left`, `\\,`, `\\dfrac`...) and punctuation removed, spaces collapsed.

    Two problems that differ only in formatting normalize to the same string.
    """
    return " ".join(tokenize(text))


# ---------------------------------------------------------------- deduplication


@dataclass
class DedupReport:
    """What `deduplicate` dropped: `duplicates` pairs each dropped id with the id of the copy kept."""

    total: int
    kept: int
    dropped: int
    duplicates: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "kept": self.kept,
            "dropped": self.dropped,
            "duplicates": [list(pair) for pair in self.duplicates],
        }


def deduplicate(problems: Iterable[Problem]) -> tuple[list[Problem], DedupReport]:
    """Drop problems whose normalized text repeats an earlier one's (the first copy is kept)."""
    first: dict[str, str] = {}
    kept, duplicates = [], []
    for problem in problems:
        key = normalize_text(problem.problem)
        if key in first:
            duplicates.append((problem.id, first[key]))
        else:
            first[key] = problem.id
            kept.append(problem)
    total = len(kept) + len(duplicates)
    return kept, DedupReport(total, len(kept), len(duplicates), duplicates)


# ---------------------------------------------------------------- decontamination


@dataclass
class DecontaminationReport:
    """What `decontaminate` dropped.

    `dropped_per_set` counts dropped training problems per evaluation set (a problem matching two sets
    counts in both); `pairs` lists every (train id, eval id) match; `exact` counts the pairs whose
    normalized words are the same, in any order (the rest matched by n-gram overlap).
    """

    total: int
    kept: int
    dropped: int
    dropped_per_set: dict[str, int]
    pairs: list[tuple[str, str]]
    exact: int
    ngram: int
    threshold: float

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "kept": self.kept,
            "dropped": self.dropped,
            "dropped_per_set": dict(self.dropped_per_set),
            "pairs": [list(p) for p in self.pairs],
            "exact": self.exact,
            "ngram": self.ngram,
            "threshold": self.threshold,
        }


def _bag(tokens: list[str]) -> str:
    return " ".join(sorted(tokens))


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams of the prose: Asymptote diagrams share boilerplate code across unrelated problems."""
    tokens = tokenize(_DIAGRAM.sub(" ", text))
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


class _EvalIndex:
    """Evaluation problems indexed by bag of words and by n-gram, for one pass over the training set."""

    def __init__(self, eval_sets: dict[str, list[Problem]], n: int):
        self.n = n
        self.refs: list[tuple[str, str]] = []  # (set name, eval id)
        self.sizes: list[int] = []  # distinct n-grams per eval problem
        self.exact: dict[str, list[int]] = {}  # by bag of words: equal texts, and reordered clauses
        self.grams: dict[tuple[str, ...], list[int]] = {}
        for name, problems in eval_sets.items():
            for problem in problems:
                ref = len(self.refs)
                self.refs.append((name, problem.id))
                self.exact.setdefault(_bag(tokenize(problem.problem)), []).append(ref)
                grams = _ngrams(problem.problem, n)
                self.sizes.append(len(grams))
                for gram in grams:
                    self.grams.setdefault(gram, []).append(ref)

    def matches(self, text: str, threshold: float) -> tuple[list[int], list[int]]:
        """(exact refs, n-gram refs): overlap is the share of the smaller problem's n-grams found in the other."""
        exact = self.exact.get(_bag(tokenize(text)), [])
        grams = _ngrams(text, self.n)
        shared = Counter(ref for gram in grams for ref in self.grams.get(gram, ()))
        close = [
            ref
            for ref, count in shared.items()
            if ref not in exact and count / min(len(grams), self.sizes[ref]) >= threshold
        ]
        return exact, close


def decontaminate(
    train: Iterable[Problem], eval_sets: dict[str, list[Problem]], ngram: int = 13, threshold: float = 0.5
) -> tuple[list[Problem], DecontaminationReport]:
    """Drop training problems that overlap an evaluation problem.

    A match is the same normalized words (in any order: a copy with two clauses swapped), or a share
    >= `threshold` of word `ngram`-grams in common (measured on the shorter of the two problems, so a
    copy with a sentence added is still caught). Problems shorter than `ngram` words only match exactly.
    On MATH this also drops template siblings of test problems (same wording, other numbers): conservative.
    """
    if ngram < 1 or not 0 < threshold <= 1:
        raise ValueError(f"need ngram >= 1 and 0 < threshold <= 1, got ngram={ngram}, threshold={threshold}")
    index = _EvalIndex(eval_sets, ngram)
    kept, pairs, exact_pairs, dropped = [], [], 0, 0
    per_set = dict.fromkeys(eval_sets, 0)
    for problem in train:
        exact, close = index.matches(problem.problem, threshold)
        if not exact and not close:
            kept.append(problem)
            continue
        dropped += 1
        exact_pairs += len(exact)
        pairs += [(problem.id, index.refs[ref][1]) for ref in exact + close]
        for name in {index.refs[ref][0] for ref in exact + close}:
            per_set[name] += 1
    total = len(kept) + dropped
    report = DecontaminationReport(total, len(kept), dropped, per_set, pairs, exact_pairs, ngram, threshold)
    return kept, report
