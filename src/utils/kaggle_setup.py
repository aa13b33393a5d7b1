"""What the setup cell of every Kaggle kernel calls, once the wheels are installed (docs/KAGGLE.md).

The cell is written by `make kaggle` (tools/kaggle.py, which never ships); this is the part that runs on
Kaggle. It is imported before anything else of the package: keep its top-level imports to the standard
library.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path


def check_requirements(pins: Iterable[str]) -> list[str]:
    """After installing: each problem found with the pinned packages, as a sentence.

    A pinned package not installed at its pin, or a requirement of one (for this interpreter) that the
    image does not satisfy. Empty when everything fits.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    problems = []
    for pin in pins:
        req = Requirement(pin)
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            problems.append(f"{req.name} is not installed")
            continue
        if dist.version not in req.specifier:
            problems.append(f"{req.name} {dist.version} is installed, not {req.specifier}")
        for text in dist.requires or []:
            need = Requirement(text)
            if need.marker is not None and not need.marker.evaluate({"extra": ""}):
                continue
            try:
                have = distribution(need.name).version
            except PackageNotFoundError:
                problems.append(f"{req.name} needs {need.name}{need.specifier}, which is not installed")
                continue
            if not need.specifier.contains(have, prereleases=True):
                problems.append(f"{req.name} needs {need.name}{need.specifier}; {have} is installed")
    return problems


def link_outputs(
    needs: Mapping[str, str], input_root: Path | None = None, working: Path | None = None
) -> dict:
    """Make each earlier notebook's output folder appear where this notebook reads it: OUTPUT_DIR/<name>.

    `needs` maps the folder name (`01_data_prep`) to the kernel slug whose output holds it, attached via
    `kernel_sources`. Symlinks into the working folder; a real folder already there is kept.
    """
    from utils.paths import KAGGLE_INPUT, KAGGLE_WORKING

    input_root, working = input_root or KAGGLE_INPUT, working or KAGGLE_WORKING
    linked = {}
    for name, slug in needs.items():
        candidates = [input_root / slug / name, *sorted(input_root.glob(f"*/*/{slug}/{name}"))]
        source = next((c for c in candidates if c.is_dir()), None)
        if source is None:
            raise FileNotFoundError(
                f"{name}/ not found: attach the output of notebook {slug!r} "
                f"(Add Input > Notebooks) after it has run; looked in "
                f"{', '.join(map(str, candidates))}"
            )
        target = working / name
        if target.is_symlink():
            target.unlink()
        if not target.exists():
            working.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source, target_is_directory=True)
        linked[name] = target.resolve()
        print(f"{name}: {source}")
    return linked
