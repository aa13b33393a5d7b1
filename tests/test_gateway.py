"""The local gateways follow Kaggle's contract: arguments, validation, time limits, output files, the rerun switch."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pandas as pd
import polars as pl
import pytest

from utils.gateway import (
    COMPETITIONS,
    GatewayError,
    LocalGateway,
    ProblemsFileError,
    make_env,
    read_problems,
    run_aimo1,
    serve_or_run_local,
    validate_reply,
)

pytestmark = pytest.mark.usefixtures("not_a_rerun")


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def answers_of(path: Path) -> dict[str, int]:
    return {r.id: r.answer for r in read_problems(path)}


def write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "problems.csv"
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- problems file


@pytest.mark.realdata
def test_read_problems_on_the_real_kaggle_files(kaggle_dir):
    reference = read_problems(kaggle_dir / "aimo2" / "reference.csv")
    assert len(reference) == 10 and all(isinstance(r.answer, int) for r in reference)
    assert reference[0].id == "057f8a" and reference[0].answer == 79
    test = read_problems(kaggle_dir / "aimo1" / "test.csv")
    assert [r.id for r in test] == ["000aaa", "111bbb", "222ccc"]
    assert all(r.answer is None for r in test)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,question\na,b\n", r":1: missing column\(s\) \['problem'\]"),
        ("id,problem\na,x\n,y\n", r":3 \(row 2\): empty id"),
        ("id,problem\na,x\nb,y\na,z\n", r":4 \(row 3\): duplicate id 'a' \(first at line 2\)"),
        ("id,problem\na,x\nb,  \n", r":3 \(row 2\): empty problem for id 'b'"),
        (
            "id,problem,answer\na,x,7\nb,y,seven\n",
            r":3 \(row 2\): answer 'seven' for id 'b' is not an integer",
        ),
        ("id,problem\n", r"no problems"),
        # a quoted problem spanning lines: the error names the line where the bad record starts
        ('id,problem\na,"line one\nline two"\na,z\n', r":4 \(row 2\): duplicate id 'a'"),
    ],
)
def test_read_problems_names_file_and_row(tmp_path, text, message):
    path = write_csv(tmp_path, text)
    with pytest.raises(ProblemsFileError, match=message) as info:
        read_problems(path)
    assert str(path) in str(info.value)


def test_read_problems_missing_file(tmp_path):
    with pytest.raises(ProblemsFileError, match="problems file not found"):
        read_problems(tmp_path / "nope.csv")


# ---------------------------------------------------------------------------------------------- AIMO 2/3 gateway


@pytest.mark.realdata
def test_gateway_calls_predict_like_kaggle_and_scores(reference, tmp_path):
    truth = answers_of(reference)
    calls = []

    def predict(*args):
        calls.append((args, threading.current_thread() is threading.main_thread()))
        id_, problem = args
        pid = id_.item(0)
        return pl.DataFrame({"id": [pid], "answer": [truth[pid] if len(calls) % 2 else 0]})

    result = LocalGateway(predict, reference, "aimo2", out_dir=tmp_path, seed=1).run()

    assert len(calls) == 10
    for args, on_main in calls:
        assert len(args) == 2, "the answer column must not reach predict"
        assert [type(a) for a in args] == [pl.Series, pl.Series] and [a.name for a in args] == [
            "id",
            "problem",
        ]
        assert len(args[0]) == 1 and not on_main
    called = [args[0].item(0) for args, _ in calls]
    assert sorted(called) == sorted(truth) and called != list(truth)  # shuffled
    assert result.n_correct == sum(truth[pid] == 0 for pid in called[1::2]) + 5
    assert [t.id for t in result.timings] == called
    parquet = pl.read_parquet(tmp_path / "submission.parquet")
    assert parquet.columns == ["id", "answer"] and parquet["id"].to_list() == called
    assert parquet.equals(pl.read_csv(tmp_path / "submission.csv", schema_overrides={"id": pl.String}))


@pytest.mark.realdata
def test_gateway_shuffle_is_seeded(reference, tmp_path):
    def order(seed):
        seen = []

        def predict(id_, problem):
            seen.append(id_.item(0))
            return pl.DataFrame({"id": id_, "answer": [1]})

        LocalGateway(predict, reference, "aimo3", out_dir=tmp_path, seed=seed).run()
        return seen

    assert order(3) == order(3)
    assert order(3) != order(4)


@pytest.mark.realdata
def test_pandas_reply_is_accepted(reference, tmp_path):
    def predict(id_, problem):
        return pd.DataFrame({"id": [id_.item(0)], "answer": [12]})

    result = LocalGateway(predict, reference, "aimo2", out_dir=tmp_path, seed=0).run()
    assert result.submission["answer"].to_list() == [12] * 10


@pytest.mark.parametrize(
    ("reply", "competition", "message"),
    [
        (5, "aimo2", "is a int, not a DataFrame"),
        (None, "aimo2", "is a NoneType"),
        (pl.DataFrame({"id": ["x", "x"], "answer": [1, 2]}), "aimo2", "has 2 rows"),
        (pl.DataFrame({"id": ["y"], "answer": [1]}), "aimo2", "has id 'y'; expected 'x'"),
        (pl.DataFrame({"id": ["x"]}), "aimo2", r"has columns \['id'\]"),
        (pl.DataFrame({"id": ["x"], "answer": [1], "why": ["z"]}), "aimo2", "expected exactly"),
        (pl.DataFrame({"id": ["x"], "answer": [1.0]}), "aimo2", "expected an integer"),
        (pl.DataFrame({"id": ["x"], "answer": ["1"]}), "aimo2", "expected an integer"),
        (pl.DataFrame({"id": ["x"], "answer": [True]}), "aimo2", "expected an integer"),
        (pl.DataFrame({"id": ["x"], "answer": [1000]}), "aimo2", r"outside aimo2's range 0..999"),
        (pl.DataFrame({"id": ["x"], "answer": [-1]}), "aimo3", r"outside aimo3's range 0..99999"),
        (pl.DataFrame({"id": ["x"], "answer": [100_000]}), "aimo3", r"outside aimo3's range"),
    ],
)
def test_bad_replies_are_rejected(reply, competition, message):
    with pytest.raises(GatewayError, match=message) as info:
        validate_reply(reply, "x", COMPETITIONS[competition])
    assert "'x'" in str(info.value)


def test_answer_ranges_accept_their_extremes():
    assert validate_reply(pl.DataFrame({"id": ["x"], "answer": [999]}), "x", COMPETITIONS["aimo2"]) == 999
    assert (
        validate_reply(pd.DataFrame({"id": ["x"], "answer": [99_999]}), "x", COMPETITIONS["aimo3"]) == 99_999
    )


@pytest.mark.realdata
def test_bad_reply_fails_the_run_and_writes_nothing(reference, tmp_path):
    def predict(id_, problem):
        return 42

    with pytest.raises(GatewayError, match="bare int"):
        LocalGateway(predict, reference, "aimo2", out_dir=tmp_path).run()
    assert not (tmp_path / "submission.parquet").exists()


@pytest.mark.realdata
def test_predict_must_be_named_predict(reference):
    with pytest.raises(GatewayError, match="named exactly 'predict'"):
        LocalGateway(lambda id_, problem: None, reference, "aimo2")


@pytest.mark.realdata
def test_predict_exception_names_the_problem(reference, tmp_path):
    def predict(id_, problem):
        raise ZeroDivisionError("boom")

    with pytest.raises(GatewayError, match=r"predict raised ZeroDivisionError for id '\w+': boom") as info:
        LocalGateway(predict, reference, "aimo3", out_dir=tmp_path).run()
    assert isinstance(info.value.__cause__, ZeroDivisionError)


@pytest.mark.realdata
def test_first_call_is_exempt_from_the_per_answer_limit_and_later_ones_are_not(reference, tmp_path):
    calls = []

    def predict(id_, problem):
        calls.append(id_.item(0))
        if len(calls) in (1, 3):  # the first (model load) and the third are slow
            time.sleep(0.3)
        return pl.DataFrame({"id": id_, "answer": [0]})

    started = time.monotonic()
    with pytest.raises(GatewayError, match=r"took longer than the 0.1 s allowed") as info:
        LocalGateway(predict, reference, "aimo2", out_dir=tmp_path, per_answer_limit_s=0.1, seed=0).run()
    assert calls[2] in str(info.value) and len(calls) == 3
    assert time.monotonic() - started < 0.55  # gave up at the limit, did not wait for the slow call


@pytest.mark.realdata
def test_per_answer_limit_measured_on_the_clock(reference, tmp_path):
    clock = FakeClock()

    def predict(id_, problem):
        clock.t += 1000  # each answer takes 1000 s of (fake) time
        return pl.DataFrame({"id": id_, "answer": [0]})

    ok = LocalGateway(
        predict, reference, "aimo2", out_dir=tmp_path, per_answer_limit_s=1000, clock=clock
    ).run()
    assert [t.seconds for t in ok.timings] == [1000] * 10
    with pytest.raises(GatewayError, match="took longer than the 999 s"):
        LocalGateway(predict, reference, "aimo2", out_dir=tmp_path, per_answer_limit_s=999, clock=clock).run()


@pytest.mark.realdata
def test_startup_limit(reference, tmp_path):
    clock = FakeClock(5000)

    def predict(id_, problem):
        return pl.DataFrame({"id": id_, "answer": [0]})

    late = LocalGateway(predict, reference, "aimo3", out_dir=tmp_path, start_time=5000 - 901, clock=clock)
    with pytest.raises(GatewayError, match="901 s after the start, over the 900 s startup limit"):
        late.run()
    result = LocalGateway(
        predict, reference, "aimo3", out_dir=tmp_path, start_time=5000 - 899, clock=clock
    ).run()
    assert result.startup_seconds == 899


def test_the_aimo3_defaults_match_kaggle():
    spec = COMPETITIONS["aimo3"]
    assert (spec.max_answer, spec.per_answer_limit_s, spec.time_limit_s) == (99_999, 9 * 3600, 5 * 3600)
    assert COMPETITIONS["aimo2"].per_answer_limit_s == 30 * 60


# ---------------------------------------------------------------------------------------------- AIMO 1


@pytest.mark.realdata
def test_aimo1_env_on_the_placeholder_test_file(kaggle_dir, tmp_path):
    env = make_env(kaggle_dir / "aimo1" / "test.csv", tmp_path, seed=0)
    seen = []
    for test, submission in env.iter_test():
        assert isinstance(test, pd.DataFrame) and list(test.columns) == ["id", "problem"] and len(test) == 1
        assert list(submission.columns) == ["id", "answer"] and submission["id"].iloc[0] == test["id"].iloc[0]
        seen.append(test["id"].iloc[0])
        submission["answer"] = len(seen)
        env.predict(submission)
    written = pd.read_csv(tmp_path / "submission.csv", dtype={"id": str})
    assert written["id"].tolist() == seen and written["answer"].tolist() == [1, 2, 3]
    assert sorted(seen) == ["000aaa", "111bbb", "222ccc"]
    assert env.result.n_correct is None


@pytest.mark.realdata
def test_aimo1_env_refuses_to_go_on_without_predict(kaggle_dir, tmp_path):
    env = make_env(kaggle_dir / "aimo1" / "test.csv", tmp_path)
    batches = env.iter_test()
    next(batches)
    with pytest.raises(GatewayError, match="you must call env.predict"):
        next(batches)
    assert not (tmp_path / "submission.csv").exists()


@pytest.mark.realdata
def test_aimo1_env_refuses_predict_without_a_problem_and_bad_answers(kaggle_dir, tmp_path):
    env = make_env(kaggle_dir / "aimo1" / "test.csv", tmp_path)
    with pytest.raises(GatewayError, match="no problem pending"):
        env.predict(pd.DataFrame({"id": ["000aaa"], "answer": [0]}))
    test, submission = next(env.iter_test())
    submission["answer"] = 1000
    with pytest.raises(GatewayError, match="outside aimo1's range 0..999"):
        env.predict(submission)


@pytest.mark.realdata
def test_run_aimo1_scores_train_file(kaggle_dir, tmp_path):
    truth = answers_of(kaggle_dir / "aimo1" / "train.csv")

    def predict(id_, problem):
        return pl.DataFrame({"id": id_, "answer": [truth[id_.item(0)]]})

    env = make_env(kaggle_dir / "aimo1" / "train.csv", tmp_path)
    run_aimo1(predict, env)
    assert env.result.n_correct == 10 and env.result.accuracy == 1.0


# ---------------------------------------------------------------------------------------------- serve or run


def _fake_package(root: Path, module: str, body: str) -> None:
    parts = module.split(".")
    for i in range(1, len(parts)):
        pkg = root.joinpath(*parts[:i])
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").touch()
    root.joinpath(*parts[:-1], parts[-1] + ".py").write_text(body)


@pytest.fixture
def clean_modules():
    """Forget fake competition packages imported by a test."""
    yield
    for name in list(sys.modules):
        if name.split(".")[0] in ("kaggle_evaluation", "aimo"):
            del sys.modules[name]


def test_rerun_hands_predict_to_the_real_inference_server(tmp_path, monkeypatch, clean_modules):
    comp = tmp_path / "ai-mathematical-olympiad-progress-prize-3"
    _fake_package(
        comp,
        "kaggle_evaluation.aimo_3_inference_server",
        "SERVED = []\nclass AIMO3InferenceServer:\n"
        "    def __init__(self, *listeners):\n        self.listeners = listeners\n"
        "    def serve(self):\n        SERVED.append(self.listeners)\n",
    )
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("KAGGLE_IS_COMPETITION_RERUN", "1")

    def predict(id_, problem):
        return None

    assert serve_or_run_local(predict, "aimo3", search_dirs=[comp]) is None
    assert sys.modules["kaggle_evaluation.aimo_3_inference_server"].SERVED == [(predict,)]


@pytest.mark.realdata
def test_rerun_aimo1_drives_the_real_aimo_module(tmp_path, monkeypatch, clean_modules, kaggle_dir):
    # the real module behaves like ours: use our env as the stand-in
    _fake_package(
        tmp_path,
        "aimo",
        f"from utils.gateway import make_env as _m\nENVS = []\n"
        f"def make_env():\n    ENVS.append(_m({str(kaggle_dir / 'aimo1' / 'test.csv')!r}, {str(tmp_path)!r}))\n"
        f"    return ENVS[-1]\n",
    )
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("KAGGLE_IS_COMPETITION_RERUN", "1")

    def predict(id_, problem):
        return pl.DataFrame({"id": id_, "answer": [7]})

    assert serve_or_run_local(predict, "aimo1", search_dirs=[tmp_path]) is None
    assert pd.read_csv(tmp_path / "submission.csv")["answer"].tolist() == [7, 7, 7]


def test_rerun_without_the_package_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_IS_COMPETITION_RERUN", "1")

    def predict(id_, problem):
        return None

    with pytest.raises(
        GatewayError, match=f"cannot import kaggle_evaluation.aimo_2_inference_server.*{tmp_path}"
    ):
        serve_or_run_local(predict, "aimo2", search_dirs=[tmp_path])


@pytest.mark.realdata
def test_not_a_rerun_runs_locally(reference, tmp_path):
    def predict(id_, problem):
        return pl.DataFrame({"id": id_, "answer": [1]})

    result = serve_or_run_local(predict, "aimo2", reference, tmp_path, seed=0)
    assert len(result.timings) == 10 and (tmp_path / "submission.parquet").is_file()
    with pytest.raises(GatewayError, match="no local problems CSV given"):
        serve_or_run_local(predict, "aimo2", None, tmp_path, search_dirs=[])
