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
    """Read JSON Lines; a bad line raises an error naming the file and the line number."""
    path = Path(path)
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    return rows


def write_metrics(output_dir: str | os.PathLike, notebook: str, metrics: dict) -> Path:
    """`OUTPUT_DIR/<notebook>/metrics.json`, the headline figures later notebooks and the README read."""
    return atomic_write_json(Path(output_dir) / notebook / "metrics.json", metrics)


def read_metrics(output_dir: str | os.PathLike, notebook: str) -> dict:
    path = Path(output_dir) / notebook / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run notebook {notebook} first (make run-all runs them in order)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


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
