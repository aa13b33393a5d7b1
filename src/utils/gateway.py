"""A local stand-in for Kaggle's competition gateways, with the same contract, and the switch to the real one.

AIMO 2/3 (`kaggle_evaluation`): the gateway reads the problems CSV, shuffles it, and calls the user's function
named exactly `predict` once per problem with one-row polars Series `(id_, problem)`, one at a time, in a
server worker thread. Each reply must be a one-row DataFrame (polars or pandas) with columns `id` (the id asked
for) and `answer`; the replies go to `submission.parquet`. The first call has no time limit (the model loads
there); every later one must come back within the per-answer limit (AIMO 2: 30 min; AIMO 3: 9 h). The server
must be up within 15 min of the notebook starting.

What `LocalGateway` adds or tightens, so that mistakes show up here rather than after a 5-hour rerun:
the answer must be an integer in the competition's range (Kaggle would just score it wrong), the reply must
have exactly the columns `id` and `answer`, a reply of the wrong kind names the problem, the startup limit is
an error (Kaggle's local gateway only warns; its rerun fails), and an `answer` column in the CSV is kept
for scoring rather than passed to `predict` (Kaggle's passes it as a third argument).

AIMO 1 (the `aimo` module): `make_env(...).iter_test()` yields one-row pandas `(test, submission)` frames and
refuses to go on until `env.predict(submission)` was called.
"""

from __future__ import annotations

import csv
import importlib
import io
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl

from utils.answers import COMPETITION_RANGES
from utils.io import TextFileError, atomic_write_bytes, csv_error_reason, read_text
from utils.paths import find_competition_dir
from utils.watchdog import call_with_timeout

log = logging.getLogger(__name__)

STARTUP_LIMIT_S = 15 * 60
RERUN_ENV = "KAGGLE_IS_COMPETITION_RERUN"


class GatewayError(RuntimeError):
    """The run broke the competition's contract (a bad reply, a time limit, a bad problems file...)."""


class ProblemsFileError(GatewayError, ValueError):
    """The problems CSV is unusable; the message names the file and the row."""


@dataclass(frozen=True)
class CompetitionSpec:
    """What differs between the three competitions."""

    name: str
    slug: str
    max_answer: int
    time_limit_s: float  # the whole rerun
    per_answer_limit_s: float | None  # each answer after the first (None: no separate limit)
    n_hidden_problems: int = 50
    server_module: str | None = None  # kaggle_evaluation module holding the inference server
    server_class: str | None = None


COMPETITIONS: dict[str, CompetitionSpec] = {
    "aimo1": CompetitionSpec("aimo1", "ai-mathematical-olympiad-prize", COMPETITION_RANGES["aimo1"][1], 9 * 3600, None),
    "aimo2": CompetitionSpec(
        "aimo2", "ai-mathematical-olympiad-progress-prize-2", COMPETITION_RANGES["aimo2"][1], 5 * 3600, 30 * 60,
        server_module="kaggle_evaluation.aimo_2_inference_server", server_class="AIMO2InferenceServer",
    ),
    "aimo3": CompetitionSpec(
        "aimo3", "ai-mathematical-olympiad-progress-prize-3", COMPETITION_RANGES["aimo3"][1], 5 * 3600, 9 * 3600,
        server_module="kaggle_evaluation.aimo_3_inference_server", server_class="AIMO3InferenceServer",
    ),
}  # fmt: skip


def competition_spec(competition: str) -> CompetitionSpec:
    """The spec of `aimo1`, `aimo2` or `aimo3`."""
    try:
        return COMPETITIONS[competition]
    except KeyError:
        raise ValueError(
            f"unknown competition {competition!r}: expected one of {sorted(COMPETITIONS)}"
        ) from None


def is_competition_rerun() -> bool:
    """True only while Kaggle re-runs the notebook on the hidden test set."""
    return bool(os.environ.get(RERUN_ENV))


# ---------------------------------------------------------------------------------------------- problems file


@dataclass(frozen=True)
class ProblemRow:
    id: str
    problem: str
    answer: int | None  # from an optional `answer` column, for scoring only
    line: int  # line of the CSV where the record starts


def read_problems(path: str | os.PathLike) -> list[ProblemRow]:
    """Read and check a Kaggle problems CSV (`id`, `problem`, optional `answer`).

    Raises `ProblemsFileError` naming the file (and the line, where there is one) on: a missing or
    unreadable file, a folder, an empty file, a binary file (NUL bytes), text that is not UTF-8, an
    unterminated quote, missing or repeated columns, a row with more values than the header, an empty id,
    a duplicate id, an empty problem, a non-integer answer, or no rows at all.
    """
    path = Path(path)
    try:
        text = read_text(path, "problems file")
    except TextFileError as e:
        raise ProblemsFileError(str(e)) from None
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    rows: list[ProblemRow] = []
    seen: dict[str, int] = {}
    line = 1  # where the record being read starts
    try:
        header = reader.fieldnames
        if not header:
            raise ProblemsFileError(f"{path}: empty file (no header line; expected columns id, problem)")
        _check_header(path, header)
        line = reader.line_num + 1
        for record in reader:
            if None in record:  # DictReader puts surplus values under the key None
                raise ProblemsFileError(
                    f"{path}:{line} (row {len(rows) + 1}): {len(header) + len(record[None])} values, "
                    f"the header has {len(header)} (an unquoted comma?)"
                )
            rows.append(_check_record(path, line, record, seen))
            line = reader.line_num + 1
    except csv.Error as e:
        raise ProblemsFileError(f"{path}:{line}: {csv_error_reason(e)}") from None
    if not rows:
        raise ProblemsFileError(f"{path}: no problems (only a header)")
    return rows


def _check_header(path: Path, header: list[str]) -> None:
    missing = [c for c in ("id", "problem") if c not in header]
    if missing:
        raise ProblemsFileError(f"{path}:1: missing column(s) {missing}; header is {header}")
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise ProblemsFileError(f"{path}:1: repeated column(s) {repeated}; header is {header}")


def _check_record(path: Path, line: int, record: dict, seen: dict[str, int]) -> ProblemRow:
    where = f"{path}:{line} (row {len(seen) + 1})"
    pid, problem = (record.get("id") or "").strip(), (record.get("problem") or "").strip()
    if not pid:
        raise ProblemsFileError(f"{where}: empty id")
    if pid in seen:
        raise ProblemsFileError(f"{where}: duplicate id {pid!r} (first at line {seen[pid]})")
    if not problem:
        raise ProblemsFileError(f"{where}: empty problem for id {pid!r}")
    seen[pid] = line
    answer = None
    if "answer" in record:
        text = (record["answer"] or "").strip()
        try:
            answer = int(text)
        except ValueError:
            raise ProblemsFileError(f"{where}: answer {text!r} for id {pid!r} is not an integer") from None
    return ProblemRow(pid, problem, answer, line)


# ---------------------------------------------------------------------------------------------- arguments


def first_cell(value: Any) -> Any:
    """The one value a gateway argument carries: Kaggle hands one-row polars Series, AIMO 1 pandas frames,
    and a caller may pass the bare value. Containers of no rows give None."""
    if isinstance(value, (pl.DataFrame, pd.DataFrame)):
        value = value[value.columns[0]] if len(value.columns) else []
    if isinstance(value, pl.Series):
        return value.item(0) if len(value) else None
    if isinstance(value, pd.Series):
        return value.iloc[0] if len(value) else None
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def cell_text(value: Any) -> str:
    """A gateway argument as text, whatever its type. Kaggle's gateway reads the CSV with type inference,
    so an empty problem arrives as None (pandas: NaN) and a problem of digits as an int: "" and "12"."""
    value = first_cell(value)
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):  # None, NaN, pd.NA
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 12.0: a column of digits with a gap in it, read as floats
    return str(value)


# ---------------------------------------------------------------------------------------------- replies


def validate_reply(reply: Any, id_: str, spec: CompetitionSpec) -> int:
    """Check one `predict` reply against the contract and return its answer as an int."""
    where = f"predict's reply for id {id_!r}"
    if isinstance(reply, pd.DataFrame):
        reply = pl.from_pandas(reply)
    if not isinstance(reply, pl.DataFrame):
        raise GatewayError(
            f"{where} is a {type(reply).__name__}, not a DataFrame (a bare int fails on Kaggle too): "
            f"return pl.DataFrame({{'id': [id_.item(0)], 'answer': [n]}})"
        )
    if reply.height != 1:
        raise GatewayError(f"{where} has {reply.height} rows; expected exactly 1")
    if sorted(reply.columns) != ["answer", "id"]:
        raise GatewayError(f"{where} has columns {reply.columns}; expected exactly ['id', 'answer']")
    if reply["id"].item(0) != id_:
        raise GatewayError(f"{where} has id {reply['id'].item(0)!r}; expected {id_!r}")
    answer, dtype = reply["answer"].item(0), reply.schema["answer"]
    if answer is None or not dtype.is_integer():
        raise GatewayError(f"{where} has answer {answer!r} of type {dtype}; expected an integer")
    if not 0 <= answer <= spec.max_answer:
        raise GatewayError(f"{where} has answer {answer}, outside {spec.name}'s range 0..{spec.max_answer}")
    return int(answer)


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ProblemTiming:
    id: str
    seconds: float
    answer: int
    expected: int | None = None

    @property
    def correct(self) -> bool | None:
        return None if self.expected is None else self.answer == self.expected


@dataclass
class GatewayResult:
    """What a local run produced: the submission, per-problem timings (in call order) and, given answers, a score."""

    competition: str
    submission: pl.DataFrame
    timings: list[ProblemTiming]
    startup_seconds: float
    csv_path: Path
    parquet_path: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n_correct(self) -> int | None:
        """Correct answers, when the CSV had an `answer` column (the leaderboard's score)."""
        if any(t.expected is None for t in self.timings):
            return None
        return sum(bool(t.correct) for t in self.timings)

    @property
    def accuracy(self) -> float | None:
        n = self.n_correct
        return None if n is None else n / len(self.timings)

    @property
    def total_seconds(self) -> float:
        return sum(t.seconds for t in self.timings)


def _write_submission(out_dir: Path, frame: pl.DataFrame, parquet: bool) -> tuple[Path, Path | None]:
    csv_buf, parquet_path = io.BytesIO(), None
    frame.write_csv(csv_buf)
    csv_path = atomic_write_bytes(out_dir / "submission.csv", csv_buf.getvalue())
    if parquet:
        pq_buf = io.BytesIO()
        frame.write_parquet(pq_buf)
        parquet_path = atomic_write_bytes(out_dir / "submission.parquet", pq_buf.getvalue())
    return csv_path, parquet_path


def _submission_frame(timings: list[ProblemTiming]) -> pl.DataFrame:
    return pl.DataFrame(
        {"id": [t.id for t in timings], "answer": [t.answer for t in timings]},
        schema={"id": pl.String, "answer": pl.Int64},
    )


def _shuffled(rows: list[ProblemRow], seed: int | None) -> list[ProblemRow]:
    # Kaggle draws a fresh seed from system entropy each run; a fixed seed makes local runs repeatable.
    seed = int.from_bytes(os.urandom(4), "big") if seed is None else seed
    order = pl.Series(range(len(rows))).sample(fraction=1.0, shuffle=True, seed=seed).to_list()
    return [rows[i] for i in order]


# ---------------------------------------------------------------------------------------------- AIMO 2/3


class LocalGateway:
    """Kaggle's AIMO 2/3 gateway, run in-process: `LocalGateway(predict, "test.csv").run()`.

    `predict` must be a function named `predict` (Kaggle registers the endpoint by name). It runs in a
    worker thread, as under Kaggle's gRPC server, so code that only works in the main thread (signal
    alarms) fails here as it would there. A call past its limit raises `GatewayError`; its daemon thread
    cannot be killed and is left to finish in the background.

    Startup: the time from `start_time` (by default this object's creation; to be faithful, pass the
    notebook's start, read from `clock` in its first cell) to the first `predict` call must stay under
    `startup_limit_s`.
    Time limits are measured on `clock`, and the per-answer limit is also enforced in real time.
    """

    def __init__(
        self,
        predict: Callable[..., Any],
        problems_csv: str | os.PathLike,
        competition: str = "aimo3",
        *,
        out_dir: str | os.PathLike = ".",
        startup_limit_s: float = STARTUP_LIMIT_S,
        per_answer_limit_s: float | None = None,
        seed: int | None = None,
        start_time: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = competition_spec(competition)
        if self.spec.server_module is None:
            raise GatewayError(
                f"{competition} has no kaggle_evaluation gateway: use make_env() (the aimo module)"
            )
        if getattr(predict, "__name__", None) != "predict":
            raise GatewayError(
                f"the function passed is named {getattr(predict, '__name__', type(predict).__name__)!r}: "
                "Kaggle registers endpoints by function name, so it must be a function named exactly 'predict'"
            )
        self.predict = predict
        self.rows = read_problems(problems_csv)
        self.out_dir = Path(out_dir)
        self.startup_limit_s = startup_limit_s
        self.per_answer_limit_s = (
            per_answer_limit_s if per_answer_limit_s is not None else self.spec.per_answer_limit_s
        )
        self.seed = seed
        self.clock = clock
        self.start_time = clock() if start_time is None else start_time

    def run(self) -> GatewayResult:
        """Serve every problem, validate every reply, write the submission files; raises `GatewayError`."""
        timings, startup = [], 0.0
        for k, row in enumerate(_shuffled(self.rows, self.seed)):
            if k == 0:
                startup = self._check_startup()
            timings.append(self._serve_one(row, first=k == 0))
        submission = _submission_frame(timings)
        csv_path, parquet_path = _write_submission(self.out_dir, submission, parquet=True)
        return GatewayResult(self.spec.name, submission, timings, startup, csv_path, parquet_path)

    def _check_startup(self) -> float:
        startup = self.clock() - self.start_time
        if startup > self.startup_limit_s:
            raise GatewayError(
                f"the first predict call came {startup:.0f} s after the start, over the {self.startup_limit_s:.0f} s "
                "startup limit: start the server first and load the model lazily inside the first predict call"
            )
        return startup

    def _serve_one(self, row: ProblemRow, first: bool) -> ProblemTiming:
        # The first call may load the model: Kaggle sets no deadline on it.
        limit = None if first else self.per_answer_limit_s
        args = (pl.Series("id", [row.id]), pl.Series("problem", [row.problem]))
        started = self.clock()
        outcome = call_with_timeout(self.predict, args, limit, name="inference-server")
        if not outcome.finished:
            raise self._too_slow(row, limit)
        reply, error = outcome.value, outcome.error
        if error is not None:
            raise GatewayError(f"predict raised {type(error).__name__} for id {row.id!r}: {error}") from error
        seconds = self.clock() - started
        if limit is not None and seconds > limit:
            raise self._too_slow(row, limit)
        answer = validate_reply(reply, row.id, self.spec)
        log.info("%s: answer %d in %.1f s", row.id, answer, seconds)
        return ProblemTiming(row.id, seconds, answer, row.answer)

    def _too_slow(self, row: ProblemRow, limit: float) -> GatewayError:
        return GatewayError(
            f"predict for id {row.id!r} took longer than the {limit:g} s allowed for each answer after the first"
        )


# ---------------------------------------------------------------------------------------------- AIMO 1


class LocalAimo1Env:
    """A local copy of AIMO 1's `aimo` environment; build it with `make_env`."""

    def __init__(self, rows: list[ProblemRow], out_dir: Path, clock: Callable[[], float]) -> None:
        self.rows, self.out_dir, self.clock = rows, out_dir, clock
        self.spec = COMPETITIONS["aimo1"]
        self.timings: list[ProblemTiming] = []
        self.result: GatewayResult | None = None
        self._pending: tuple[ProblemRow, float] | None = None
        self._started = False

    def iter_test(self) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        """Yield one-row `(test, submission)` pandas frames; `predict` must be called before the next one."""
        if self._started:
            raise GatewayError("iter_test() can only be called once per environment")
        self._started = True
        for row in self.rows:
            self._pending = (row, self.clock())
            yield (
                pd.DataFrame({"id": [row.id], "problem": [row.problem]}),
                pd.DataFrame({"id": [row.id], "answer": [0]}),
            )
            if self._pending is not None:
                raise GatewayError(
                    f"you must call env.predict() for id {row.id!r} before asking for the next problem"
                )
        submission = _submission_frame(self.timings)
        csv_path, _ = _write_submission(self.out_dir, submission, parquet=False)
        self.result = GatewayResult("aimo1", submission, self.timings, 0.0, csv_path)

    def predict(self, submission: pd.DataFrame | pl.DataFrame) -> None:
        """Record the answer for the problem last yielded."""
        if self._pending is None:
            raise GatewayError(
                "env.predict() called with no problem pending: call it once per problem from iter_test()"
            )
        row, started = self._pending
        answer = validate_reply(submission, row.id, self.spec)
        self.timings.append(ProblemTiming(row.id, self.clock() - started, answer, row.answer))
        self._pending = None


def make_env(
    problems_csv: str | os.PathLike,
    out_dir: str | os.PathLike = ".",
    *,
    seed: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> LocalAimo1Env:
    """AIMO 1's `aimo.make_env()`, on a local CSV; writes `out_dir/submission.csv` after the last problem."""
    return LocalAimo1Env(_shuffled(read_problems(problems_csv), seed), Path(out_dir), clock)


def run_aimo1(predict: Callable[..., Any], env: Any) -> None:
    """Drive an AIMO 1 environment (ours or Kaggle's) with a Kaggle-style `predict(id_, problem)` function."""
    for test, submission in env.iter_test():
        id_ = str(test["id"].iloc[0])
        reply = predict(pl.Series("id", [id_]), pl.Series("problem", [str(test["problem"].iloc[0])]))
        submission["answer"] = validate_reply(reply, id_, COMPETITIONS["aimo1"])
        env.predict(submission)


# ---------------------------------------------------------------------------------------------- serve or run


def kaggle_search_dirs(spec: CompetitionSpec) -> list[Path]:
    """Where the competition's API package may lie: its data folder, in either Kaggle mount layout."""
    found = find_competition_dir(spec.slug)
    return [found] if found else []


def import_from_competition(module: str, search_dirs: list[Path]) -> Any:
    """Import `module` from sys.path, or else from the first of `search_dirs` that holds its top package."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        parts = module.split(".")
        if e.name not in {".".join(parts[: i + 1]) for i in range(len(parts))}:
            raise  # the module exists but one of its own dependencies is missing
    top = module.split(".")[0]
    for folder in search_dirs:
        if (Path(folder) / top).is_dir() or (Path(folder) / f"{top}.py").is_file():
            sys.path.insert(0, str(folder))
            return importlib.import_module(module)
    raise GatewayError(f"cannot import {module}: not on sys.path nor in {[str(d) for d in search_dirs]}")


def serve_or_run_local(
    predict: Callable[..., Any],
    competition: str = "aimo3",
    local_csv: str | os.PathLike | None = None,
    out_dir: str | os.PathLike = ".",
    *,
    search_dirs: list[Path] | None = None,
    **gateway_kwargs: Any,
) -> GatewayResult | None:
    """On a Kaggle rerun, hand `predict` to the real API; otherwise run it through the local gateway.

    AIMO 2/3 on a rerun: `<server_class>(predict).serve()` (blocks until Kaggle is done; returns None).
    AIMO 1 on a rerun: the real `aimo.make_env()` driven by `run_aimo1`. Locally: `LocalGateway` (AIMO 2/3)
    or `make_env` (AIMO 1) on `local_csv` (default: the attached competition's `test.csv`).
    """
    spec = competition_spec(competition)
    dirs = kaggle_search_dirs(spec) if search_dirs is None else search_dirs
    if is_competition_rerun():
        if spec.server_module is None:
            run_aimo1(predict, import_from_competition("aimo", dirs).make_env())
            return None
        server = getattr(import_from_competition(spec.server_module, dirs), spec.server_class)(predict)
        server.serve()
        return None
    local_csv = local_csv or _default_test_csv(spec, dirs)
    if spec.server_module is None:
        env = make_env(
            local_csv, out_dir, **{k: v for k, v in gateway_kwargs.items() if k in ("seed", "clock")}
        )
        run_aimo1(predict, env)
        return env.result
    return LocalGateway(predict, local_csv, competition, out_dir=out_dir, **gateway_kwargs).run()


def _default_test_csv(spec: CompetitionSpec, dirs: list[Path]) -> Path:
    for folder in dirs:
        if (Path(folder) / "test.csv").is_file():
            return Path(folder) / "test.csv"
    raise GatewayError(f"no local problems CSV given and no {spec.slug}/test.csv attached")
