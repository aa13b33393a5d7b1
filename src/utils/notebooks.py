"""What every notebook does first (seed, quiet libraries, resolve paths), and keeping stored outputs clean.

`python -m utils.notebooks strip NB.ipynb` drops papermill's timing metadata so that a re-executed
notebook differs from the committed one only where its results changed.
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from utils.io import atomic_write_text
from utils.paths import on_kaggle, resolve_data_dir, resolve_output_dir


@dataclass
class Run:
    """One notebook's run: its name, where it writes, where raw data is, the device and dtype."""

    name: str
    output_dir: Path  # OUTPUT_DIR/<name>
    root_output_dir: Path  # OUTPUT_DIR, where earlier notebooks wrote
    data_dir: Path | None
    device: str
    dtype: str
    seed: int


def start(
    name: str,
    output_dir: str = "outputs",
    data_dir: str | None = None,
    seed: int = 0,
    require_data: bool = False,
) -> Run:
    """Seed everything, silence progress bars, resolve paths, and say where the run stands."""
    from utils.modeling import pick_device, pick_dtype, quiet_libraries, seed_everything

    quiet_libraries()
    seed_everything(seed)
    root = resolve_output_dir(output_dir)
    try:
        data = resolve_data_dir(data_dir)
    except FileNotFoundError:
        if require_data:
            raise
        print(f"DATA_DIR {data_dir!r} not found: using the embedded data only.")
        data = None
    device = pick_device()
    run = Run(
        name=name,
        output_dir=root / name,
        root_output_dir=root,
        data_dir=data,
        device=device.type,
        dtype=str(pick_dtype(device)).replace("torch.", ""),
        seed=seed,
    )
    run.output_dir.mkdir(parents=True, exist_ok=True)
    where = "Kaggle" if on_kaggle() else "local"
    print(
        f"{name}: {where}, device {run.device} ({run.dtype}), seed {seed}, raw data: "
        f"{'yes' if data else 'embedded only'}"
    )
    return run


def environment() -> dict:
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.cuda.is_available(),
    }


def strip(path: str | Path) -> None:
    """Remove papermill's per-cell timings and run metadata from an executed notebook."""
    path = Path(path)
    nb = json.loads(path.read_text())
    nb.get("metadata", {}).pop("papermill", None)
    for cell in nb.get("cells", []):
        meta = cell.get("metadata", {})
        meta.pop("papermill", None)
        meta.pop("execution", None)
        if meta.get("tags") == []:  # papermill adds empty tag lists, which jupytext would copy into the .py
            meta.pop("tags")
    atomic_write_text(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "strip":
        for p in sys.argv[2:]:
            strip(p)
    else:
        sys.exit("usage: python -m utils.notebooks strip NOTEBOOK.ipynb...")
