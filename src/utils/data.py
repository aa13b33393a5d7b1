"""The record schema every data set is loaded into, and the loaders (one per public data set)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Problem:
    """One math problem, whatever its source.

    `answer` is the integer answer, or None when the source's answer is not an integer
    (a MATH answer such as `\\frac{1}{2}`); `metadata` keeps source-specific fields (level, year...).
    """

    id: str
    source: str
    problem: str
    solution: str | None = None
    answer: int | None = None
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict) -> Problem:
        return cls(**{k: row[k] for k in ("id", "source", "problem", "solution", "answer", "metadata") if k in row})
