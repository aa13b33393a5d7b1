"""The submission: a solver, a time budget and the competition's gateway, wired so the run never crashes.

`run_submission` builds the Kaggle `predict` function from any `solver(problem, deadline) -> int`, shares the
time budget over the problems, normalizes every answer for the competition and falls back to 0 whenever the
solver fails (raises, returns None, or the time is gone), so every problem always gets an answer.

CLI (validates the problems file before any model loads):

    python -m utils.submission --competition aimo2 --problems reference.csv --model PATH --out DIR \
        [--time-budget SECONDS] [--samples K] [--mode {reasoning,tools}] [--seed N]
"""

from __future__ import annotations

import argparse
import logging
import operator
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from utils.budget import TimeBudget
from utils.gateway import (
    GatewayResult,
    ProblemsFileError,
    competition_spec,
    is_competition_rerun,
    read_problems,
    serve_or_run_local,
)

log = logging.getLogger(__name__)

Solver = Callable[[str, float], Any]  # solver(problem, deadline on time.monotonic()) -> int (or None)
FALLBACK_ANSWER = 0


@dataclass(frozen=True)
class SolveRecord:
    """One problem as the submission side saw it."""

    id: str
    answer: int
    seconds: float
    allotted: float  # seconds from the start to the budget's deadline
    raw: Any = None  # what the solver returned
    error: str | None = None  # why the fallback was used, if it was


@dataclass
class SubmissionResult:
    """The outcome of `run_submission`. `gateway` is None on a Kaggle rerun (Kaggle keeps the results)."""

    competition: str
    records: list[SolveRecord]
    gateway: GatewayResult | None
    solver_load_seconds: float | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def answers(self) -> dict[str, int]:
        return {r.id: r.answer for r in self.records}

    @property
    def n_fallbacks(self) -> int:
        return sum(r.error is not None for r in self.records)

    @property
    def submission_csv(self) -> Path | None:
        return self.gateway.csv_path if self.gateway else None

    @property
    def n_correct(self) -> int | None:
        return self.gateway.n_correct if self.gateway else None

    @property
    def accuracy(self) -> float | None:
        return self.gateway.accuracy if self.gateway else None


class _Answerer:
    """Turns one problem into one in-range integer, within the budget, whatever the solver does."""

    def __init__(
        self,
        competition: str,
        budget: TimeBudget,
        solver: Solver | None,
        factory: Callable[[], Solver] | None,
    ):
        self.competition, self.budget = competition, budget
        self.solver, self.factory = solver, factory
        self.records: list[SolveRecord] = []
        self.errors: list[str] = []
        self.load_seconds: float | None = None
        self.lock = threading.Lock()  # Kaggle's server uses one worker, but nothing here relies on it

    def answer(self, id_: str, problem: str) -> int:
        with self.lock:
            solver = self._get_solver()  # before the deadline is set: a model load is not one problem's time
            deadline = self.budget.start_problem()
            start = self.budget.clock()
            try:
                raw, error = self._solve(solver, problem, deadline)
            finally:
                seconds = self.budget.finish_problem()
            answer, error = self._normalize(raw, error)
            if error:
                log.warning("%s: fallback answer %d (%s)", id_, answer, error)
            self.records.append(SolveRecord(id_, answer, seconds, deadline - start, raw, error))
            return answer

    def _solve(self, solver: Solver | None, problem: str, deadline: float) -> tuple[Any, str | None]:
        if solver is None:
            return None, "no solver (loading it failed)"
        if self.budget.clock() >= deadline:
            return None, "no time left in the budget"
        try:
            return solver(problem, deadline), None
        except Exception as e:  # the run must go on: any failure becomes the fallback answer
            return None, f"solver raised {type(e).__name__}: {e}"

    def _get_solver(self) -> Solver | None:
        if self.solver is None and self.factory is not None:
            factory, self.factory = (
                self.factory,
                None,
            )  # one attempt: a failed load is not retried per problem
            start = time.monotonic()
            try:
                self.solver = factory()
            except Exception as e:
                self.errors.append(f"solver_factory raised {type(e).__name__}: {e}")
                log.error("loading the solver failed; every answer will be the fallback: %s", e)
            self.load_seconds = time.monotonic() - start
        return self.solver

    def _normalize(self, raw: Any, error: str | None) -> tuple[int, str | None]:
        if error is not None:
            return FALLBACK_ANSWER, error
        if raw is None:
            return FALLBACK_ANSWER, "solver returned None"
        from utils.answers import normalize_for_competition

        if isinstance(raw, bool) or not hasattr(raw, "__index__"):  # ints and numpy ints only
            return FALLBACK_ANSWER, f"solver returned {type(raw).__name__} {raw!r}, not an int"
        try:
            value = normalize_for_competition(operator.index(raw), self.competition)
        except Exception as e:
            return FALLBACK_ANSWER, f"cannot normalize {raw!r}: {type(e).__name__}: {e}"
        if value is None:
            return FALLBACK_ANSWER, f"cannot normalize {raw!r} for {self.competition}"
        return int(value), None


def make_predict(answerer: Callable[[str, str], int]) -> Callable[..., pl.DataFrame]:
    """Kaggle's `predict(id_, problem)` around `answerer(id, problem) -> int`.

    Named `predict` because Kaggle registers the endpoint by the function's name; extra arguments (the
    `answer` column Kaggle's own local gateway passes on a reference CSV) are accepted and ignored.
    """

    def predict(id_: pl.Series, problem: pl.Series, *_ignored: Any) -> pl.DataFrame:
        pid = id_.item(0)
        return pl.DataFrame({"id": [pid], "answer": [answerer(pid, problem.item(0))]})

    return predict


def run_submission(
    solver: Solver | None = None,
    problems_csv: str | os.PathLike | None = None,
    competition: str = "aimo3",
    out_dir: str | os.PathLike = ".",
    time_budget_s: float | None = None,
    *,
    solver_factory: Callable[[], Solver] | None = None,
    reserve_fraction: float = 0.1,
    n_problems: int | None = None,
    **gateway_kwargs: Any,
) -> SubmissionResult:
    """Answer every problem of `problems_csv` through `competition`'s gateway; never raises because of the solver.

    Give `solver` or `solver_factory` (called once, inside the first `predict`, so a model loads after the
    server is up). `time_budget_s` defaults to the competition's limit; each problem's deadline is capped
    at 90% of Kaggle's per-answer limit. `n_problems` defaults to the CSV's rows locally and to the hidden
    set's size on a rerun. Extra keyword arguments go to the gateway (`seed`, `per_answer_limit_s`, ...).
    Contract violations by the gateway (bad file, time limits) still raise `GatewayError`.
    """
    if (solver is None) == (solver_factory is None):
        raise ValueError("give exactly one of solver and solver_factory")
    spec = competition_spec(competition)
    rerun = is_competition_rerun()
    if n_problems is None:
        n_problems = (
            spec.n_hidden_problems if rerun or problems_csv is None else len(read_problems(problems_csv))
        )
    per_answer = gateway_kwargs.get("per_answer_limit_s") or spec.per_answer_limit_s
    budget = TimeBudget(
        time_budget_s or spec.time_limit_s,
        n_problems,
        reserve_fraction,
        max_problem_seconds=0.9 * per_answer if per_answer else None,
    )
    answerer = _Answerer(competition, budget, solver, solver_factory)
    gateway = serve_or_run_local(
        make_predict(answerer.answer), competition, problems_csv, out_dir, **gateway_kwargs
    )
    return SubmissionResult(competition, answerer.records, gateway, answerer.load_seconds, answerer.errors)


# ---------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m utils.submission", description=__doc__.split("\n\n")[0])
    p.add_argument("--competition", required=True, choices=["aimo1", "aimo2", "aimo3"])
    p.add_argument(
        "--problems", required=True, type=Path, help="CSV with columns id, problem (answer optional)"
    )
    p.add_argument("--model", required=True, help="model folder or Kaggle Model handle, for utils.solver")
    p.add_argument("--out", required=True, type=Path, help="folder for submission.csv (and .parquet)")
    p.add_argument(
        "--time-budget", type=float, default=None, help="seconds for all problems (default: the limit)"
    )
    p.add_argument("--samples", type=int, default=8, help="samples per problem (majority vote)")
    p.add_argument("--mode", choices=["reasoning", "tools"], default="reasoning")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 for a bad problems file or bad arguments)."""
    args = _parser().parse_args(argv)
    try:
        rows = read_problems(args.problems)
    except ProblemsFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.time_budget is not None and args.time_budget <= 0:
        print(f"error: --time-budget must be positive, got {args.time_budget}", file=sys.stderr)
        return 2
    if args.samples < 1:
        print(f"error: --samples must be at least 1, got {args.samples}", file=sys.stderr)
        return 2

    def load_solver() -> Solver:
        from utils.modeling import quiet_libraries
        from utils.solver import build_solver  # heavy imports only once a problem is waiting

        quiet_libraries()  # no loading bars between the CLI's own lines
        return build_solver(
            model=args.model,
            mode=args.mode,
            samples=args.samples,
            seed=args.seed,
            competition=args.competition,
        )

    result = run_submission(
        problems_csv=args.problems,
        competition=args.competition,
        out_dir=args.out,
        time_budget_s=args.time_budget,
        solver_factory=load_solver,
        seed=args.seed,
    )
    _print_summary(result, len(rows))
    return 1 if result.errors else 0


def _print_summary(result: SubmissionResult, n_rows: int) -> None:
    for error in result.errors:
        print(f"error: {error}", file=sys.stderr)
    if result.gateway is None:
        return
    score = "" if result.n_correct is None else f", {result.n_correct}/{n_rows} correct"
    print(
        f"{result.submission_csv}: {n_rows} answers in {result.gateway.total_seconds:.1f} s, "
        f"{result.n_fallbacks} fallback(s){score}"
    )


if __name__ == "__main__":
    sys.exit(main())
