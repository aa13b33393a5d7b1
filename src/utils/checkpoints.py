"""Which `checkpoint-N` folder a rerun can resume from: every file checked the way resuming will read it.

A Kaggle session can die while a checkpoint is written, and a disk can fill up or a copy be cut short:
one truncated file in the newest checkpoint would make every rerun crash as it resumes. Here a damaged
checkpoint is found before the trainer touches it, reported by file, and skipped for the one before it.
Nothing here depends on the trainer that wrote the checkpoints (SFT, GRPO, ...): only on the files
Hugging Face's `Trainer` saves (weights as safetensors or torch files, `optimizer.pt`, `scheduler.pt`,
`rng_state.pth`, `trainer_state.json`, tokenizer and config JSON).
"""

from __future__ import annotations

import json
import shutil
import struct
import warnings
import zipfile
from pathlib import Path

PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"  # the Trainer writes it last: a folder without it is a save cut short
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "adapter_model.bin", "*.safetensors.index.json")
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
NOT_WEIGHTS_ONLY = ("training_args.bin",)  # a pickled TrainingArguments: resuming never loads it


def checkpoint_step(folder: str | Path) -> int | None:
    """N of a `checkpoint-N` folder, or None for any other name."""
    tail = Path(folder).name.removeprefix(PREFIX)
    return int(tail) if Path(folder).name.startswith(PREFIX) and tail.isdigit() else None


def checkpoint_folders(output_dir: str | Path) -> list[Path]:
    """The `checkpoint-N` folders of `output_dir`, newest (highest N) first."""
    found = [p for p in Path(output_dir).glob(f"{PREFIX}*") if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step, reverse=True)


def checkpoint_problem(folder: str | Path) -> str | None:
    """None when `folder` is a complete checkpoint whose every file loads; else what is wrong, naming the
    file. Checks: trainer state present, some model weights present, each JSON parses, each safetensors
    header is whole and covers exactly the file's size, each torch file loads (`weights_only`, memory
    mapped: the archive's index and objects are read, not every tensor)."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder}: not a folder"
    if not (folder / STATE_FILE).is_file():
        return f"{folder / STATE_FILE}: missing (the save was cut short)"
    if not any(any(folder.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        return f"{folder}: no model weights ({', '.join(WEIGHT_PATTERNS)})"
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        problem = file_problem(path)
        if problem:
            return f"{path}: {problem}"
    return None


def valid_checkpoint(folder: str | Path) -> str | None:
    """`folder` as a string when it is a checkpoint that can be resumed, else None."""
    return str(folder) if checkpoint_problem(folder) is None else None


def file_problem(path: str | Path) -> str | None:
    """None when a checkpoint file loads as its kind (JSON, safetensors, torch); else why it does not.
    Files of other kinds (a README, a tokenizer model) are not checked."""
    path = Path(path)
    if path.suffix == ".json":
        return _json_problem(path)
    if path.suffix == ".safetensors":
        return _safetensors_problem(path)
    if path.suffix in TORCH_SUFFIXES:
        return _torch_problem(path)
    return None


def _json_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except json.JSONDecodeError as e:
        return f"not valid JSON at line {e.lineno} ({e.msg}; truncated?)"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return None


def _safetensors_problem(path: Path) -> str | None:
    """The format: an 8-byte little-endian header length, a JSON header giving every tensor's byte range,
    then the data, which the ranges must cover exactly (what `safetensors` itself checks on load)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{size} bytes: too short for a safetensors header (truncated?)"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return f"header of {n} bytes in a file of {size} (truncated?)"
            header = json.loads(f.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
        return f"unreadable safetensors header ({type(e).__name__}: {e})"
    try:
        ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return "malformed safetensors header (no data offsets)"
    data = size - 8 - n
    if max(ends, default=0) != data:
        return f"tensors need {max(ends, default=0)} bytes of data, the file holds {data} (truncated?)"
    return None


def _torch_problem(path: Path) -> str | None:
    if not zipfile.is_zipfile(path):
        return "not a complete torch archive (its index is missing: truncated?)"
    if path.name in NOT_WEIGHTS_ONLY:
        return None
    import torch

    try:
        with _numpy_allowed():  # rng_state.pth holds numpy's generator state, as the Trainer allows
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        return f"does not load ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return None


def _numpy_allowed():
    import numpy as np
    import torch

    core = getattr(np, "_core", None) or np.core
    allowed = [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    return torch.serialization.safe_globals(allowed)


def last_valid_checkpoint(output_dir: str | Path, remove_damaged: bool = False) -> str | None:
    """The newest checkpoint of `output_dir` that can be resumed, or None.

    Each damaged newer one is reported in a warning naming its bad file and, with `remove_damaged`,
    deleted, so that the trainer neither resumes it nor mixes it with the checkpoints it writes next.
    """
    for folder in checkpoint_folders(output_dir):
        problem = checkpoint_problem(folder)
        if problem is None:
            return str(folder)
        action = "removed" if remove_damaged else "skipped"
        warnings.warn(f"damaged checkpoint {action}: {problem}", stacklevel=2)
        if remove_damaged:
            shutil.rmtree(folder, ignore_errors=True)
    return None
