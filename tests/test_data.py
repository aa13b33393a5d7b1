"""Loaders: the real public files (counts, answers, spot checks) and broken copies of them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import utils.answers
from utils.data import (
    DATASETS,
    SAMPLE_SUBMISSION,
    DataError,
    Problem,
    load,
    load_aime,
    load_aimo1_train,
    load_all,
    load_gsm8k,
    load_math,
    load_problems,
    load_sample_submission,
    load_tora,
    save_problems,
)


def manifest_counts(data_dir: Path) -> dict[str, int]:
    """{relative path: records} from the MANIFEST's table."""
    text = (data_dir / "MANIFEST.md").read_text(encoding="utf-8")
    return {
        m[1]: int(m[2].replace(",", "")) for m in re.finditer(r"^\| ([\w./]+) \| ([\d,]+) \|", text, re.M)
    }


def fast_parse(value):
    """Stands in for parse_integer_answer where only counts matter: math_verify takes ~30 s over all of MATH."""
    return int(value) if isinstance(value, int) or str(value).isdigit() else None


@pytest.fixture(scope="module")
def sets(data_dir) -> dict[str, list[Problem]]:
    """The sets that load in about a second with the real answer parser (all but MATH train and test)."""
    return {name: load(name, data_dir) for name in DATASETS if name not in ("math_train", "math_test")}


def by_id(problems: list[Problem]) -> dict[str, Problem]:
    return {p.id: p for p in problems}


# ---------------------------------------------------------------- real files


@pytest.mark.realdata
def test_every_manifest_file_is_registered_and_counts_match(data_dir, monkeypatch):
    monkeypatch.setattr(utils.answers, "parse_integer_answer", fast_parse)
    manifest = manifest_counts(data_dir)
    assert len(manifest) == 14, manifest
    registered = {d.path: d for d in DATASETS.values()}
    assert set(manifest) == set(registered) | {SAMPLE_SUBMISSION}
    loaded = load_all(data_dir)
    assert set(loaded) == set(DATASETS)
    for path, d in registered.items():
        assert len(loaded[d.name]) == manifest[path] == d.expected_records, path
    assert len(load_sample_submission(data_dir / SAMPLE_SUBMISSION)) == manifest[SAMPLE_SUBMISSION]


@pytest.mark.realdata
def test_ids_are_unique_across_sets_and_prefixed_by_source(sets):
    ids = [p.id for ps in sets.values() for p in ps]
    assert len(ids) == len(set(ids))
    for ps in sets.values():
        for p in ps:
            assert p.id.startswith(p.source + "-") and p.problem.strip()


@pytest.mark.realdata
def test_gsm8k_answers_are_all_integers(sets):
    for name in ("gsm8k_train", "gsm8k_test"):
        assert all(isinstance(p.answer, int) for p in sets[name]), name
    train, test = by_id(sets["gsm8k_train"]), by_id(sets["gsm8k_test"])
    assert train["gsm8k-train-00000"].answer == 72 and train["gsm8k-train-00000"].problem.startswith(
        "Natalia"
    )
    assert test["gsm8k-test-00201"].metadata["answer_text"] == "114,200"
    assert test["gsm8k-test-00201"].answer == 114200
    assert train["gsm8k-train-05715"].answer == -7
    assert train["gsm8k-train-00042"].solution.endswith("#### 99")


@pytest.mark.realdata
def test_math_answers_come_from_the_last_box(sets, data_dir, tmp_path):
    math500 = sets["math500"]
    share = sum(p.answer is not None for p in math500) / len(math500)
    assert 0.55 <= share <= 0.75, share  # the MANIFEST: about 62% of MATH answers are plain integers
    polar = by_id(math500)["math500-test-precalculus-807"]
    assert polar.answer is None and polar.metadata["answer_text"] == r"\left( 3, \frac{\pi}{2} \right)"
    assert polar.metadata["level"] == 2 and polar.metadata["type"] == "Precalculus"
    # MATH train read through its boxed answers, on the first 300 records (the whole file takes ~20 s)
    head = (data_dir / "math/train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:300]
    problems = by_id(load_math(_write(tmp_path / "train.jsonl", head)))
    assert problems["math-train-algebra-0"].answer == 0
    assert problems["math-train-algebra-3"].answer is None
    assert problems["math-train-algebra-3"].metadata == {
        "split": "train",
        "level": 3,
        "type": "Algebra",
        "unique_id": "train/algebra/3.json",
        "answer_text": "8+4i",
    }
    assert 0.55 <= sum(p.answer is not None for p in problems.values()) / 300 <= 0.8


@pytest.mark.realdata
def test_aime_and_validation_sets(sets):
    aime = by_id(sets["aime"])
    assert aime["aime-1983-1"].answer == 60 and aime["aime-1983-1"].metadata["year"] == 1983
    assert aime["aime-2022-I-1"].metadata == {"year": 2022, "part": "I", "number": 1, "answer_text": "116"}
    assert aime["aime-2022-II-8"].answer is None  # "080 or 081 (both were accepted)"
    assert sum(p.answer is None for p in sets["aime"]) == 1
    aime2025 = by_id(sets["aime2025"])
    assert aime2025["aime2025-I-1"].answer == 70
    assert aime2025["aime2025-II-5"].metadata["answer_text"] == r"336^\circ"
    assert aime2025["aime2025-II-5"].answer == 336
    val = by_id(sets["aimo_val_aime"])
    assert val["aimo_val_aime-2022-I-1"].answer == 116 and val["aimo_val_aime-2022-I-1"].solution
    assert val["aimo_val_aime-2022-I-1"].problem == aime["aime-2022-I-1"].problem
    amc = by_id(sets["aimo_val_amc"])  # the file's own ids restart at 0 in 2023: ids come from the URL
    assert (
        amc["aimo_val_amc-2022-12A-1"].answer == 142
        and amc["aimo_val_amc-2022-12A-1"].metadata["file_id"] == 0
    )
    assert all(isinstance(p.answer, int) for p in sets["aimo_val_amc"] + sets["aimo_val_aime"])


@pytest.mark.realdata
def test_kaggle_csvs(sets, data_dir):
    train = by_id(sets["aimo1_train"])
    assert (
        train["aimo1_train-229ee8"].answer == 52
        and train["aimo1_train-229ee8"].metadata["kaggle_id"] == "229ee8"
    )
    assert [p.metadata["kaggle_id"] for p in sets["aimo1_test"]] == ["000aaa", "111bbb", "222ccc"]
    assert all(p.answer is None for p in sets["aimo1_test"])
    assert by_id(sets["aimo2_reference"])["aimo2_reference-057f8a"].answer == 79
    assert load_sample_submission(data_dir / SAMPLE_SUBMISSION) == {"000aaa": 0, "111bbb": 0, "222ccc": 0}


@pytest.mark.realdata
def test_tora_keeps_messages(sets):
    first = by_id(sets["tora"])["tora-math-train-1149-0"]
    assert first.answer == 2 and first.metadata["level"] == 5
    assert first.problem == first.metadata["messages"][0]["content"]
    assert "```python" in first.metadata["messages"][1]["content"]
    assert first.solution.endswith(r"= \boxed{2}$.")
    assert (
        sum(p.answer is not None for p in sets["tora"]) == 21
    )  # 9 answers are polynomials, roots, fractions


# ---------------------------------------------------------------- broken copies


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _gsm8k_lines(data_dir: Path, n: int = 3) -> list[str]:
    return (data_dir / "gsm8k/train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:n]


def _assert_names(err: pytest.ExceptionInfo, path: Path, line: int, field: str) -> None:
    message = str(err.value)
    assert str(path) in message and f"line {line}," in message and repr(field) in message, message
    assert (err.value.path, err.value.line, err.value.field) == (path, line, field)


@pytest.mark.realdata
def test_truncated_jsonl_line(data_dir, tmp_path):
    lines = _gsm8k_lines(data_dir)
    path = _write(tmp_path / "train.jsonl", [*lines[:2], lines[2][:40]])
    with pytest.raises(DataError) as err:
        load_gsm8k(path)
    _assert_names(err, path, 3, "<record>")
    assert "not valid JSON" in str(err.value)


@pytest.mark.realdata
def test_line_that_is_not_an_object(data_dir, tmp_path):
    path = _write(tmp_path / "train.jsonl", [_gsm8k_lines(data_dir)[0], "\n", "[1, 2]\n"])
    with pytest.raises(DataError) as err:
        load_gsm8k(path)
    _assert_names(err, path, 3, "<record>")  # the blank line 2 is skipped but still counted


@pytest.mark.parametrize(
    ("edit", "field", "words"),
    [
        (lambda r: r.pop("question"), "question", "missing"),
        (lambda r: r.update(question=5), "question", "expected str, got int"),
        (lambda r: r.update(question="  "), "question", "empty"),
        (lambda r: r.update(answer="no final line"), "answer", "####"),
    ],
)
@pytest.mark.realdata
def test_bad_gsm8k_record(data_dir, tmp_path, edit, field, words):
    lines = _gsm8k_lines(data_dir)
    row = json.loads(lines[1])
    edit(row)
    path = _write(tmp_path / "train.jsonl", [lines[0], json.dumps(row) + "\n", lines[2]])
    with pytest.raises(DataError) as err:
        load_gsm8k(path)
    _assert_names(err, path, 2, field)
    assert words in str(err.value)


def test_bad_aime_records(tmp_path):
    good = {
        "id": "1983-1",
        "year": "1983",
        "problem number": "1",
        "problem": "Find x.",
        "answer": "60",
        "part": "",
    }
    cases = [
        ({**good, "year": "nineteen"}, "year"),
        ({**good, "answer": [60]}, "answer"),
        ({**good, "id": ""}, "id"),
    ]
    for row, field in cases:
        path = _write(tmp_path / "aime.jsonl", [json.dumps(row) + "\n"])
        with pytest.raises(DataError) as err:
            load_aime(path)
        _assert_names(err, path, 1, field)


def test_duplicate_id_names_both_lines(tmp_path):
    rows = [
        {"id": f"1983-{i}", "year": "1983", "problem number": str(i), "problem": f"P{i}", "answer": "1"}
        for i in (1, 2, 1)
    ]
    path = _write(tmp_path / "aime.jsonl", [json.dumps(r) + "\n" for r in rows])
    with pytest.raises(DataError) as err:
        load_aime(path)
    _assert_names(err, path, 3, "id")
    assert "first on line 1" in str(err.value)


def test_math_solution_without_box(tmp_path):
    row = {
        "problem": "p",
        "level": "Level 1",
        "type": "Algebra",
        "solution": "It is 5.",
        "unique_id": "train/a/1.json",
    }
    path = _write(tmp_path / "train.jsonl", [json.dumps(row) + "\n"])
    with pytest.raises(DataError) as err:
        load_math(path)
    _assert_names(err, path, 1, "solution")


def test_tora_bad_messages(tmp_path):
    row = {
        "id": "x-1",
        "gt": "2",
        "gt_cot": "",
        "level": "Level 1",
        "dataset": "d",
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant"}],
    }
    path = _write(tmp_path / "tora.jsonl", [json.dumps(row) + "\n"])
    with pytest.raises(DataError) as err:
        load_tora(path)
    _assert_names(err, path, 1, "messages[1]")


def test_csv_problems(tmp_path):
    missing = _write(tmp_path / "a.csv", ['"id","problem"\n', '"a1","What is 1+1?"\n'])
    with pytest.raises(DataError) as err:
        load_aimo1_train(missing)
    _assert_names(err, missing, 1, "answer")
    # a quoted problem spanning lines 2-3: the bad record on line 4 is still named correctly
    bad = _write(tmp_path / "b.csv", ["id,problem,answer\n", 'a1,"Two\nlines",3\n', "a2,Next,three\n"])
    with pytest.raises(DataError) as err:
        load_aimo1_train(bad)
    _assert_names(err, bad, 4, "answer")
    dup = _write(tmp_path / "c.csv", ["id,problem,answer\n", "a1,P,3\n", "a1,Q,4\n"])
    with pytest.raises(DataError) as err:
        load_aimo1_train(dup)
    _assert_names(err, dup, 3, "id")
    short = _write(tmp_path / "d.csv", ["id,problem,answer\n", "a1,P\n"])
    with pytest.raises(DataError) as err:
        load_aimo1_train(short)
    _assert_names(err, short, 2, "answer")
    assert [
        p.problem
        for p in load_aimo1_train(_write(tmp_path / "e.csv", ["\ufeffid,problem,answer\n", 'a1,"x, y",3\n']))
    ] == ["x, y"]


@pytest.mark.realdata
def test_missing_files(tmp_path, data_dir):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "none.jsonl"))):
        load_gsm8k(tmp_path / "none.jsonl")
    with pytest.raises(FileNotFoundError, match="none"):
        load_all(tmp_path / "none")
    _write(tmp_path / "gsm8k/test.jsonl", _gsm8k_lines(data_dir, 1319))
    assert {k: len(v) for k, v in load_all(tmp_path).items()} == {"gsm8k_test": 1319}  # absent sets skipped
    with pytest.raises(KeyError, match="gsm8k_train"):
        load("gsm8k", tmp_path)


# ---------------------------------------------------------------- broken copies of every registered file


def _copy(data_dir: Path, tmp_path: Path, name: str, edit) -> Path:
    """A copy of data set `name`'s real file under `tmp_path`, its bytes changed by `edit`."""
    path = tmp_path / DATASETS[name].path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(edit((data_dir / DATASETS[name].path).read_bytes()))
    return path


def _latin1_at_middle(data: bytes) -> bytes:
    middle = data.index(b" ", len(data) // 2)
    return data[:middle] + b" caf\xe9 " + data[middle + 1 :]  # "café" as Latin-1 writes it


@pytest.mark.realdata
@pytest.mark.parametrize("name", list(DATASETS))
def test_a_byte_that_is_not_utf8_names_file_and_line(data_dir, tmp_path, monkeypatch, name):
    monkeypatch.setattr(utils.answers, "parse_integer_answer", fast_parse)
    path = _copy(data_dir, tmp_path, name, _latin1_at_middle)
    data = path.read_bytes()
    line = data.count(b"\n", 0, data.index(b"\xe9")) + 1
    with pytest.raises(DataError, match="not UTF-8") as err:
        load(name, tmp_path)
    assert err.value.path == path and err.value.line == line and f"line {line}" in str(err.value)


@pytest.mark.realdata
@pytest.mark.parametrize("name", list(DATASETS))
def test_a_truncated_copy_is_an_error_not_a_smaller_set(data_dir, tmp_path, monkeypatch, name):
    monkeypatch.setattr(utils.answers, "parse_integer_answer", fast_parse)
    path = _copy(data_dir, tmp_path, name, lambda d: d[: d.rindex(b"\n", 0, len(d) * 2 // 3) + 1])
    for loading in (lambda: load(name, tmp_path), lambda: DATASETS[name].loader(path)):
        with pytest.raises(DataError) as err:
            loading()
        assert err.value.path == path
    if path.suffix == ".jsonl":  # a CSV may be cut inside a quoted problem: an unterminated quote then
        assert f"but MANIFEST.md lists {DATASETS[name].expected_records}" in str(err.value)
        sample = tmp_path / f"sample{path.suffix}"  # the same records under another name: a sample, no error
        sample.write_bytes(path.read_bytes())
        assert 0 < len(DATASETS[name].loader(sample)) < DATASETS[name].expected_records


@pytest.mark.realdata
@pytest.mark.parametrize("name", list(DATASETS))
@pytest.mark.parametrize("content", [b"", b"\n\n", b"\x00\x01binary\x00"], ids=["empty", "blank", "binary"])
def test_an_empty_or_binary_file_is_an_error(data_dir, tmp_path, name, content):
    path = _copy(data_dir, tmp_path, name, lambda d: content)
    with pytest.raises(DataError) as err:
        DATASETS[name].loader(path)
    assert err.value.path == path and str(path) in str(err.value)
    if content.startswith(b"\x00"):
        assert "binary" in str(err.value) and err.value.line == 1


@pytest.mark.realdata
def test_a_truncated_sample_submission_is_an_error(data_dir, tmp_path):
    path = tmp_path / SAMPLE_SUBMISSION
    path.parent.mkdir(parents=True)
    path.write_bytes(b"".join((data_dir / SAMPLE_SUBMISSION).read_bytes().splitlines(keepends=True)[:3]))
    with pytest.raises(DataError, match="2 records, but MANIFEST.md lists 3"):
        load_sample_submission(path)


def test_csv_header_only_and_bad_quoting(tmp_path):
    header_only = _write(tmp_path / "a.csv", ["id,problem,answer\n"])
    with pytest.raises(DataError, match="no records"):
        load_aimo1_train(header_only)
    # an unterminated quote would swallow every later row into one problem: an error at its record
    lines = ["id,problem,answer\n", "a1,P,3\n", 'a2,"Open quote,4\n', "a3,Q,5\n", "a4,R,6\n"]
    unterminated = _write(tmp_path / "b.csv", lines)
    with pytest.raises(DataError, match="unterminated quote") as err:
        load_aimo1_train(unterminated)
    _assert_names(err, unterminated, 3, "<record>")
    stray = _write(tmp_path / "c.csv", ["id,problem,answer\n", 'a1,"P" and more,3\n'])
    with pytest.raises(DataError, match="bad quoting") as err:
        load_aimo1_train(stray)
    _assert_names(err, stray, 2, "<record>")
    folder = tmp_path / "d.csv"
    folder.mkdir()
    with pytest.raises(DataError, match="is a folder"):
        load_aimo1_train(folder)


def test_load_problems_rejects_bad_bytes_with_the_line(tmp_path):
    good = json.dumps({"id": "a-0", "source": "a", "problem": "Q"}) + "\n"
    path = tmp_path / "p.jsonl"
    path.write_bytes(good.encode() + b'{"id": "a-1", "source": "a", "problem": "caf\xe9"}\n')
    with pytest.raises(DataError, match="not UTF-8") as err:
        load_problems(path)
    assert err.value.line == 2 and "column 45" in str(err.value)  # the byte after `"caf`


# ---------------------------------------------------------------- our own prepared files


@pytest.mark.realdata
def test_save_and_load_problems_round_trip(sets, tmp_path):
    problems = sets["tora"][:3] + sets["aimo_val_aime"][:3] + sets["aimo1_test"]
    path = save_problems(tmp_path / "prepared/eval.jsonl", problems)
    assert load_problems(path) == problems


def test_save_is_atomic(tmp_path):
    path = save_problems(tmp_path / "p.jsonl", [Problem("a-1", "a", "P", answer=1)])
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_problems(path, [Problem("a-2", "a", "Q", metadata={"bad": object()})])
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["p.jsonl"]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"id": "a-1", "source": "a", "problem": "P", "answer": "5"}, "answer"),
        ({"id": "a-1", "source": "a"}, "problem"),
        ({"id": "a-1", "source": "a", "problem": "P", "metadata": []}, "metadata"),
        ({"id": "a-1", "source": "a", "problem": "P", "extra": 1}, "extra"),
    ],
)
def test_load_problems_validates(tmp_path, row, field):
    good = json.dumps({"id": "a-0", "source": "a", "problem": "Q"}) + "\n"
    path = _write(tmp_path / "p.jsonl", [good, json.dumps(row) + "\n"])
    with pytest.raises(DataError) as err:
        load_problems(path)
    _assert_names(err, path, 2, field)


def test_the_projects_own_json_files_name_file_and_line(tmp_path):
    from utils.io import read_jsonl, read_metrics, write_metrics

    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": "\xff"}\n')
    with pytest.raises(ValueError, match=re.escape(f"{path}:2: not UTF-8")):
        read_jsonl(path)
    metrics = write_metrics(tmp_path, "01_data_prep", {"n": 3})
    assert read_metrics(tmp_path, "01_data_prep") == {"n": 3}
    metrics.write_text('{"n": 3')  # a truncated copy
    with pytest.raises(ValueError, match=re.escape(f"{metrics}:1: not valid JSON")):
        read_metrics(tmp_path, "01_data_prep")
