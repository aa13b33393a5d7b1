"""A run's time budget, shared out over the problems still to come.

A Kaggle submission has one wall-clock limit for all problems (AIMO 2/3: 5 h for 50). A fixed slice per
problem wastes the time easy problems leave over; `TimeBudget` instead gives each problem an equal share of
what is left (after a safety reserve), so unused time flows to later problems, and no deadline it hands out
ever lies past the end of the total.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProblemSlot:
    """One problem's share: when it started, its deadline and, once finished, the time it took."""

    index: int
    started: float
    deadline: float
    finished: float | None = None

    @property
    def allotted(self) -> float:
        return self.deadline - self.started

    @property
    def elapsed(self) -> float | None:
        return None if self.finished is None else self.finished - self.started


class TimeBudget:
    """A total budget of `total_seconds` for `n_problems`, with a reserve kept back for the end.

    `start_problem()` returns an absolute deadline on `clock` (by default `time.monotonic()`):
    now + (time left - reserve) / problems left, capped by `max_problem_seconds` (e.g. Kaggle's
    per-answer limit) and by the end of the total. Once the time left falls to the reserve, deadlines
    equal "now": the caller should answer at once (the reserve is what pays for those fast answers).
    More problems than announced are tolerated: each extra one shares what is left as if it were the last.
    """

    def __init__(
        self,
        total_seconds: float,
        n_problems: int,
        reserve_fraction: float = 0.1,
        reserve_seconds: float | None = None,
        *,
        max_problem_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not total_seconds > 0:
            raise ValueError(f"total_seconds must be positive, got {total_seconds!r}")
        if int(n_problems) != n_problems or n_problems < 1:
            raise ValueError(f"n_problems must be a positive integer, got {n_problems!r}")
        if reserve_seconds is None:
            if not 0 <= reserve_fraction < 1:
                raise ValueError(f"reserve_fraction must be in [0, 1), got {reserve_fraction!r}")
            reserve_seconds = reserve_fraction * total_seconds
        if not 0 <= reserve_seconds < total_seconds:
            raise ValueError(
                f"reserve_seconds must be in [0, total_seconds={total_seconds}), got {reserve_seconds!r}"
            )
        if max_problem_seconds is not None and not max_problem_seconds > 0:
            raise ValueError(f"max_problem_seconds must be positive, got {max_problem_seconds!r}")
        self.total_seconds = float(total_seconds)
        self.n_problems = int(n_problems)
        self.reserve_seconds = float(reserve_seconds)
        self.max_problem_seconds = max_problem_seconds
        self.clock = clock
        self.start = clock()
        self.end = self.start + self.total_seconds
        self.slots: list[ProblemSlot] = []
        self._current: ProblemSlot | None = None

    @property
    def problems_done(self) -> int:
        return sum(slot.finished is not None for slot in self.slots)

    @property
    def problems_left(self) -> int:
        """Problems not yet finished (the one in progress counts); at least 1 once past the announced count."""
        return max(1, self.n_problems - self.problems_done)

    def seconds_left(self) -> float:
        """Time left of the total (never negative)."""
        return max(0.0, self.end - self.clock())

    def elapsed(self) -> float:
        return self.clock() - self.start

    def start_problem(self) -> float:
        """Start the next problem and return its absolute deadline on the budget's clock."""
        if self._current is not None:
            raise RuntimeError(
                f"problem {self._current.index} is still in progress: call finish_problem() first"
            )
        now = self.clock()
        share = max(0.0, self.end - now - self.reserve_seconds) / self.problems_left
        if self.max_problem_seconds is not None:
            share = min(share, self.max_problem_seconds)
        deadline = min(now + share, max(now, self.end))
        self._current = ProblemSlot(index=len(self.slots), started=now, deadline=deadline)
        self.slots.append(self._current)
        return deadline

    def finish_problem(self) -> float:
        """Mark the problem in progress finished; returns the seconds it took."""
        if self._current is None:
            raise RuntimeError(
                "finish_problem() called with no problem in progress: call start_problem() first"
            )
        done = ProblemSlot(self._current.index, self._current.started, self._current.deadline, self.clock())
        self.slots[done.index] = done
        self._current = None
        return done.elapsed

    def __repr__(self) -> str:
        return (
            f"TimeBudget(total={self.total_seconds:.0f}s, reserve={self.reserve_seconds:.0f}s, "
            f"done={self.problems_done}/{self.n_problems}, left={self.seconds_left():.0f}s)"
        )
