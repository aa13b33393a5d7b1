"""run_submission never crashes and always answers; the CLI rejects bad problems files before loading a model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from utils.gateway import read_problems
from utils.submission import main, make_predict, run_submission

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("not_a_rerun")


def truth_by_problem(path: Path) -> dict[str, int]:
    return {r.problem: r.answer for r in read_problems(path)}


def read_submission(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "submission.csv", dtype={"id": str})


@pytest.mark.realdata
def test_a_perfect_solver_scores_ten_of_ten(reference, tmp_path):
    truth = truth_by_problem(reference)
    deadlines = []

    def solver(problem: str, deadline: float) -> int:
        deadlines.append(deadline - time.monotonic())
        return truth[problem]

    result = run_submission(solver, reference, "aimo2", tmp_path, time_budget_s=100, seed=0)
    assert result.n_correct == 10 and result.n_fallbacks == 0
    written = read_submission(tmp_path)
    assert sorted(written["id"]) == sorted(r.id for r in read_problems(reference))
    assert dict(zip(written["id"], written["answer"], strict=True)) == result.answers
    assert 0 < deadlines[0] <= 100 * 0.9 / 10 + 1e-6  # first share: (total - reserve) / n
    assert all(0 < d <= 100 for d in deadlines)


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("competition", "raw", "expected"),
    [("aimo2", 1079, 79), ("aimo1", 2024, 24), ("aimo2", 999, 999), ("aimo3", 12345, 12345), ("aimo3", 0, 0)],
)
def test_answers_are_normalized_for_the_competition(kaggle_dir, tmp_path, competition, raw, expected):
    csv = kaggle_dir / ("aimo1/test.csv" if competition == "aimo1" else "aimo2/reference.csv")
    result = run_submission(lambda problem, deadline: raw, csv, competition, tmp_path, time_budget_s=60)
    assert set(read_submission(tmp_path)["answer"]) == {expected}
    assert result.n_fallbacks == 0


@pytest.mark.realdata
@pytest.mark.parametrize("raw", [123_456, -1, 7.0, True])
def test_out_of_range_or_non_int_answers_fall_back(reference, tmp_path, raw):
    result = run_submission(lambda p, d: raw, reference, "aimo3", tmp_path, time_budget_s=60)
    assert set(result.answers.values()) == {0} and result.n_fallbacks == 10
    assert str(raw) in result.records[0].error


@pytest.mark.realdata
def test_failing_solver_gives_fallbacks_and_never_crashes(reference, tmp_path):
    calls = []

    def solver(problem, deadline):
        calls.append(problem)
        k = len(calls) % 4
        if k == 1:
            raise RuntimeError("CUDA out of memory")
        if k == 2:
            return None
        if k == 3:
            return "not a number at all"
        return 7

    result = run_submission(solver, reference, "aimo2", tmp_path, time_budget_s=60, seed=0)
    assert len(read_submission(tmp_path)) == 10 and len(calls) == 10
    errors = [r.error for r in result.records]
    assert sum("CUDA out of memory" in (e or "") for e in errors) == 3
    assert errors.count("solver returned None") == 3
    assert errors.count("solver returned str 'not a number at all', not an int") == 2
    assert sum(r.answer == 7 for r in result.records) == 2
    assert all(r.answer == 0 for r in result.records if r.error)
    assert result.n_fallbacks == 8


@pytest.mark.realdata
def test_solver_factory_is_called_once_inside_the_first_predict(reference, tmp_path):
    events = []

    def factory():
        events.append(("load", threading.current_thread() is threading.main_thread()))
        return lambda problem, deadline: 5

    result = run_submission(
        problems_csv=reference,
        competition="aimo2",
        out_dir=tmp_path,
        time_budget_s=60,
        solver_factory=factory,
    )
    assert events == [("load", False)]  # once, in the server's worker thread, not before serving
    assert set(result.answers.values()) == {5} and result.solver_load_seconds is not None


@pytest.mark.realdata
def test_a_factory_that_fails_still_answers_everything(reference, tmp_path):
    attempts = []

    def factory():
        attempts.append(1)
        raise FileNotFoundError("no weights at /kaggle/input/deepseek-math")

    result = run_submission(
        problems_csv=reference,
        competition="aimo3",
        out_dir=tmp_path,
        time_budget_s=60,
        solver_factory=factory,
    )
    assert len(attempts) == 1 and len(read_submission(tmp_path)) == 10
    assert result.n_fallbacks == 10 and "no weights" in result.errors[0]


@pytest.mark.realdata
def test_the_budget_runs_out_and_the_rest_is_answered_at_once(reference, tmp_path):
    calls = []

    def solver(problem, deadline):
        calls.append(problem)
        time.sleep(0.12)  # ignores its deadline
        return 1

    started = time.monotonic()
    result = run_submission(
        solver, reference, "aimo2", tmp_path, time_budget_s=0.3, reserve_fraction=0.1, seed=0
    )
    assert len(result.records) == 10 and len(read_submission(tmp_path)) == 10
    assert 1 <= len(calls) <= 3
    assert sum(r.error == "no time left in the budget" for r in result.records) == 10 - len(calls)
    assert time.monotonic() - started < 0.3 + 0.4


@pytest.mark.realdata
def test_exactly_one_of_solver_and_factory(reference, tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        run_submission(None, reference, "aimo2", tmp_path)


# ---------------------------------------------------------------------------------------------- CLI


def _cli(problems: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--competition",
        "aimo2",
        "--problems",
        str(problems),
        "--model",
        "none",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,question\na,b\n", r"problems.csv:1: missing column\(s\) \['problem'\]"),
        ("problem\nx\n", r"missing column\(s\) \['id'\]"),
        ("id,problem\na,x\n,y\n", r"problems.csv:3 \(row 2\): empty id"),
        ("id,problem\na,x\nb,y\na,z\n", r"problems.csv:4 \(row 3\): duplicate id 'a'"),
        ("id,problem\na,x\nb,\n", r"problems.csv:3 \(row 2\): empty problem for id 'b'"),
    ],
)
def test_cli_rejects_bad_problems_files_before_loading_a_model(tmp_path, capsys, monkeypatch, text, message):
    monkeypatch.setitem(sys.modules, "utils.solver", None)  # any attempt to load a model would fail loudly
    problems = tmp_path / "problems.csv"
    problems.write_text(text, encoding="utf-8")
    assert main(_cli(problems, tmp_path / "out")) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out" / "submission.csv").exists()


def test_cli_missing_file_and_bad_arguments(tmp_path, capsys):
    assert main(_cli(tmp_path / "missing.csv", tmp_path)) == 2
    assert f"{tmp_path / 'missing.csv'}: problems file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--competition", "aimo9", "--problems", "x", "--model", "m", "--out", "o"])
    assert info.value.code == 2


def test_cli_as_a_module_exits_nonzero(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("KAGGLE_IS_COMPETITION_RERUN", None)
    proc = subprocess.run(
        [sys.executable, "-m", "utils.submission", *_cli(tmp_path / "missing.csv", tmp_path)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "missing.csv: problems file not found" in proc.stderr


@pytest.mark.realdata
def test_cli_drives_build_solver(reference, tmp_path, monkeypatch, capsys):
    """The CLI's wiring, with a stand-in `utils.solver` (the real one is exercised by the slow test)."""
    calls = []

    class FakeSolverModule:
        @staticmethod
        def build_solver(model, mode, samples, seed, competition):
            calls.append((model, mode, samples, seed))
            assert competition == "aimo2"  # the vote happens in the competition's answer range
            return lambda problem, deadline: 3

    monkeypatch.setitem(sys.modules, "utils.solver", FakeSolverModule)
    code = main(
        _cli(reference, tmp_path, "--samples", "4", "--mode", "tools", "--seed", "9", "--time-budget", "30")
    )
    assert code == 0 and calls == [("none", "tools", 4, 9)]
    assert set(read_submission(tmp_path)["answer"]) == {3}
    assert "10 answers" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- stalls and odd inputs


def test_a_solver_that_hangs_is_abandoned_at_the_deadline_plus_grace(tmp_path):
    problems = tmp_path / "problems.csv"
    problems.write_text("id,problem,answer\nhang,Hang forever,1\nok,Answer 4,4\n")
    release, calls = threading.Event(), []

    def solver(problem, deadline):
        calls.append(problem)
        if problem == "Hang forever":
            release.wait(60)  # ignores its deadline, holds no lock anyone else needs
        return 4

    try:
        started = time.monotonic()
        result = run_submission(
            solver, problems, "aimo2", tmp_path, time_budget_s=2.0, solver_grace_s=0.3, seed=0
        )
        elapsed = time.monotonic() - started
    finally:
        release.set()
    by_id = {r.id: r for r in result.records}
    assert "abandoned" in by_id["hang"].error and by_id["hang"].answer == 0
    assert by_id["ok"].answer == 4 and by_id["ok"].error is None and len(calls) == 2
    assert elapsed < 2.0 + 0.3 + 0.5  # the budget, one grace, the bookkeeping


def _serving_package(root: Path, calls: list) -> None:
    """A fake `kaggle_evaluation` AIMO 3 server that calls predict the way Kaggle's does: one-row polars
    Series whose types polars inferred (an empty problem is None, a problem of digits an int)."""
    pkg = root / "kaggle_evaluation"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").touch()
    (pkg / "aimo_3_inference_server.py").write_text(
        "import polars as pl\n"
        "REPLIES = []\n"
        "class AIMO3InferenceServer:\n"
        "    def __init__(self, predict):\n        self.predict = predict\n"
        "    def serve(self):\n"
        f"        for id_, problem in {calls!r}:\n"
        "            REPLIES.append(self.predict(pl.Series('id', [id_]), pl.Series('problem', [problem])))\n"
    )


def test_predict_takes_whatever_kaggles_gateway_hands_it(tmp_path, monkeypatch):
    _serving_package(tmp_path, [("a", None), ("b", 12), ("c", "What is 2+2?"), (7, 3.0)])
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [n for n in sys.modules if n.startswith("kaggle_evaluation")]:  # another test's fake
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setenv("KAGGLE_IS_COMPETITION_RERUN", "1")
    seen = []

    def solver(problem, deadline):
        seen.append(problem)
        return 4

    try:
        result = run_submission(solver, None, "aimo3", tmp_path, time_budget_s=60, search_dirs=[tmp_path])
        replies = sys.modules["kaggle_evaluation.aimo_3_inference_server"].REPLIES
    finally:
        for name in [n for n in sys.modules if n.startswith("kaggle_evaluation")]:
            del sys.modules[name]
    assert seen == ["", "12", "What is 2+2?", "3"]  # always text
    assert [(r["id"].item(0), r["answer"].item(0)) for r in replies] == [("a", 4), ("b", 4), ("c", 4), (7, 4)]
    assert result.n_fallbacks == 0


@pytest.mark.parametrize(
    ("id_", "problem", "text"),
    [
        (pl.Series("id", ["x"]), pl.Series("problem", [None]), ""),
        (pl.Series("id", ["x"]), pl.Series("problem", [12]), "12"),
        (pd.Series(["x"]), pd.Series([float("nan")]), ""),
        (pd.Series(["x"]), pd.Series([np.int64(5)]), "5"),
        (pd.DataFrame({"id": ["x"]}), pd.DataFrame({"problem": ["Find x."]}), "Find x."),
        ("x", None, ""),
        ("x", 2.5, "2.5"),
        ("x", b"caf\xc3\xa9", "café"),
        (pl.Series("id", ["x"]), pl.Series("problem", [], dtype=pl.String), ""),
    ],
)
def test_make_predict_turns_any_value_into_text(id_, problem, text):
    got = []
    reply = make_predict(lambda pid, p: got.append((pid, p)) or 1)(id_, problem)
    assert got == [("x", text)] and reply.to_dicts() == [{"id": "x", "answer": 1}]
