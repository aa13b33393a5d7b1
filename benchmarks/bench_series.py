"""The series: wall time of every notebook, run in order as `make run-all` runs them.

Each `notebooks/NN_*.py` (the jupytext source) is converted to a notebook in a temporary folder and
executed with papermill from `notebooks/`, with the Makefile's environment, each in its own kernel, in
order. `OUTPUT_DIR` points at a temporary folder so that the repository's `outputs/` is left alone; a
notebook that fails stops the run (later ones read its outputs), as in `make run-all`. The time of a
notebook includes its kernel's start and imports, as `make run-all` prints it. One run, no repeats: the
series takes minutes. `cold_cache=True` also times building the embedded model (a fresh machine).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import OMP_WAIT_POLICY_AT_START, REPO
from benchmarks.common import bar, log, make_result, row

EXPORT = re.compile(r"^export\s+([A-Za-z_][A-Za-z0-9_]*)\s*:?=\s*(.*?)\s*$")
BAR_SECONDS = 15 * 60


@dataclass(frozen=True)
class SeriesBench:
    """Which notebooks, and with what."""

    notebooks_dir: str = str(REPO / "notebooks")
    pattern: str = "[0-9][0-9]_*.py"
    timeout_s: int = 1800  # per notebook
    cold_cache: bool = False  # an empty model cache: the embedded model is built inside the run
    parameters: tuple = ()  # extra (name, value) papermill parameters for every notebook


def notebook_sources(bench: SeriesBench) -> list[Path]:
    """The series' notebooks in run order (by their NN_ prefix)."""
    found = sorted(Path(bench.notebooks_dir).glob(bench.pattern))
    if not found:
        raise FileNotFoundError(f"no notebook matches {bench.pattern!r} in {bench.notebooks_dir}")
    return found


def to_ipynb(source: Path, folder: Path) -> Path:
    """The jupytext source as an .ipynb in `folder` (papermill reads .ipynb only)."""
    import jupytext

    path = folder / f"{source.stem}.ipynb"
    notebook = jupytext.read(source)
    # A source without the jupytext header has no kernel: papermill then refuses to run it.
    notebook.metadata.setdefault(
        "kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"}
    )
    jupytext.write(notebook, path)
    return path


def run_notebook(
    notebook: Path, out_dir: Path, cwd: Path, env: dict, bench: SeriesBench, output_root: Path
) -> dict:
    """Execute one notebook with papermill; returns its wall time and exit status."""
    params = [("OUTPUT_DIR", str(output_root)), *bench.parameters]
    args = [
        sys.executable,
        "-m",
        "papermill",
        "--no-progress-bar",
        "-k",
        "python3",
        "--cwd",
        str(cwd),
        str(notebook),
        str(out_dir / notebook.name),
    ]
    for name, value in params:
        args += ["-p", str(name), str(value)]
    start = time.perf_counter()
    try:
        done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=bench.timeout_s)
        status, tail = (
            ("ok" if done.returncode == 0 else f"failed (exit {done.returncode})"),
            done.stderr[-2000:],
        )
    except subprocess.TimeoutExpired:
        status, tail = f"timed out after {bench.timeout_s} s", ""
    return {
        "notebook": notebook.stem,
        "seconds": time.perf_counter() - start,
        "status": status,
        "error_tail": tail if status != "ok" else "",
    }


def makefile_exports(makefile: Path = REPO / "Makefile") -> dict[str, str]:
    """The variables the Makefile exports to every recipe (`export NAME := value`): make run-all runs under them."""
    found = {}
    for line in makefile.read_text().splitlines():
        if match := EXPORT.match(line):
            found[match[1]] = match[2]
    return found


def _make_env() -> dict:
    """This process's environment as `make run-all` would have it (without the benchmarks' own setting)."""
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if OMP_WAIT_POLICY_AT_START is not None:
        env["OMP_WAIT_POLICY"] = OMP_WAIT_POLICY_AT_START
    return env | makefile_exports()


def run_in_order(sources: list[Path], bench: SeriesBench, env: dict, tmp: Path) -> list[dict]:
    """Each notebook after the one before; the first failure stops the run (later ones need its outputs)."""
    runs = []
    for source in sources:
        log(f"   series: running {source.name}")
        notebook = to_ipynb(source, tmp)
        runs.append(run_notebook(notebook, tmp, Path(bench.notebooks_dir), env, bench, tmp / "outputs"))
        log(f"   series: {source.name} {runs[-1]['status']} in {runs[-1]['seconds']:.0f} s")
        if runs[-1]["status"] != "ok":
            break
    return runs


def bench_series(bench: SeriesBench | None = None) -> dict:
    """Every notebook in order, timed; returns the result dict (see common)."""
    from utils.modeling import TinyModelConfig

    bench = bench or SeriesBench()
    sources = notebook_sources(bench)
    with tempfile.TemporaryDirectory(prefix="bench-series-") as tmp:
        env = _make_env()
        if bench.cold_cache:
            env["AIMO_CACHE_DIR"] = str(Path(tmp) / "cache")
        cache = Path(env.get("AIMO_CACHE_DIR") or REPO / "cache")
        cached = (cache / f"tiny-llama-{TinyModelConfig().key()}" / "pretraining.json").is_file()
        runs = run_in_order(sources, bench, env, Path(tmp))
    complete = len(runs) == len(sources) and all(r["status"] == "ok" for r in runs)
    total = sum(r["seconds"] for r in runs)
    rows = [
        row(r["notebook"] + ("" if r["status"] == "ok" else f" [{r['status']}]"), r["seconds"], None, "s")
        for r in runs
    ]
    rows.append(row("all notebooks" + ("" if complete else " (incomplete)"), total, None, "s"))
    settings = asdict(bench) | {
        "notebooks": [s.name for s in sources],
        "tiny_model_cached_at_start": cached,
        "environment": {k: env[k] for k in sorted(makefile_exports()) if k in env},
        "omp_wait_policy": env.get("OMP_WAIT_POLICY"),
    }
    minutes = total / 60 if complete else None
    result = make_result(
        "series",
        "wall time of each notebook under make run-all (embedded default)",
        settings,
        rows,
        bar("make run-all, minutes", minutes, BAR_SECONDS / 60, higher_is_better=False),
        notebooks=runs,
        total_seconds=total,
        complete=complete,
    )
    result["machine"]["omp_wait_policy"] = env.get("OMP_WAIT_POLICY")  # the notebooks', not this process's
    return result
