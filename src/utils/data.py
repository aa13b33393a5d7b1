"""The record schema every data set is loaded into, and the loaders (one per public data set).

Each loader reads one file of `DATA_DIR` (see `../shared/data/MANIFEST.md`), validates every record while
reading, and returns `list[Problem]`. Bad input raises `DataError`, whose message names the file, the
1-based line and the field. `DATASETS` maps a set's name to its relative path and loader, so notebooks can
iterate over the sets; `load_all` loads every set present in a folder.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path


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
        return cls(
            **{k: row[k] for k in ("id", "source", "problem", "solution", "answer", "metadata") if k in row}
        )


class DataError(ValueError):
    """A data file that does not hold what its loader expects; the message names the file, and the line and
    field where the trouble is one record's (None for the whole file: empty, too few records)."""

    def __init__(self, path: str | os.PathLike, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field = Path(path), line, field
        where = "".join([f", line {line}" if line else "", f", field {field!r}" if field else ""])
        super().__init__(f"{path}{where}: {message}")


PathLike = str | os.PathLike
Row = dict  # one raw record


# ---------------------------------------------------------------- reading and validating raw records


def _read_text(path: PathLike) -> str:
    """The file's UTF-8 text; a missing file is FileNotFoundError, any other unreadable one a DataError."""
    from utils.io import TextFileError, read_text

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        return read_text(path, "data file")
    except TextFileError as e:
        raise DataError(path, e.line, None, e.reason) from None


def _iter_jsonl(path: PathLike) -> Iterator[tuple[int, Row]]:
    """(1-based line, object) for every non-blank line; a line that is not a JSON object is a DataError,
    and so is a file with no records at all."""
    path = Path(path)
    n = 0
    for lineno, line in enumerate(_read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, lineno, "<record>", f"not valid JSON ({e.msg}; truncated line?)") from None
        if not isinstance(row, dict):
            raise DataError(path, lineno, "<record>", f"expected a JSON object, got {type(row).__name__}")
        n += 1
        yield lineno, row
    if n == 0:
        raise DataError(path, None, None, "no records (an empty file?)")


def _iter_csv(path: PathLike, columns: tuple[str, ...]) -> Iterator[tuple[int, Row]]:
    """(1-based line where the record starts, row) for every CSV record; the header must hold `columns`.

    The reader is strict: an unterminated quote, which a lenient reader would let swallow every row
    after it into one field, is a DataError at the line where its record starts."""
    from utils.io import csv_error_reason

    path = Path(path)
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""), strict=True)
    start, n = 1, 0
    try:
        header = reader.fieldnames or []
        for column in columns:
            if column not in header:
                raise DataError(
                    path, 1, column, f"missing CSV column (header: {', '.join(header) or 'empty'})"
                )
        start = reader.line_num + 1
        for row in reader:
            _check_csv_row(path, start, row, header, columns)
            n += 1
            yield start, row
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(path, start, "<record>", csv_error_reason(e)) from None
    if n == 0:
        raise DataError(path, None, None, "no records (only a header)")


def _check_csv_row(path: Path, line: int, row: Row, header: list, columns: tuple[str, ...]) -> None:
    if None in row:  # DictReader puts surplus values under the key None
        raise DataError(
            path, line, "<record>", f"{len(header) + len(row[None])} values, header has {len(header)}"
        )
    for column in columns:
        if row[column] is None:
            raise DataError(path, line, column, "missing value (short row)")


def _get(
    row: Row, key: str, types: type | tuple[type, ...], path: PathLike, line: int, optional: bool = False
):
    """`row[key]`, checked to be of `types` (bool never counts as a number)."""
    if key not in row:
        if optional:
            return None
        raise DataError(path, line, key, "missing required field")
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, types):
        names = "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise DataError(path, line, key, f"expected {names}, got {type(value).__name__} {value!r:.40}")
    return value


def _int(row: Row, key: str, path: PathLike, line: int) -> int:
    """A required integer field, given as a number or as a string of digits ("1983")."""
    value = _get(row, key, (int, str), path, line)
    try:
        return int(value)
    except ValueError:
        raise DataError(path, line, key, f"expected an integer, got {value!r:.40}") from None


def _text(row: Row, key: str, path: PathLike, line: int) -> str:
    """A required non-empty string field."""
    value = _get(row, key, str, path, line)
    if not value.strip():
        raise DataError(path, line, key, "empty")
    return value


def _to_int(value: int | float | str | None) -> int | None:
    """The integer an answer denotes ("1,000", 7.0, "336^\\circ"), or None when it is not an integer."""
    from utils.answers import parse_integer_answer  # imported here: data must import without it

    return parse_integer_answer(value)


def _level(value: int | str | None) -> int | None:
    """MATH levels come as 3 or "Level 3" (and "Level ?" twice in train): the int, or None."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(?:Level\s*)?(\d+)\s*", value or "")
    return int(match.group(1)) if match else None


class _IdChecker:
    """Rejects empty and duplicate ids, naming the line of the first occurrence."""

    def __init__(self, path: PathLike):
        self.path, self.seen = path, {}

    def __call__(self, prefix: str, native: str, line: int, key: str = "id") -> str:
        """`<prefix>-<native>` (or `native` when `prefix` is empty), checked against the ids seen so far."""
        if not native.strip():
            raise DataError(self.path, line, key, "empty id")
        problem_id = f"{prefix}-{native}" if prefix else native
        if problem_id in self.seen:
            raise DataError(
                self.path, line, key, f"duplicate id {problem_id!r} (first on line {self.seen[problem_id]})"
            )
        self.seen[problem_id] = line
        return problem_id


def _split_of(path: PathLike) -> str:
    return Path(path).stem  # train.jsonl -> "train"


def _manifest_checked(loader: Callable[[PathLike], list]) -> Callable[[PathLike], list]:
    """`loader`, raising a DataError when it reads a registered file (`.../gsm8k/train.jsonl`) that holds
    fewer records than the MANIFEST lists: a truncated or partial copy would otherwise shrink every count
    and score downstream without a word. Files under other names (a sample, a test's copy) are not checked."""

    @functools.wraps(loader)
    def load_checked(path: PathLike) -> list:
        records = loader(path)
        for d in DATASETS.values():
            if d.loader is load_checked:
                _check_count(path, len(records), d.path, d.expected_records, d.name)
        return records

    return load_checked


def _check_count(path: PathLike, n: int, registered_path: str, expected: int, name: str) -> None:
    posix = Path(path).as_posix()
    if (posix == registered_path or posix.endswith("/" + registered_path)) and n < expected:
        raise DataError(
            path, None, None, f"{n} records, but MANIFEST.md lists {expected} for {name} (a truncated copy?)"
        )


# ---------------------------------------------------------------- one loader per data set


@_manifest_checked
def load_gsm8k(path: PathLike) -> list[Problem]:
    """GSM8K (`gsm8k/train.jsonl`, `gsm8k/test.jsonl`): the answer follows `#### ` ("1,000" allowed)."""
    split, ids, out = _split_of(path), _IdChecker(path), []
    for line, row in _iter_jsonl(path):
        solution = _text(row, "answer", path, line)
        if "####" not in solution:
            raise DataError(path, line, "answer", "no '#### <answer>' line")
        answer_text = solution.rsplit("####", 1)[1].strip()
        pid = ids("gsm8k", f"{split}-{len(out):05d}", line)
        out.append(
            Problem(
                pid,
                "gsm8k",
                _text(row, "question", path, line),
                solution,
                _to_int(answer_text),
                {"split": split, "answer_text": answer_text},
            )
        )
    return out


def _math_id(unique_id: str) -> str:
    # "test/precalculus/807.json" -> "test-precalculus-807": the source's own id, stable
    return unique_id.removesuffix(".json").replace("/", "-")


@_manifest_checked
def load_math(path: PathLike) -> list[Problem]:
    """Hendrycks MATH (`math/train.jsonl`, `math/test.jsonl`): the answer is the solution's last `\\boxed{}`."""
    from utils.answers import last_boxed  # imported here: data must import without it

    ids, out = _IdChecker(path), []
    for line, row in _iter_jsonl(path):
        solution = _text(row, "solution", path, line)
        answer_text = last_boxed(solution)
        if answer_text is None:
            raise DataError(path, line, "solution", "no \\boxed{} answer")
        unique_id = _text(row, "unique_id", path, line)
        meta = {
            "split": unique_id.split("/")[0],
            "level": _level(_get(row, "level", str, path, line)),
            "type": _get(row, "type", str, path, line),
            "unique_id": unique_id,
            "answer_text": answer_text,
        }
        out.append(
            Problem(
                ids("math", _math_id(unique_id), line, "unique_id"),
                "math",
                _text(row, "problem", path, line),
                solution,
                _to_int(answer_text),
                meta,
            )
        )
    return out


@_manifest_checked
def load_math500(path: PathLike) -> list[Problem]:
    """MATH-500 (`math/math500.jsonl`), a subset of MATH test with an `answer` field."""
    ids, out = _IdChecker(path), []
    for line, row in _iter_jsonl(path):
        answer_text = _get(row, "answer", str, path, line)
        unique_id = _text(row, "unique_id", path, line)
        meta = {
            "split": "test",
            "level": _level(_get(row, "level", (int, str), path, line)),
            "type": _get(row, "subject", str, path, line),
            "unique_id": unique_id,
            "answer_text": answer_text,
        }
        out.append(
            Problem(
                ids("math500", _math_id(unique_id), line, "unique_id"),
                "math500",
                _text(row, "problem", path, line),
                _get(row, "solution", str, path, line),
                _to_int(answer_text),
                meta,
            )
        )
    return out


@_manifest_checked
def load_aime(path: PathLike) -> list[Problem]:
    """AIME 1983-2024 (`aime/aime_1983_2024.jsonl`); ids such as `aime-1983-1`, `aime-2022-I-1`."""
    ids, out = _IdChecker(path), []
    for line, row in _iter_jsonl(path):
        answer_text = str(_get(row, "answer", (str, int), path, line))
        meta = {
            "year": _int(row, "year", path, line),
            "part": _get(row, "part", str, path, line, optional=True) or None,
            "number": _int(row, "problem number", path, line),
            "answer_text": answer_text,
        }
        out.append(
            Problem(
                ids("aime", _get(row, "id", str, path, line), line),
                "aime",
                _text(row, "problem", path, line),
                None,
                _to_int(answer_text),
                meta,
            )
        )
    return out


@_manifest_checked
def load_aime2025(path: PathLike) -> list[Problem]:
    """AIME 2025 (`aime/aime_2025.jsonl`): no ids in the file; it lists AIME I 1-15, then AIME II 1-15."""
    ids, out = _IdChecker(path), []
    for line, row in _iter_jsonl(path):
        answer_text = str(_get(row, "answer", (str, int), path, line))
        part, number = ("I", len(out) + 1) if len(out) < 15 else ("II", len(out) - 14)
        meta = {"year": 2025, "part": part, "number": number, "answer_text": answer_text}
        out.append(
            Problem(
                ids("aime2025", f"{part}-{number}", line),
                "aime2025",
                _text(row, "question", path, line),
                None,
                _to_int(answer_text),
                meta,
            )
        )
    return out


_AOPS_URL = re.compile(r"/(\d{4})_(AIME|AMC)_(\w+?)_Problems/Problem_(\d+)")


def _aops_meta(url: str) -> dict:
    """Year, contest, part and number from an AoPS wiki URL (`.../2022_AIME_I_Problems/Problem_1`)."""
    match = _AOPS_URL.search(url)
    if not match:
        return {"url": url}
    year, contest, part, number = match.groups()
    return {"url": url, "year": int(year), "contest": contest, "part": part, "number": int(number)}


def _load_aimo_validation(path: PathLike, source: str) -> list[Problem]:
    ids, out = _IdChecker(path), []
    for line, row in _iter_jsonl(path):
        raw_answer = _get(row, "answer", (str, int, float), path, line)
        file_id = _get(row, "id", (int, str), path, line)
        meta = {
            **_aops_meta(_get(row, "url", str, path, line)),
            "file_id": file_id,
            "answer_text": str(raw_answer),
        }
        # The files' own ids restart at 0 per year (amc.jsonl): the contest problem named by the URL is stable.
        native = f"{meta['year']}-{meta['part']}-{meta['number']}" if "number" in meta else f"{file_id}"
        pid = ids(source, native, line)
        out.append(
            Problem(
                pid,
                source,
                _text(row, "problem", path, line),
                _get(row, "solution", str, path, line, optional=True),
                _to_int(raw_answer),
                meta,
            )
        )
    return out


@_manifest_checked
def load_aimo_val_aime(path: PathLike) -> list[Problem]:
    """AI-MO validation AIME 2022-24 (`aimo_validation/aime.jsonl`): answers are strings."""
    return _load_aimo_validation(path, "aimo_val_aime")


@_manifest_checked
def load_aimo_val_amc(path: PathLike) -> list[Problem]:
    """AI-MO validation AMC 2022-23 (`aimo_validation/amc.jsonl`): answers are numbers, no solutions."""
    return _load_aimo_validation(path, "aimo_val_amc")


def _load_kaggle_csv(path: PathLike, source: str, with_answer: bool) -> list[Problem]:
    ids, out = _IdChecker(path), []
    for line, row in _iter_csv(path, ("id", "problem", "answer") if with_answer else ("id", "problem")):
        answer = None
        if with_answer:
            try:
                answer = int(row["answer"].strip())
            except ValueError:
                raise DataError(
                    path, line, "answer", f"expected an integer, got {row['answer']!r:.40}"
                ) from None
        kaggle_id = row["id"].strip()
        if not row["problem"].strip():
            raise DataError(path, line, "problem", "empty")
        out.append(
            Problem(
                ids(source, kaggle_id, line),
                source,
                row["problem"],
                None,
                answer,
                {"kaggle_id": kaggle_id},
            )
        )
    return out


@_manifest_checked
def load_aimo1_train(path: PathLike) -> list[Problem]:
    """Kaggle AIMO 1 `train.csv` (id, problem, answer); the Kaggle id is kept in `metadata["kaggle_id"]`."""
    return _load_kaggle_csv(path, "aimo1_train", with_answer=True)


@_manifest_checked
def load_aimo1_test(path: PathLike) -> list[Problem]:
    """Kaggle AIMO 1 `test.csv` (id, problem): no answers."""
    return _load_kaggle_csv(path, "aimo1_test", with_answer=False)


@_manifest_checked
def load_aimo2_reference(path: PathLike) -> list[Problem]:
    """Kaggle AIMO 2 `reference.csv` (id, problem, answer)."""
    return _load_kaggle_csv(path, "aimo2_reference", with_answer=True)


def load_sample_submission(path: PathLike) -> dict[str, int]:
    """Kaggle `sample_submission.csv` (id, answer) as {kaggle id: answer}; it holds no problems."""
    out: dict[str, int] = {}
    for line, row in _iter_csv(path, ("id", "answer")):
        kaggle_id = row["id"].strip()
        if not kaggle_id or kaggle_id in out:
            raise DataError(path, line, "id", f"empty or duplicate id {kaggle_id!r}")
        try:
            out[kaggle_id] = int(row["answer"].strip())
        except ValueError:
            raise DataError(path, line, "answer", f"expected an integer, got {row['answer']!r:.40}") from None
    _check_count(path, len(out), SAMPLE_SUBMISSION, SAMPLE_SUBMISSION_RECORDS, "sample_submission")
    return out


def _check_messages(messages: list, path: PathLike, line: int) -> str:
    """Chat messages must be {role, content} dicts, the first from the user: returns its content."""
    for i, message in enumerate(messages):
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise DataError(
                path, line, f"messages[{i}]", "expected an object with string 'role' and 'content'"
            )
    if not messages or messages[0]["role"] != "user":
        raise DataError(path, line, "messages", "the first message must be the user's")
    return messages[0]["content"]


@_manifest_checked
def load_tora(path: PathLike) -> list[Problem]:
    """ToRA tool-integrated examples (`tir/tora_examples.jsonl`).

    The problem is the first (user) message; `solution` is the set's chain-of-thought solution (`gt_cot`);
    the tool-integrated conversation stays in `metadata["messages"]`; the answer comes from `gt`.
    """
    ids, out = _IdChecker(path), []
    for line, row in _iter_jsonl(path):
        messages = _get(row, "messages", list, path, line)
        answer_text = _get(row, "gt", (str, int), path, line)
        meta = {
            "messages": messages,
            "dataset": _get(row, "dataset", str, path, line, optional=True),
            "level": _level(_get(row, "level", (str, int), path, line, optional=True)),
            "answer_text": str(answer_text),
        }
        out.append(
            Problem(
                ids("tora", _get(row, "id", str, path, line), line),
                "tora",
                _check_messages(messages, path, line),
                _get(row, "gt_cot", str, path, line, optional=True),
                _to_int(answer_text),
                meta,
            )
        )
    return out


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class DataSet:
    """One file of the data folder: where it lies, how to load it, how many records the MANIFEST lists."""

    name: str
    path: str  # relative to the data folder
    loader: Callable[[PathLike], list[Problem]]
    expected_records: int

    def load(self, data_dir: PathLike) -> list[Problem]:
        """The set's problems; fewer than the MANIFEST lists is a DataError (see `_manifest_checked`)."""
        return self.loader(Path(data_dir) / self.path)


DATASETS: dict[str, DataSet] = {
    d.name: d
    for d in [
        DataSet("gsm8k_train", "gsm8k/train.jsonl", load_gsm8k, 7473),
        DataSet("gsm8k_test", "gsm8k/test.jsonl", load_gsm8k, 1319),
        DataSet("math_train", "math/train.jsonl", load_math, 7500),
        DataSet("math_test", "math/test.jsonl", load_math, 5000),
        DataSet("math500", "math/math500.jsonl", load_math500, 500),
        DataSet("aime", "aime/aime_1983_2024.jsonl", load_aime, 933),
        DataSet("aime2025", "aime/aime_2025.jsonl", load_aime2025, 30),
        DataSet("aimo_val_aime", "aimo_validation/aime.jsonl", load_aimo_val_aime, 90),
        DataSet("aimo_val_amc", "aimo_validation/amc.jsonl", load_aimo_val_amc, 83),
        DataSet("aimo1_train", "kaggle/aimo1/train.csv", load_aimo1_train, 10),
        DataSet("aimo1_test", "kaggle/aimo1/test.csv", load_aimo1_test, 3),
        DataSet("aimo2_reference", "kaggle/aimo2/reference.csv", load_aimo2_reference, 10),
        DataSet("tora", "tir/tora_examples.jsonl", load_tora, 30),
    ]
}
# Read with load_sample_submission: it holds no problems, so it is not in DATASETS.
SAMPLE_SUBMISSION = "kaggle/aimo1/sample_submission.csv"
SAMPLE_SUBMISSION_RECORDS = 3


def load(name: str, data_dir: PathLike) -> list[Problem]:
    """The set registered as `name` in `DATASETS`, read from `data_dir`."""
    if name not in DATASETS:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name].load(data_dir)


def load_all(data_dir: PathLike) -> dict[str, list[Problem]]:
    """Every registered set whose file exists under `data_dir` (absent files are skipped), by name."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder not found: {data_dir}")
    return {name: d.load(data_dir) for name, d in DATASETS.items() if (data_dir / d.path).is_file()}


# ---------------------------------------------------------------- our own prepared files


def save_problems(path: PathLike, problems: list[Problem]) -> Path:
    """Write problems as JSON Lines, atomically (a crash leaves the old file or none, never half of one)."""
    from utils.io import write_jsonl

    return write_jsonl(path, (p.to_dict() for p in problems))


def load_problems(path: PathLike) -> list[Problem]:
    """Read a file written by `save_problems`, validating every record.

    Reads line by line itself (rather than `utils.io.read_jsonl`) so that errors name the exact line.
    """
    ids, out = _IdChecker(path), []
    for line, row in _iter_jsonl(path):
        unknown = set(row) - {"id", "source", "problem", "solution", "answer", "metadata"}
        if unknown:
            raise DataError(path, line, sorted(unknown)[0], "unknown field")
        out.append(
            Problem(
                id=ids("", _get(row, "id", str, path, line), line),
                source=_text(row, "source", path, line),
                problem=_text(row, "problem", path, line),
                solution=_get(row, "solution", (str, type(None)), path, line, optional=True),
                answer=_get(row, "answer", (int, type(None)), path, line, optional=True),
                metadata=_get(row, "metadata", dict, path, line, optional=True) or {},
            )
        )
    return out
