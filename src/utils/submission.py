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
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from utils.budget import TimeBudget
from utils.gateway import (
    GatewayError,
    GatewayResult,
    ProblemsFileError,
    cell_text,
    competition_spec,
    first_cell,
    is_competition_rerun,
    read_problems,
    serve_or_run_local,
)
from utils.watchdog import call_with_timeout

log = logging.getLogger(__name__)

Solver = Callable[[str, float], Any]  # solver(problem, deadline on time.monotonic()) -> int (or None)
FALLBACK_ANSWER = 0
# How long past its deadline a solver may run before its answer is given up for the fallback. A solver that
# honours its deadline stops within a decoding step or two; one stuck where no check runs is abandoned.
SOLVER_GRACE_S = 3.0  # longer than SolverConfig.grace_s (2 s), so a Solver answers from its own samples first


class SolverLoadError(RuntimeError):
    """The solver (the model) could not be loaded, and the run was asked to stop rather than answer 0s."""


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
        stop_on_load_error: bool = False,
        grace_s: float = SOLVER_GRACE_S,
    ):
        self.competition, self.budget = competition, budget
        self.solver, self.factory = solver, factory
        self.stop_on_load_error, self.grace_s = stop_on_load_error, grace_s
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
        # A watchdog, not trust: a solver stuck where it never checks its deadline is abandoned at
        # deadline + grace (see utils.watchdog), so one stall cannot eat the other problems' time.
        timeout = deadline + self.grace_s - self.budget.clock()
        outcome = call_with_timeout(solver, (problem, deadline), timeout, name="solver")
        if not outcome.finished:
            return None, f"solver still running {self.grace_s:g} s past its deadline (abandoned)"
        if outcome.error is None:
            return outcome.value, None
        if not isinstance(outcome.error, Exception):
            raise outcome.error  # KeyboardInterrupt, SystemExit: not the solver's failure to absorb
        e = outcome.error  # the run must go on: any failure becomes the fallback answer
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
                if self.stop_on_load_error:
                    raise SolverLoadError(f"{type(e).__name__}: {e}") from e
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
    The arguments may be one-row polars or pandas Series or bare values, of any type: Kaggle's gateway
    infers column types, so an empty problem comes as None and a problem of digits as an int. The answerer
    always gets text; the reply echoes the id as it came.
    """

    def predict(id_: Any, problem: Any, *_ignored: Any) -> pl.DataFrame:
        pid = first_cell(id_)
        if hasattr(pid, "item") and not isinstance(pid, (str, bytes)):
            pid = pid.item()  # a numpy scalar from pandas: polars wants a plain value
        return pl.DataFrame({"id": [pid], "answer": [answerer(cell_text(pid), cell_text(problem))]})

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
    stop_on_load_error: bool = False,
    solver_grace_s: float = SOLVER_GRACE_S,
    **gateway_kwargs: Any,
) -> SubmissionResult:
    """Answer every problem of `problems_csv` through `competition`'s gateway; never raises because of the solver.

    Give `solver` or `solver_factory` (called once, inside the first `predict`, so a model loads after the
    server is up). `time_budget_s` defaults to the competition's limit; each problem's deadline is capped
    at 90% of Kaggle's per-answer limit. `n_problems` defaults to the CSV's rows locally and to the hidden
    set's size on a rerun. Extra keyword arguments go to the gateway (`seed`, `per_answer_limit_s`, ...).
    Contract violations by the gateway (bad file, time limits) still raise `GatewayError`.

    A solver still running `solver_grace_s` past a problem's deadline is abandoned for the fallback answer.
    A factory that fails gives every problem the fallback (a Kaggle rerun must still submit), unless
    `stop_on_load_error`: then `SolverLoadError` is raised and no submission is written.
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
    answerer = _Answerer(competition, budget, solver, solver_factory, stop_on_load_error, solver_grace_s)
    try:
        gateway = serve_or_run_local(
            make_predict(answerer.answer), competition, problems_csv, out_dir, **gateway_kwargs
        )
    except GatewayError as e:
        if isinstance(e.__cause__, SolverLoadError):  # the gateway wraps what predict raised
            raise e.__cause__ from e.__cause__.__cause__  # keeps its own cause: why the load failed
        raise
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


class UsageError(ValueError):
    """An argument the CLI cannot run with; found before any model loads."""


SUBMISSION_FILES = ("submission.csv", "submission.parquet")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code: 0 done, 1 the run failed (the model did not load, the gateway
    refused a reply), 2 bad arguments or a bad problems file. Every failure prints one line on stderr and
    leaves no submission in --out (a previous run's is moved aside to `<name>.previous`); a successful run
    writes its files under a temporary name and renames them into place at the end."""
    args = _parser().parse_args(argv)
    _retire_previous_submission(args.out)
    try:
        rows = _check_arguments(args)
    except (ProblemsFileError, UsageError) as e:
        return _fail(e, 2)

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

    staging = Path(tempfile.mkdtemp(prefix=".submission-run-", dir=args.out))
    try:
        result = run_submission(
            problems_csv=args.problems,
            competition=args.competition,
            out_dir=staging,
            time_budget_s=args.time_budget,
            solver_factory=load_solver,
            stop_on_load_error=True,
            seed=args.seed,
        )
        _publish(result, staging, args.out)
    except SolverLoadError as e:
        return _fail(f"cannot load the model {args.model!r}: {e}", 1)
    except GatewayError as e:
        return _fail(e, 1)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _print_summary(result, len(rows))
    return 1 if result.errors else 0


def _check_arguments(args: argparse.Namespace) -> list:
    """Everything checkable before the model loads: numbers, the problems file, the output folder."""
    if args.time_budget is not None and not 0 < args.time_budget < float("inf"):
        raise UsageError(f"--time-budget must be a positive number of seconds, got {args.time_budget}")
    if args.samples < 1:
        raise UsageError(f"--samples must be at least 1, got {args.samples}")
    model = Path(args.model).expanduser()
    if (model.is_absolute() or args.model.startswith((".", "~"))) and not model.exists():
        raise UsageError(f"--model {args.model}: no such folder")
    rows = read_problems(args.problems)
    _prepare_out_dir(args.out)
    return rows


def _prepare_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: the folder is not writable")
    for name in SUBMISSION_FILES:
        if (out / name).is_dir():
            raise UsageError(f"--out {out}: {name} there is a folder; the submission cannot be written")


def _retire_previous_submission(out: Path) -> None:
    """Move a previous run's submission aside, so that only this run's success can leave one in --out."""
    for name in SUBMISSION_FILES:
        old = out / name
        if old.is_file():
            try:
                os.replace(old, out / f"{name}.previous")
            except OSError:
                continue  # an unwritable --out: the checks that follow report it
            print(f"moved the previous {old} to {name}.previous")


def _publish(result: SubmissionResult, staging: Path, out: Path) -> None:
    """Rename the finished run's files from the staging folder into --out (the parquet, Kaggle's, last)."""
    if result.gateway is None:
        return
    for name in ("submission.csv", "submission.parquet"):
        if (staging / name).is_file():
            os.replace(staging / name, out / name)
    result.gateway.csv_path = out / "submission.csv"
    if result.gateway.parquet_path is not None:
        result.gateway.parquet_path = out / "submission.parquet"


def _fail(error: object, code: int) -> int:
    """One line on stderr, whatever the message holds (library errors can span lines)."""
    text = " ".join(str(error).split())
    print(f"error: {text[:1000]}", file=sys.stderr)
    return code


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
