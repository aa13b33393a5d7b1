"""What every benchmark shares: machine info, medians, the result layout, the printed table, saving."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import REPO, RESULTS_DIR


def machine_info() -> dict:
    """Where a figure came from: CPU, core count, load when it started, library versions, device, commit."""
    import torch
    import transformers

    info = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        # Other processes share the CPU: the load average says how noisy the timings may be (now; run.py
        # replaces it with the value when the benchmark started and adds the one at its end).
        "load_average_1min": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "git_commit": _git_commit(),
    }
    for name in ("peft", "trl"):  # read from the metadata: importing peft loads bitsandbytes, which talks
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info[name] = None
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def rss_mb() -> float:
    """This process's resident memory now, in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values: a benchmark ran no timed repeat")
    return float(statistics.median(values))


def ratio(project: float | None, baseline: float | None) -> float | None:
    """project / baseline, or None when either is missing or the baseline is zero."""
    if project is None or not baseline:
        return None
    return project / baseline


def timed_repeats(sides: dict[str, Callable[[], dict]], repeats: int) -> dict[str, list[dict]]:
    """Run each side `repeats` times, alternating which goes first, so that a drift in the machine's load
    hits both sides alike. Each call returns its own figures; `seconds` is added (wall time of the call)."""
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    names = list(sides)
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            figures = sides[name]()
            runs[name].append({**figures, "seconds": time.perf_counter() - start})
    return runs


def row(metric: str, project: float | None, baseline: float | None, unit: str = "") -> dict:
    """One line of a benchmark's table; the ratio is always project / baseline."""
    r = ratio(project, baseline)
    return {
        "metric": metric,
        "unit": unit,
        "project": _round(project),
        "baseline": _round(baseline),
        "ratio": _round(r),
    }


def bar(text: str, measured: float | None, target: float, higher_is_better: bool = True) -> dict:
    """A bar the benchmark is held to, and whether the measurement holds it (None: not measured)."""
    holds = None if measured is None else (measured >= target if higher_is_better else measured <= target)
    return {
        "text": text,
        "measured": _round(measured),
        "target": target,
        "higher_is_better": higher_is_better,
        "holds": holds,
    }


def make_result(
    name: str, description: str, settings: dict, rows: list[dict], bar_: dict | None, **raw
) -> dict:
    """The JSON layout every benchmark writes (the README is generated from it)."""
    return {
        "benchmark": name,
        "description": description,
        "machine": machine_info(),
        "settings": settings,
        "rows": rows,
        "bar": bar_,
        "raw": raw,
    }


def save(result: dict, results_dir: Path = RESULTS_DIR) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{result['benchmark']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def fmt(value: float | None) -> str:
    """Numbers as a reader wants them: thousands separated, three significant digits when small."""
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def format_table(result: dict) -> str:
    """The printed table: metric, project, baseline, ratio; then the bar and whether it holds."""
    header = ("metric", "project", "baseline", "project / baseline")
    lines = [header] + [
        (
            f"{r['metric']}" + (f" ({r['unit']})" if r["unit"] else ""),
            fmt(r["project"]),
            fmt(r["baseline"]),
            fmt(r["ratio"]) + ("x" if r["ratio"] is not None else ""),
        )
        for r in result["rows"]
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    text = [f"== {result['benchmark']}: {result['description']}"]
    text += [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    if result.get("bar"):
        text.append(f"bar: {bar_status(result['bar'])}")
    return "\n".join(text)


def bar_status(b: dict) -> str:
    verdict = {True: "HOLDS", False: "MISSED", None: "not measured"}[b["holds"]]
    return f"{b['text']}: measured {fmt(b['measured'])}, target {fmt(b['target'])} -> {verdict}"


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None:
        return None
    return float(f"{value:.{digits}g}")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
