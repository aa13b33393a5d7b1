"""Files written so that a crash never leaves half of one behind, and the metrics.json contract.

Every notebook writes `OUTPUT_DIR/<notebook>/metrics.json` and reads what earlier ones wrote.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temporary file beside `path`, then rename: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are ordinary shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    text = "".join(json.dumps(r, ensure_ascii=False, default=_jsonable) + "\n" for r in rows)
    return atomic_write_text(path, text)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read JSON Lines; a bad line (not JSON, not UTF-8) raises an error naming the file and the line."""
    path = Path(path)
    rows = []
    # "\n" only: str.splitlines also splits at U+2028/U+2029, which write_jsonl keeps inside strings
    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    return rows


# ---------------------------------------------------------------- reading text files


class TextFileError(ValueError):
    """A file that cannot be read as UTF-8 text; `line` is where the trouble is, when there is one."""

    def __init__(self, path: Path, reason: str, line: int | None = None):
        self.path, self.reason, self.line = path, reason, line
        super().__init__(f"{path}:{line}: {reason}" if line else f"{path}: {reason}")


def read_text(path: str | os.PathLike, kind: str = "file") -> str:
    """The UTF-8 text of `path` (a leading BOM dropped). Every reason it is not that raises
    `TextFileError` naming the file, and the line where there is one: missing, a folder, unreadable,
    UTF-16, binary (NUL bytes), bytes that are not UTF-8 (a Latin-1 or Windows-1252 copy)."""
    path = Path(path)
    if path.is_dir():
        raise TextFileError(path, f"is a folder, not a {kind}")
    if not path.is_file():
        raise TextFileError(path, "not a regular file" if path.exists() else f"{kind} not found")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TextFileError(path, f"cannot read ({e.strerror or e})") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise TextFileError(path, "UTF-16 or UTF-32 text (a byte-order mark); save it as UTF-8", 1)
    if b"\0" in data:
        raise TextFileError(
            path, "binary data (a NUL byte), not a text file", _line_at(data, data.index(b"\0"))
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        reason = (
            f"not UTF-8 text (byte 0x{data[e.start]:02x} at column {column}; "
            "a Latin-1 or Windows file? save it as UTF-8)"
        )
        raise TextFileError(path, reason, _line_at(data, e.start)) from None


def _line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def csv_error_reason(error: Exception) -> str:
    """What a `csv.Error` from a strict reader means to a user: where a quoted field went wrong."""
    text = str(error)
    if "unexpected end of data" in text:
        return "unterminated quote: a quoted field that starts in this record never closes"
    if "expected after" in text:
        return f"bad quoting ({text}): a quote inside a field must be doubled, or a quote was never closed"
    return f"not a valid CSV record ({text})"


def write_metrics(output_dir: str | os.PathLike, notebook: str, metrics: dict) -> Path:
    """`OUTPUT_DIR/<notebook>/metrics.json`, the headline figures later notebooks and the README read."""
    return atomic_write_json(Path(output_dir) / notebook / "metrics.json", metrics)


def read_metrics(output_dir: str | os.PathLike, notebook: str) -> dict:
    path = Path(output_dir) / notebook / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run notebook {notebook} first (make run-all runs them in order)"
        )
    return read_json(path)


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file; a damaged one raises an error naming the file and where the JSON breaks."""
    path = Path(path)
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg}; a truncated file?)") from None


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def fingerprint(obj: Any, length: int = 16) -> str:
    """A short hash of `obj` as canonical JSON, the same in every process: keys sorted, sets sorted (their
    iteration order follows the string hash seed), dataclasses and paths as `atomic_write_json` writes them.
    It names what a saved result depends on, so that a rerun reuses it only when nothing changed."""
    import hashlib

    def default(o: Any) -> Any:
        if isinstance(o, (set, frozenset)):
            return sorted(map(str, o))
        try:
            return _jsonable(o)
        except TypeError:
            return str(o)

    text = json.dumps(obj, sort_keys=True, default=default)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
