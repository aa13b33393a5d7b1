"""Where things are, resolved at run time: the same notebook runs locally and on Kaggle unedited.

Kaggle mounts attached inputs under `/kaggle/input/<slug>/...` (older layout) or
`/kaggle/input/models/<owner>/<model>/<framework>/<variation>/<version>` and
`/kaggle/input/datasets/<owner>/<slug>` (newer layout); outputs go to `/kaggle/working`.
"""

from __future__ import annotations

import os
from pathlib import Path

KAGGLE_INPUT = Path(os.environ.get("KAGGLE_INPUT_DIR", "/kaggle/input"))
KAGGLE_WORKING = Path(os.environ.get("KAGGLE_WORKING_DIR", "/kaggle/working"))


def project_root() -> Path:
    """The repository root (the folder holding `src/`), or the working directory when installed elsewhere."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "src" / "utils").is_dir() and (parent / "notebooks").is_dir():
            return parent
    return Path.cwd()


def on_kaggle() -> bool:
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE")) or KAGGLE_INPUT.is_dir() and KAGGLE_WORKING.is_dir()


def resolve_output_dir(output_dir: str | os.PathLike = "outputs") -> Path:
    """A relative OUTPUT_DIR is taken from the project root (or /kaggle/working on Kaggle)."""
    path = Path(output_dir)
    if not path.is_absolute():
        path = (KAGGLE_WORKING if on_kaggle() else project_root()) / path
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The folder of raw data sets, or None for embedded data only.

    A relative path is taken from the project root; on Kaggle a name that is not found is looked up
    among the attached inputs (`/kaggle/input/<name>` or `/kaggle/input/datasets/*/<name>`).
    """
    if not data_dir:
        return None
    path = Path(data_dir)
    candidates = [path] if path.is_absolute() else [project_root() / path, Path.cwd() / path]
    candidates += [KAGGLE_INPUT / path.name, *sorted(KAGGLE_INPUT.glob(f"datasets/*/{path.name}"))]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise FileNotFoundError(
        f"DATA_DIR {str(data_dir)!r} not found (looked in: {', '.join(map(str, candidates))})"
    )


def find_competition_dir(slug: str) -> Path | None:
    """The attached competition's data folder on Kaggle, in either mount layout, if present."""
    for candidate in (KAGGLE_INPUT / slug, KAGGLE_INPUT / "competitions" / slug):
        if candidate.is_dir():
            return candidate
    return None


def find_model_dir(name: str, root: Path | None = None) -> Path | None:
    """A local folder holding a Hugging Face model (`config.json`) for `name`.

    `name` is a path, or a Kaggle Model handle such as `deepseek-ai/deepseek-math/transformers/7b-rl`
    or a bare slug such as `deepseek-math-7b-rl`, searched for under the Kaggle input root in both
    mount layouts. The newest version folder wins.
    """
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return path.resolve()
    root = root or KAGGLE_INPUT
    if not root.is_dir():
        return None
    parts = [p.lower() for p in Path(name).parts if p not in ("/", "")]
    found = []
    for config in root.glob("**/config.json"):
        if len(config.relative_to(root).parts) > 8:
            continue
        folder = str(config.parent.relative_to(root)).lower()
        if parts and all(part in folder for part in parts[-2:]):
            found.append(config.parent)
    if not found:
        return None
    return sorted(found, key=_version_key)[-1].resolve()


def _version_key(path: Path) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in path.parts)
