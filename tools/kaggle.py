"""Package the series for Kaggle (`make kaggle`) and upload it (`make kaggle-push`).

A developer tool, outside the package it uploads: run from the repository root with the package on the path,
`PYTHONPATH=src python -m tools.kaggle build --out dist/kaggle` writes, from scratch and then swapped in whole:
- `package/`: this package (`src/utils/**`) and `requirements.txt` as a Kaggle dataset;
- `wheels/`: a flat folder of wheels for what Kaggle's image lacks or has at another version (never torch:
  Kaggle's CUDA build must stay), so that every notebook installs offline, the submission included;
- `data/` (with `--data-dir`): the public data sets, without the competition files Kaggle attaches itself;
- `<notebook>/`: each existing notebook with Kaggle values in its parameters cell, a first setup cell,
  and a `kernel-metadata.json` with every field set;
- `manifest.json`: what was written and which notebook's output feeds which.

`python -m tools.kaggle push [--dry-run]` runs the `kaggle` CLI on those folders in order.

On Kaggle the setup cell calls `utils.kaggle_setup`, the only part of this work that runs there.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

NOTEBOOKS = (
    "01_data_prep",
    "02_lora_sft",
    "03_adapter_comparison",
    "04_quantized_inference",
    "05_submission",
    "06_grpo",
)
PREFIX = "aimo-peft"
PACKAGE_SLUG = f"{PREFIX}-utils"
WHEELS_SLUG = f"{PREFIX}-wheels"
DATA_SLUG = f"{PREFIX}-data"
PLACEHOLDER_USER = "your-kaggle-username"
WORKING = "/kaggle/working"

# DeepSeek-Math-7B-RL on Kaggle Models (owner/model/framework/variation/version); mounted at
# /kaggle/input/deepseek-math/pytorch/deepseek-math-7b-rl/1 (older layout) or under /kaggle/input/models/.
# RL rather than base: the strongest starting point for a small LoRA budget, and its chat format is ours.
MODEL_SOURCE = "deepseek-ai/deepseek-math/pytorch/deepseek-math-7b-rl/1"
MODEL_PARAM = MODEL_SOURCE.rsplit("/", 1)[0]  # without the version: `find_model_dir` takes the newest
# The push API's default GPU is a P100, which Kaggle's current CUDA torch no longer supports.
GPU_SHAPE = "NvidiaTeslaT4"  # "GPU T4 x2"
KAGGLE_PYTHONS = ("3.11", "3.12")  # Kaggle's image moved to 3.12 in 2025; 3.11 kept for older images
# Ubuntu 22.04 (glibc 2.35) base; pip does not expand manylinux_2_X tags by itself, so list them.
PLATFORMS = tuple(f"manylinux_2_{m}_x86_64" for m in range(35, 16, -1)) + ("manylinux2014_x86_64",)

# What the notebooks import that Kaggle's image lacks or has at another version (pins: requirements.txt).
WHEEL_ROOTS = (
    "transformers",
    "tokenizers",
    "safetensors",
    "accelerate",
    "peft",
    "trl",
    "bitsandbytes",
    "datasets",
    "math-verify",
)
# Dependencies left to Kaggle's image, never shipped: torch and what its CUDA build and the notebook
# server rely on. A shipped package needing a newer one is reported on Kaggle by the setup cell
# (`utils.kaggle_setup.check_requirements`).
KAGGLE_PROVIDED = frozenset({
    "torch", "torchvision", "torchaudio", "triton", "numpy", "pandas", "pyarrow", "scipy", "python-dateutil",
    "tzdata", "pytz", "sympy", "mpmath", "networkx", "jinja2", "markupsafe", "filelock", "fsspec",
    "typing-extensions", "setuptools", "packaging", "pyyaml", "psutil", "regex", "tqdm", "requests", "idna",
    "certifi", "urllib3", "charset-normalizer", "anyio", "h11", "sniffio", "click", "typer", "shellingham",
    "rich", "pygments", "markdown-it-py", "mdurl", "pydantic", "pydantic-core", "annotated-types",
    "typing-inspection", "annotated-doc", "aiohttp", "six",
})  # fmt: skip


class KaggleError(RuntimeError):
    """A build or push step cannot go on; the message says what is missing and how to fix it."""


@dataclass(frozen=True)
class KernelSpec:
    """How one notebook runs on Kaggle."""

    name: str
    title: str  # Kaggle derives the kernel's slug from it: keep `slugify(title)` == the id's slug
    needs: tuple[str, ...] = ()  # earlier notebooks whose output folders it reads
    gpu: bool = True
    internet: bool = False  # everything comes from attached inputs; AIMO submissions require it off
    competition: bool = False  # attach the competition's data
    # Kaggle values beyond MODEL, DATA_DIR and OUTPUT_DIR (None: the build's choice)
    params: Mapping[str, object] = field(default_factory=dict)


# 02 on 2x T4: QLoRA (nf4) fits one card. Estimated from benchmarks/GPU.md (H100 QLoRA: 3300 tokens/s)
# at about 1/12 of that on a T4: 200 steps of 8 x 1024 tokens in about 2 h, plus two 100-problem evaluations.
SPECS: dict[str, KernelSpec] = {
    "01_data_prep": KernelSpec("01_data_prep", "AIMO PEFT 01 Data Prep", gpu=False),  # tokenizer only
    "02_lora_sft": KernelSpec(
        "02_lora_sft", "AIMO PEFT 02 LoRA SFT", needs=("01_data_prep",),
        params={"QUANTIZATION": "4bit", "TRAIN_SOURCES": "all", "EVAL_SOURCE": "gsm8k", "EVAL_LIMIT": 100,
                "MAX_STEPS": 200, "BATCH_SIZE": 4, "GRAD_ACCUM": 2, "LEARNING_RATE": 2e-4, "WARMUP_STEPS": 20,
                "MAX_LENGTH": 1024, "SAVE_STEPS": 50, "MAX_NEW_TOKENS": 512},
    ),
    "03_adapter_comparison": KernelSpec("03_adapter_comparison", "AIMO PEFT 03 Adapter Comparison",
                                        needs=("01_data_prep", "02_lora_sft")),
    "04_quantized_inference": KernelSpec("04_quantized_inference", "AIMO PEFT 04 Quantized Inference",
                                         needs=("01_data_prep", "02_lora_sft")),
    "05_submission": KernelSpec("05_submission", "AIMO PEFT 05 Submission", needs=("02_lora_sft",),
                                competition=True, params={"COMPETITION": None}),
    "06_grpo": KernelSpec("06_grpo", "AIMO PEFT 06 GRPO", needs=("01_data_prep", "02_lora_sft")),
}  # fmt: skip


# ---------------------------------------------------------------------------------------------- names


def slugify(title: str) -> str:
    """Kaggle's slug for a title: lower case, runs of other characters turned into single dashes."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def kernel_slug(name: str) -> str:
    return slugify(SPECS[name].title)


def default_user() -> str:
    """KAGGLE_USERNAME, else the username in kaggle.json, else a placeholder that `push` refuses."""
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    for path in _credential_files():
        try:
            return json.loads(path.read_text())["username"]
        except (OSError, ValueError, KeyError):
            continue
    return PLACEHOLDER_USER


def _credential_files() -> list[Path]:
    config = os.environ.get("KAGGLE_CONFIG_DIR")
    dirs = [Path(config)] if config else []
    return [d / "kaggle.json" for d in [*dirs, Path.home() / ".kaggle", Path.home() / ".config" / "kaggle"]]


# ---------------------------------------------------------------------------------------------- wheels


@dataclass(frozen=True)
class Pin:
    name: str  # canonical (PEP 503) name
    version: str

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


def read_pins(path: str | os.PathLike) -> dict[str, tuple[str, tuple[str, ...]]]:
    """`requirements.txt` as {canonical name: (version, extras)}; every line must be `name[extras]==version`."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as e:
            raise KaggleError(f"{path}:{lineno}: not a requirement ({e})") from None
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            raise KaggleError(
                f"{path}:{lineno}: {req.name} must be pinned with == (got {req.specifier or 'no pin'!s})"
            )
        pins[canonicalize_name(req.name)] = (specs[0].version, tuple(sorted(req.extras)))
    return pins


def select_wheels(
    requirements: str | os.PathLike,
    roots: Iterable[str] = WHEEL_ROOTS,
    provided: Iterable[str] = KAGGLE_PROVIDED,
    also: Iterable[str] = (),
    python: str = KAGGLE_PYTHONS[-1],
) -> list[Pin]:
    """The packages to ship: `roots` and their dependencies, minus what Kaggle's image provides.

    Dependencies are read from this environment's installed metadata (what the tests ran against), with
    markers evaluated for Kaggle (Linux x86_64, CPython `python`). Roots take their pins from
    `requirements`; the installed version must match. `also` names packages to ship even if Kaggle is
    assumed to provide them (at their installed version). torch is never shipped, whatever `also` says.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = read_pins(requirements)
    also = [canonicalize_name(n) for n in also]
    provided = {canonicalize_name(n) for n in provided} - set(also)
    todo = [(name, pins.get(name, ("", ()))[1]) for name in also]
    for root in roots:
        name = canonicalize_name(root)
        if name not in pins:
            raise KaggleError(f"{requirements}: {root} is not pinned there, so it cannot be shipped")
        todo.append((name, pins[name][1]))
    env = {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    chosen: dict[str, str] = {}
    while todo:
        name, extras = todo.pop()
        if name in provided or name == "torch":
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            raise KaggleError(
                f"{name} is needed on Kaggle but not installed here: run `make setup`"
            ) from None
        if name in pins and pins[name][0] != dist.version:
            raise KaggleError(
                f"{requirements}: {name}=={pins[name][0]} but {dist.version} is installed: run `make setup`"
            )
        if name in chosen:
            continue
        chosen[name] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            wanted = ("", *(canonicalize_name(e) for e in extras))
            if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in wanted):
                todo.append((canonicalize_name(req.name), tuple(req.extras)))
    return [Pin(n, v) for n, v in sorted(chosen.items())]


def pip_download_commands(
    pins: Sequence[Pin], dest: str | os.PathLike, pythons: Sequence[str] = KAGGLE_PYTHONS
) -> list[list[str]]:
    """One `pip download` per Kaggle Python: binary wheels only, no dependency resolution (the list is
    complete), for manylinux x86_64."""
    if any(p.name == "torch" for p in pins):
        raise KaggleError("refusing to download torch: Kaggle's own CUDA build must stay")
    commands = []
    for python in pythons:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--only-binary=:all:",
            "--no-deps",
            "--quiet",
            "--python-version",
            python,
            "--implementation",
            "cp",
            "--dest",
            str(dest),
        ]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        commands.append(cmd + [str(p) for p in pins])
    return commands


def download_wheels(
    pins: Sequence[Pin], cache: Path, dest: Path, download: bool = True, runner: Callable = subprocess.run
) -> list[Path]:
    """Fill `cache` with the pinned wheels (pip skips files already there; needs PyPI) unless `download`
    is False, then copy the pinned ones to `dest`. Returns the copied files."""
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

    cache.mkdir(parents=True, exist_ok=True)
    if download:
        for cmd in pip_download_commands(pins, cache):
            done = runner(cmd)
            if done.returncode != 0:
                raise KaggleError(
                    f"pip download failed (exit {done.returncode}; it needs PyPI): "
                    "rerun with --no-wheels to build everything else"
                )
    wanted = {(p.name, p.version) for p in pins}
    copied, found = [], set()
    for wheel in sorted(cache.glob("*.whl")):
        try:
            name, version, _, _ = parse_wheel_filename(wheel.name)
        except InvalidWheelFilename:
            continue
        key = (canonicalize_name(name), str(version))
        if key in wanted:
            found.add(key)
            copied.append(Path(shutil.copy2(wheel, dest / wheel.name)))
    missing = sorted(f"{n}=={v}" for n, v in wanted - found)
    if download and missing:
        raise KaggleError(f"no wheel downloaded for: {', '.join(missing)}")
    return copied


# ---------------------------------------------------------------------------------------------- notebooks


def find_notebooks(notebooks_dir: Path, names: Iterable[str] = NOTEBOOKS) -> dict[str, Path]:
    """The series' notebooks that exist, by name: the `.ipynb`, else its jupytext `.py` source."""
    found = {}
    for name in names:
        for suffix in (".ipynb", ".py"):
            if (notebooks_dir / f"{name}{suffix}").is_file():
                found[name] = notebooks_dir / f"{name}{suffix}"
                break
    return found


def read_notebook(path: Path) -> dict:
    """A notebook as nbformat-4 JSON; a `.py` percent-format source is converted with jupytext."""
    if path.suffix == ".ipynb":
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise KaggleError(f"{path}: not a notebook ({e})") from None
    import jupytext

    return json.loads(jupytext.writes(jupytext.read(path), fmt="ipynb"))


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _literal(value: object) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def rewrite_parameters(source: str, values: Mapping[str, object], where: str) -> str:
    """`source` (a parameters cell) with each top-level `NAME = ...` in `values` given the new value.

    Comments and every other line are kept. A name in `values` that the cell does not assign is an
    error naming `where`: a renamed parameter must not silently keep its local default on Kaggle.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise KaggleError(f"{where}: parameters cell line {e.lineno}: {e.msg}") from None
    nodes = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            nodes[node.targets[0].id] = node.value
    missing = [name for name in values if name not in nodes]
    if missing:
        raise KaggleError(f"{where}: the parameters cell does not set {', '.join(missing)}")
    lines = source.encode("utf-8").split(b"\n")  # ast offsets count UTF-8 bytes
    for name in sorted(values, key=lambda n: nodes[n].lineno, reverse=True):
        value = nodes[name]
        first, last = value.lineno - 1, value.end_lineno - 1
        head, tail = lines[first][: value.col_offset], lines[last][value.end_col_offset :]
        lines[first : last + 1] = [head + _literal(values[name]).encode("utf-8") + tail]
    return b"\n".join(lines).decode("utf-8")


def setup_cell(pins: Sequence[Pin], needs: Mapping[str, str]) -> str:
    """The first cell of every Kaggle notebook: offline install, the package on the path, earlier outputs."""
    wheels = "".join(f'\n    "{p}",' for p in pins)
    return f'''\
# Kaggle setup, added by `make kaggle` (docs/KAGGLE.md). It installs the pinned libraries from the attached
# wheels dataset with the internet off and --no-deps, so that Kaggle's own CUDA torch is never replaced; puts
# the shared package on the path; and links earlier notebooks' outputs into {WORKING}.
import importlib
import subprocess
import sys
from pathlib import Path


def attached(slug: str) -> Path:
    """An attached input in either mount layout: /kaggle/input/<slug> or /kaggle/input/<kind>/<owner>/<slug>."""
    root = Path("/kaggle/input")
    for path in [root / slug, *sorted(root.glob(f"*/*/{{slug}}"))]:
        if path.is_dir():
            return path
    raise FileNotFoundError(f"input {{slug!r}} is not attached: add it with Add Input (see docs/KAGGLE.md)")


WHEELS = [{wheels}
]
subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                "--find-links", str(attached("{WHEELS_SLUG}")), *WHEELS], check=True)
importlib.invalidate_caches()
sys.path.insert(0, str(attached("{PACKAGE_SLUG}") / "src"))

from utils.kaggle_setup import check_requirements, link_outputs

for problem in check_requirements(WHEELS):
    print("warning:", problem)
link_outputs({json.dumps(dict(needs))})
'''


def kaggle_notebook(nb: dict, params: Mapping[str, object], setup: str, where: str) -> dict:
    """A copy of `nb` for Kaggle: outputs cleared, `setup` as the first cell, the parameters cell rewritten."""
    nb = json.loads(json.dumps(nb))
    cells = nb.get("cells", [])
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise KaggleError(f"{where}: expected one cell tagged 'parameters', found {len(tagged)}")
    header = "# Kaggle values, written by `make kaggle`: the attached model and data, outputs in /kaggle/working.\n"
    tagged[0]["source"] = header + rewrite_parameters(_source(tagged[0]), params, where)
    for cell in cells:
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).pop("execution", None)
    first = {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {"tags": ["kaggle-setup"]},
        "outputs": [],
        "source": setup,
    }
    if (nb.get("nbformat"), nb.get("nbformat_minor", 0)) >= (4, 5):
        first["id"] = "kaggle-setup"
    nb["cells"] = [first, *cells]
    meta = nb.setdefault("metadata", {})
    meta.pop("papermill", None)
    meta.pop("jupytext", None)  # the pairing with the .py source is local
    meta["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    meta.setdefault("language_info", {"name": "python"})
    return nb


# ---------------------------------------------------------------------------------------------- metadata


def dataset_metadata(user: str, slug: str, title: str, description: str, license_name: str) -> dict:
    return {
        "id": f"{user}/{slug}",
        "title": title,
        "description": description,
        "licenses": [{"name": license_name}],
    }


def kernel_metadata(spec: KernelSpec, user: str, competition_slug: str, with_data: bool) -> dict:
    """Every field of `kernel-metadata.json`, set explicitly."""
    datasets = [f"{user}/{PACKAGE_SLUG}", f"{user}/{WHEELS_SLUG}"] + (
        [f"{user}/{DATA_SLUG}"] if with_data else []
    )
    return {
        "id": f"{user}/{kernel_slug(spec.name)}",
        "title": spec.title,
        "code_file": f"{spec.name}.ipynb",
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": spec.gpu,
        "enable_tpu": False,
        "enable_internet": spec.internet,
        "machine_shape": GPU_SHAPE if spec.gpu else "",
        "dataset_sources": datasets,
        "competition_sources": [competition_slug] if spec.competition else [],
        "kernel_sources": [f"{user}/{kernel_slug(n)}" for n in spec.needs],
        "model_sources": [MODEL_SOURCE],
    }


def kaggle_params(spec: KernelSpec, competition: str, with_data: bool, recipe=None) -> dict:
    """A kernel's parameters: Kaggle's paths, the spec's values, then the recipe's for this notebook (a
    `utils.recipes.Recipe`), so that the uploaded kernel runs the recipe unchanged."""
    values: dict[str, object] = {
        "MODEL": MODEL_PARAM,
        "DATA_DIR": DATA_SLUG if with_data else "",
        "OUTPUT_DIR": WORKING,
    }
    values.update(
        {k: (competition if k == "COMPETITION" and v is None else v) for k, v in spec.params.items()}
    )
    if recipe is not None:
        values.update(recipe.params.get(spec.name, {}))
    return values


# ---------------------------------------------------------------------------------------------- build


@dataclass
class BuildOptions:
    out: Path
    user: str
    competition: str = "aimo3"
    wheels: bool = True
    data_dir: Path | None = None
    root: Path = field(default_factory=lambda: Path(__file__).resolve().parents[1])
    notebooks_dir: Path | None = None  # default: <root>/notebooks
    wheel_cache: Path | None = None  # default: <root>/cache/kaggle_wheels
    also: tuple[str, ...] = ()
    recipe: str | None = None  # recipes/<name>: its values go into the kernels' parameters cells
    runner: Callable = subprocess.run


def build(opts: BuildOptions) -> dict:
    """Write everything into a fresh temporary folder beside `opts.out`, then swap it in. Returns the manifest."""
    from utils.gateway import competition_spec

    competition_slug = competition_spec(opts.competition).slug
    if opts.data_dir is not None and not opts.data_dir.is_dir():
        raise KaggleError(f"--data-dir {opts.data_dir}: no such folder")
    notebooks_dir = opts.notebooks_dir or opts.root / "notebooks"
    notebooks = find_notebooks(notebooks_dir)
    if not notebooks:
        raise KaggleError(f"no notebook of the series ({', '.join(NOTEBOOKS)}) in {notebooks_dir}")
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{opts.out.name}.", dir=opts.out.parent))
    try:
        manifest = _build_into(tmp, opts, notebooks, competition_slug)
        _swap_in(tmp, opts.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _swap_in(tmp: Path, out: Path) -> None:
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _build_into(tmp: Path, opts: BuildOptions, notebooks: dict[str, Path], competition_slug: str) -> dict:
    from utils.recipes import load_recipe

    user, with_data = opts.user, opts.data_dir is not None
    recipe = load_recipe(opts.recipe) if opts.recipe else None
    requirements = opts.root / "requirements.txt"
    pins = select_wheels(requirements, also=opts.also)
    datasets = [
        _package_dataset(tmp / "package", opts.root, user),
        _wheels_dataset(tmp / "wheels", pins, opts, user),
    ]
    if with_data:
        datasets.append(_data_dataset(tmp / "data", opts.data_dir, user))
    kernels = []
    for name, path in notebooks.items():
        spec = SPECS[name]
        absent = [n for n in spec.needs if n not in notebooks]
        if absent:
            raise KaggleError(f"{path}: reads the output of {', '.join(absent)}, which does not exist yet")
        folder = tmp / name
        needs = {n: kernel_slug(n) for n in spec.needs}
        nb = kaggle_notebook(
            read_notebook(path),
            kaggle_params(spec, opts.competition, with_data, recipe),
            setup_cell(pins, needs),
            str(path),
        )
        _write_json(folder / f"{name}.ipynb", nb)
        meta = kernel_metadata(spec, user, competition_slug, with_data)
        _write_json(folder / "kernel-metadata.json", meta)
        source = path.relative_to(opts.root) if path.is_relative_to(opts.root) else path
        kernels.append(
            {
                "notebook": name,
                "folder": name,
                "id": meta["id"],
                "source": str(source),
                "reads": {n: f"{user}/{s}" for n, s in needs.items()},
                "writes": f"{WORKING}/{name}",
            }
        )
    flow = [
        {"from": k2["id"], "to": k["id"], "folder": n}
        for k in kernels
        for n in k["reads"]
        for k2 in kernels
        if k2["notebook"] == n
    ]
    manifest = {
        "user": user,
        "competition": opts.competition,
        "competition_slug": competition_slug,
        "model_source": MODEL_SOURCE,
        "kaggle_pythons": list(KAGGLE_PYTHONS),
        "datasets": datasets,
        "kernels": kernels,
        "flow": flow,
        "files": sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file()),
    }
    _write_json(tmp / "manifest.json", manifest)
    return manifest


def _package_dataset(folder: Path, root: Path, user: str) -> dict:
    shutil.copytree(
        root / "src" / "utils",
        folder / "src" / "utils",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    # Notebook 03's experiment folders (peft configs and training overrides), found at
    # /kaggle/input/<package>/experiments.
    shutil.copytree(root / "experiments", folder / "experiments")
    shutil.copy2(root / "requirements.txt", folder / "requirements.txt")
    meta = dataset_metadata(
        user,
        PACKAGE_SLUG,
        "AIMO PEFT shared package",
        "The `utils` package the AIMO PEFT notebooks import (src/utils), notebook 03's experiments, and the pins.",
        "apache-2.0",
    )
    _write_json(folder / "dataset-metadata.json", meta)
    return {"id": meta["id"], "folder": "package", "mount": f"/kaggle/input/{PACKAGE_SLUG}/src"}


def _wheels_dataset(folder: Path, pins: list[Pin], opts: BuildOptions, user: str) -> dict:
    folder.mkdir(parents=True)
    cache = opts.wheel_cache or opts.root / "cache" / "kaggle_wheels"
    wheels = download_wheels(pins, cache, folder, download=opts.wheels, runner=opts.runner)
    (folder / "requirements.txt").write_text("".join(f"{p}\n" for p in pins))
    meta = dataset_metadata(
        user,
        WHEELS_SLUG,
        "AIMO PEFT wheels",
        "Wheels the AIMO PEFT notebooks install offline (pip --no-index --no-deps); never torch.",
        "other",
    )
    _write_json(folder / "dataset-metadata.json", meta)
    return {
        "id": meta["id"],
        "folder": "wheels",
        "pins": [str(p) for p in pins],
        "wheels": sorted(w.name for w in wheels),
    }


def _data_dataset(folder: Path, data_dir: Path, user: str) -> dict:
    """The registered data files, without `kaggle/` (competition files: attach the competition instead)."""
    from utils.data import DATASETS

    copied = []
    for d in DATASETS.values():
        if d.path.startswith("kaggle/") or not (data_dir / d.path).is_file():
            continue
        (folder / d.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(data_dir / d.path, folder / d.path)
        copied.append(d.path)
    if not copied:
        raise KaggleError(
            f"--data-dir {data_dir}: none of the data sets listed in utils.data.DATASETS is there"
        )
    for extra in ("MANIFEST.md", "licenses"):
        if (data_dir / extra).is_dir():
            shutil.copytree(data_dir / extra, folder / extra)
        elif (data_dir / extra).is_file():
            shutil.copy2(data_dir / extra, folder / extra)
    meta = dataset_metadata(
        user,
        DATA_SLUG,
        "AIMO PEFT public math data",
        "GSM8K, MATH, AIME, AIMO validation and ToRA examples: see MANIFEST.md and "
        "licenses/ for origins and licenses (MIT, Apache-2.0).",
        "other",
    )
    _write_json(folder / "dataset-metadata.json", meta)
    return {"id": meta["id"], "folder": "data", "files": sorted(copied)}


# ---------------------------------------------------------------------------------------------- push


def credentials_problem() -> str | None:
    """None when the kaggle CLI could authenticate, else what is missing."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return None
    if os.environ.get("KAGGLE_API_TOKEN") or (Path.home() / ".kaggle" / "access_token").is_file():
        return None
    files = _credential_files()
    if any(f.is_file() for f in files):
        return None
    return (
        "no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY, or save the API token from "
        f"kaggle.com/settings as {files[-2]} (looked in: {', '.join(map(str, files))})"
    )


@dataclass(frozen=True)
class PushStep:
    kind: str  # "dataset" or "kernel"
    id: str
    folder: Path
    wait: bool = False  # a later kernel reads this kernel's output: wait until its run completes


def push_plan(dist: Path, only: Sequence[str] = ()) -> list[PushStep]:
    """Datasets first (the kernels attach them), then kernels in the series' order."""
    manifest_path = dist / "manifest.json"
    if not manifest_path.is_file():
        raise KaggleError(f"{manifest_path} is missing: run `make kaggle` first")
    manifest = json.loads(manifest_path.read_text())
    if manifest["user"] == PLACEHOLDER_USER:
        raise KaggleError(
            f"{manifest_path}: built for the placeholder user {PLACEHOLDER_USER!r}; "
            "rebuild with `make kaggle KAGGLE_USER=<you>` (or set KAGGLE_USERNAME)"
        )
    read_later = {flow["from"] for flow in manifest["flow"]}
    steps = [PushStep("dataset", d["id"], dist / d["folder"]) for d in manifest["datasets"]]
    steps += [
        PushStep("kernel", k["id"], dist / k["folder"], k["id"] in read_later) for k in manifest["kernels"]
    ]
    if only:
        known = {s.folder.name for s in steps}
        unknown = sorted(set(only) - known)
        if unknown:
            raise KaggleError(
                f"--only {', '.join(unknown)}: not in {manifest_path} (known: {', '.join(sorted(known))})"
            )
        steps = [s for s in steps if s.folder.name in only]
    return steps


def dataset_commands(step: PushStep, message: str) -> tuple[list[str], list[str]]:
    """(version, create): the first when the dataset exists on Kaggle, the second when it is new."""
    folder = str(step.folder)
    return (
        ["kaggle", "datasets", "version", "-p", folder, "-m", message, "--dir-mode", "zip"],
        ["kaggle", "datasets", "create", "-p", folder, "--dir-mode", "zip"],
    )


def push(
    dist: Path,
    dry_run: bool = False,
    only: Sequence[str] = (),
    wait: bool = True,
    message: str = "make kaggle-push",
    runner: Callable = subprocess.run,
    out=print,
    poll_s: float = 60.0,
    timeout_s: float = 12 * 3600,
) -> list[PushStep]:
    """Upload the datasets and push the kernels. `dry_run` prints the commands instead of running them."""
    steps = push_plan(dist, only)
    if not dry_run:
        if shutil.which("kaggle") is None:
            raise KaggleError(
                "the kaggle CLI is not installed (or not on PATH): `pip install kaggle`, "
                "then rerun `make kaggle-push`"
            )
        problem = credentials_problem()
        if problem:
            raise KaggleError(problem)
    for step in steps:
        if step.kind == "dataset":
            version, create = dataset_commands(step, message)
            if not any(step.folder.glob("*.whl")) and step.folder.name == "wheels":
                out(f"# skipped {step.id}: no wheels in {step.folder} (built with --no-wheels)")
                continue
            if dry_run:
                out(f"# dataset {step.id}: a new version if it exists on Kaggle, else created")
                out(_shell(version))
                out(_shell(create))
                continue
            exists = (
                runner(["kaggle", "datasets", "status", step.id], capture_output=True, text=True).returncode
                == 0
            )
            _run(runner, version if exists else create)
            _wait_for(runner, ["kaggle", "datasets", "status", step.id], ("ready",), poll_s, 600, out)
        else:
            cmd = ["kaggle", "kernels", "push", "-p", str(step.folder)]
            if dry_run:
                out(_shell(cmd))
                if step.wait and wait:
                    out(
                        f"# wait until `kaggle kernels status {step.id}` says complete: later notebooks read its output"
                    )
                continue
            _run(runner, cmd)
            if step.wait and wait:
                _wait_for(
                    runner, ["kaggle", "kernels", "status", step.id], ("complete",), poll_s, timeout_s, out
                )
    return steps


def _shell(cmd: Sequence[str]) -> str:
    import shlex

    return " ".join(shlex.quote(c) for c in cmd)


def _run(runner: Callable, cmd: list[str]) -> None:
    done = runner(cmd)
    if done.returncode != 0:
        raise KaggleError(f"`{_shell(cmd)}` failed (exit {done.returncode})")


def _wait_for(
    runner: Callable, cmd: list[str], done_words: tuple[str, ...], poll_s: float, timeout_s: float, out
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        status = runner(cmd, capture_output=True, text=True)
        text = (status.stdout or "").lower()
        if any(w in text for w in done_words):
            return
        if "error" in text or "cancel" in text:
            raise KaggleError(f"`{_shell(cmd)}`: {status.stdout.strip()}")
        if time.monotonic() > deadline:
            raise KaggleError(f"`{_shell(cmd)}` still not {'/'.join(done_words)} after {timeout_s:.0f} s")
        out(f"# waiting: {status.stdout.strip() or status.returncode}")
        time.sleep(poll_s)


# ---------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    from utils.recipes import RecipeError

    parser = argparse.ArgumentParser(prog="python -m tools.kaggle", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write dist/kaggle")
    b.add_argument("--out", type=Path, default=Path("dist/kaggle"))
    b.add_argument("--user", default=None, help="Kaggle username (default: KAGGLE_USERNAME or kaggle.json)")
    b.add_argument("--competition", default="aimo3", choices=["aimo1", "aimo2", "aimo3"])
    b.add_argument(
        "--wheels",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="download the wheels from PyPI (--no-wheels: use what cache/kaggle_wheels holds)",
    )
    b.add_argument("--data-dir", type=Path, default=None, help="public data sets to upload as a dataset")
    b.add_argument(
        "--recipe", default=None, help="recipes/<name> whose values the kernels' parameters cells take"
    )
    b.add_argument(
        "--also",
        action="append",
        default=[],
        help="ship this installed package too, e.g. one Kaggle's image lacks (repeatable)",
    )
    p = sub.add_parser("push", help="upload dist/kaggle with the kaggle CLI")
    p.add_argument("--dist", type=Path, default=Path("dist/kaggle"))
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    p.add_argument("--only", action="append", default=[], help="push only this folder (repeatable)")
    p.add_argument("--no-wait", dest="wait", action="store_false", help="do not wait for kernels to finish")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            user = args.user or default_user()
            if args.data_dir is None:
                print(
                    "note: no --data-dir: on Kaggle the notebooks use the embedded data only", file=sys.stderr
                )
            if user == PLACEHOLDER_USER:
                print(
                    f"note: no Kaggle username given; ids use {user!r} (push refuses them)", file=sys.stderr
                )
            manifest = build(
                BuildOptions(
                    out=args.out,
                    user=user,
                    competition=args.competition,
                    wheels=args.wheels,
                    data_dir=args.data_dir,
                    also=tuple(args.also),
                    recipe=args.recipe,
                )
            )
            print(
                f"wrote {args.out}: {len(manifest['datasets'])} datasets, "
                f"{len(manifest['kernels'])} notebooks ({', '.join(k['notebook'] for k in manifest['kernels'])})"
            )
        else:
            push(args.dist, dry_run=args.dry_run, only=args.only, wait=args.wait)
    except (KaggleError, RecipeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
