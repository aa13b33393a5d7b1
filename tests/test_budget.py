"""TimeBudget: shares, carry-over of unused time, the reserve, and that the total is never exceeded."""

from __future__ import annotations

import random

import pytest

from utils.budget import TimeBudget


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def test_first_share_is_total_minus_reserve_over_problems():
    clock = FakeClock()
    budget = TimeBudget(1000, 10, reserve_fraction=0.1, clock=clock)
    assert budget.start_problem() == pytest.approx(1000 + 90)
    assert budget.seconds_left() == 1000


def test_unused_time_flows_to_later_problems():
    clock = FakeClock(0)
    budget = TimeBudget(100, 4, reserve_seconds=0, clock=clock)
    assert budget.start_problem() == pytest.approx(25)
    clock.advance(5)  # finished 20 s early
    assert budget.finish_problem() == pytest.approx(5)
    # 95 s left over 3 problems
    assert budget.start_problem() == pytest.approx(5 + 95 / 3)
    assert budget.problems_left == 3


def test_overrun_shrinks_later_shares_and_reserve_is_kept_back():
    clock = FakeClock(0)
    budget = TimeBudget(100, 2, reserve_seconds=10, clock=clock)
    assert budget.start_problem() == pytest.approx(45)
    clock.advance(85)  # a solver ignored its deadline
    budget.finish_problem()
    # 15 s left, 10 of them reserve: 5 s for the last problem
    assert budget.start_problem() == pytest.approx(90)


def test_past_the_reserve_deadline_is_now():
    clock = FakeClock(0)
    budget = TimeBudget(100, 3, reserve_seconds=20, clock=clock)
    budget.start_problem()
    clock.advance(95)
    budget.finish_problem()
    assert budget.start_problem() == 95
    clock.advance(10)
    budget.finish_problem()
    assert budget.seconds_left() == 0
    assert budget.start_problem() == 105  # past the end: answer immediately


def test_max_problem_seconds_caps_the_share():
    clock = FakeClock(0)
    budget = TimeBudget(10_000, 2, reserve_seconds=0, max_problem_seconds=30, clock=clock)
    assert budget.start_problem() == 30


@pytest.mark.parametrize("seed", range(20))
def test_solvers_that_use_their_deadlines_never_exceed_the_total(seed):
    rng = random.Random(seed)
    clock = FakeClock(rng.uniform(0, 1e6))
    total, n = rng.uniform(10, 20_000), rng.randint(1, 60)
    budget = TimeBudget(total, n, reserve_fraction=rng.choice([0.0, 0.05, 0.3]), clock=clock)
    start = clock()
    for _ in range(n + rng.randint(0, 3)):  # a few more problems than announced too
        deadline = budget.start_problem()
        assert clock() <= deadline <= start + total
        clock.advance(rng.uniform(0, 1) * (deadline - clock()))  # stop at or before the deadline
        budget.finish_problem()
    assert clock() - start <= total + 1e-9


def test_misuse_raises_with_clear_messages():
    budget = TimeBudget(10, 1, clock=FakeClock())
    with pytest.raises(RuntimeError, match="start_problem"):
        budget.finish_problem()
    budget.start_problem()
    with pytest.raises(RuntimeError, match="still in progress"):
        budget.start_problem()
    with pytest.raises(ValueError, match="n_problems"):
        TimeBudget(10, 0)
    with pytest.raises(ValueError, match="reserve_seconds"):
        TimeBudget(10, 1, reserve_seconds=10)
    with pytest.raises(ValueError, match="total_seconds"):
        TimeBudget(0, 1)
