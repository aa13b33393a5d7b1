"""`python -m utils.submission`: every broken input stops it with one line and exit code 2 before a model
loads; a model that cannot load stops it with exit code 1; only a successful run leaves a submission."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from utils.submission import main

REPO = Path(__file__).resolve().parents[1]
GOOD = "id,problem,answer\na1,What is 1+1?,2\nb2,What is 2+3?,5\n"

pytestmark = pytest.mark.usefixtures("not_a_rerun")


def _args(problems: Path, out: Path, *extra: str, model: str = "fake-model") -> list[str]:
    return [
        "--competition",
        "aimo2",
        "--problems",
        str(problems),
        "--model",
        model,
        "--out",
        str(out),
        *extra,
    ]


class FakeSolverModule:
    """Stands in for `utils.solver`: answers 3, or fails to load like a missing model."""

    def __init__(self, load_error: Exception | None = None):
        self.load_error, self.loads = load_error, 0

    def build_solver(self, model, mode, samples, seed, competition):
        self.loads += 1
        if self.load_error is not None:
            raise self.load_error
        return lambda problem, deadline: 3


# Every kind of broken problems file: (name, how to make it at `path`, words the one error line holds).
BROKEN = [
    ("empty", lambda p: p.write_bytes(b""), "empty file"),
    ("blank lines", lambda p: p.write_bytes(b"\n\n"), "empty file"),
    ("header only", lambda p: p.write_text("id,problem,answer\n"), "no problems"),
    ("missing column", lambda p: p.write_text("id,question\na,b\n"), "missing column"),
    ("repeated column", lambda p: p.write_text("id,problem,id\na,b,c\n"), "repeated column"),
    ("binary", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))), "binary"),
    ("nul byte", lambda p: p.write_bytes(b"id,problem\na,x\x00y\n"), ":2: binary"),
    ("latin-1", lambda p: p.write_bytes("id,problem\na,café?\n".encode("latin-1")), ":2: not UTF-8"),
    ("utf-16", lambda p: p.write_bytes("id,problem\na,x\n".encode("utf-16")), "UTF-16"),
    ("unterminated quote", lambda p: p.write_text('id,problem\na,"open\nb,x\nc,y\n'), ":2: unterminated"),
    ("stray quote", lambda p: p.write_text('id,problem\na,"x"y\n'), ":2: bad quoting"),
    ("extra value", lambda p: p.write_text("id,problem\na,x,y\n"), ":2 (row 1): 3 values"),
    ("duplicate ids", lambda p: p.write_text("id,problem\na,x\na,y\n"), "duplicate id 'a'"),
    ("empty id", lambda p: p.write_text("id,problem\n,x\n"), "empty id"),
    ("empty problem", lambda p: p.write_text("id,problem\na,\n"), "empty problem"),
    ("bad answer", lambda p: p.write_text("id,problem,answer\na,x,seven\n"), "not an integer"),
    ("folder", lambda p: p.mkdir(), "is a folder"),
    ("missing", lambda p: None, "problems file not found"),
]


@pytest.mark.parametrize(("make", "words"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_a_broken_problems_file_exits_2_with_one_line_before_any_model_loads(
    tmp_path, capsys, monkeypatch, make, words
):
    monkeypatch.setitem(sys.modules, "utils.solver", None)  # any attempt to load a model would fail loudly
    problems, out = tmp_path / "problems.csv", tmp_path / "out"
    make(problems)
    assert main(_args(problems, out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert str(problems) in err and words in err
    assert not (out / "submission.csv").exists() and not (out / "submission.parquet").exists()


@pytest.mark.parametrize("kind", ["binary", "latin-1", "unterminated quote", "folder", "empty"])
def test_the_module_prints_no_traceback_for_a_broken_file(tmp_path, kind):
    make = {b[0]: b[1] for b in BROKEN}[kind]
    problems, out = tmp_path / "problems.csv", tmp_path / "out"
    make(problems)
    out.mkdir()
    (out / "submission.csv").write_text("id,answer\nold,1\n")  # a previous run's: it must not look current
    proc = _run_module(_args(problems, out))
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (out / "submission.csv").exists()
    assert (out / "submission.csv.previous").read_text() == "id,answer\nold,1\n"


def _run_module(argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("KAGGLE_IS_COMPETITION_RERUN", None)
    return subprocess.run(
        [sys.executable, "-m", "utils.submission", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (("--time-budget", "0"), "--time-budget must be a positive"),
        (("--time-budget", "nan"), "--time-budget must be a positive"),
        (("--time-budget", "inf"), "--time-budget must be a positive"),
        (("--samples", "0"), "--samples must be at least 1"),
    ],
)
def test_bad_numbers_exit_2(tmp_path, capsys, monkeypatch, extra, words):
    monkeypatch.setitem(sys.modules, "utils.solver", None)
    problems = tmp_path / "problems.csv"
    problems.write_text(GOOD)
    assert main(_args(problems, tmp_path / "out", *extra)) == 2
    assert words in capsys.readouterr().err


def test_an_out_that_is_a_file_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "utils.solver", None)
    problems, out = tmp_path / "problems.csv", tmp_path / "out"
    problems.write_text(GOOD)
    out.write_text("not a folder")
    assert main(_args(problems, out)) == 2
    assert f"--out {out}: exists and is not a folder" in capsys.readouterr().err
    assert out.read_text() == "not a folder"
    out.unlink()
    out.mkdir()
    (out / "submission.csv").mkdir()
    assert main(_args(problems, out)) == 2
    assert "submission.csv there is a folder" in capsys.readouterr().err
    (out / "submission.csv").rmdir()
    (tmp_path / "plain-file").write_text("x")
    assert main(_args(problems, tmp_path / "plain-file" / "out")) == 2
    assert "cannot create the folder" in capsys.readouterr().err


def test_a_model_folder_that_does_not_exist_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "utils.solver", None)
    problems = tmp_path / "problems.csv"
    problems.write_text(GOOD)
    assert main(_args(problems, tmp_path / "out", model=str(tmp_path / "no-model"))) == 2
    assert f"--model {tmp_path / 'no-model'}: no such folder" in capsys.readouterr().err


def test_a_model_that_cannot_load_stops_the_run_and_writes_no_submission(tmp_path, capsys, monkeypatch):
    fake = FakeSolverModule(OSError("fake-model is not a local folder nor a\nreachable hub id"))
    monkeypatch.setitem(sys.modules, "utils.solver", fake)
    problems, out = tmp_path / "problems.csv", tmp_path / "out"
    problems.write_text(GOOD)
    out.mkdir()
    (out / "submission.parquet").write_bytes(b"old")
    assert main(_args(problems, out)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot load the model 'fake-model'" in err and "hub id" in err
    assert fake.loads == 1
    assert sorted(p.name for p in out.iterdir()) == ["submission.parquet.previous"]  # no staging left


def test_a_successful_run_replaces_the_previous_submission(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "utils.solver", FakeSolverModule())
    problems, out = tmp_path / "problems.csv", tmp_path / "out"
    problems.write_text(GOOD)
    out.mkdir()
    (out / "submission.csv").write_text("id,answer\nold,1\n")
    assert main(_args(problems, out, "--time-budget", "30")) == 0
    written = pd.read_csv(out / "submission.csv", dtype={"id": str})
    assert dict(zip(written["id"], written["answer"], strict=True)) == {"a1": 3, "b2": 3}
    assert pd.read_parquet(out / "submission.parquet")["answer"].tolist() == [3, 3]
    assert sorted(p.name for p in out.iterdir()) == [
        "submission.csv",
        "submission.csv.previous",
        "submission.parquet",
    ]
    assert f"{out / 'submission.csv'}: 2 answers" in capsys.readouterr().out
