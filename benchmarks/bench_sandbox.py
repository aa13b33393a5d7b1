"""The sandbox: code executions per second of `utils.sandbox.run_python` against a bare subprocess.

Both sides start a fresh interpreter per snippet (what tool-integrated reasoning needs: no state leaks from
one sample's code to the next). The sandbox adds its supervisor and init processes, namespaces, private
tmpfs, own uid, Landlock, seccomp, rlimits, audit hook and clean-up; the baseline is
`subprocess.run([sys.executable, "-c", code])` with nothing of that. The ratio says what the isolation
costs per run. Sides alternate within each repeat; the median repeat is reported. CPU time per run (this
process and all its children) is kept in `raw.cpu_ms_per_execution`: unlike wall time it hardly moves
with other processes' load, so the ratio of the two sides says what the isolation costs on any machine.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from dataclasses import asdict, dataclass

from benchmarks.common import bar, make_result, median, row, timed_repeats

SNIPPET = "print(422 * 98 - 88)"  # what the tuned model writes for a compute problem
EXPECTED = "41268"
BAR_RUNS_PER_SECOND = 50  # the tool must not slow tool-integrated reasoning down


@dataclass(frozen=True)
class SandboxBench:
    """Sizes of one sandbox benchmark (the defaults take about 15 seconds on 2 cores)."""

    calls: int = 25  # snippet runs per side per repeat
    repeats: int = 5
    warmup: int = 2


def _sides(calls: int) -> dict:
    from utils.sandbox import run_python

    def sandboxed() -> dict:
        for _ in range(calls):
            result = run_python(SNIPPET)
            if result.error or result.stdout.strip() != EXPECTED:
                raise RuntimeError(
                    f"sandbox run of {SNIPPET!r} gave {result.stdout!r}, error {result.error!r}"
                )
        return {"calls": calls}

    def bare() -> dict:
        for _ in range(calls):
            done = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, timeout=30)
            if done.returncode or done.stdout.strip() != EXPECTED:
                raise RuntimeError(
                    f"bare run of {SNIPPET!r} gave {done.stdout!r}, stderr {done.stderr[-500:]!r}"
                )
        return {"calls": calls}

    return {"sandbox": _with_cpu(sandboxed), "bare_subprocess": _with_cpu(bare)}


def _cpu_seconds() -> float:
    used = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):  # children: once reaped, all descendants
        usage = resource.getrusage(who)
        used += usage.ru_utime + usage.ru_stime
    return used


def _with_cpu(side):
    def timed() -> dict:
        start = _cpu_seconds()
        figures = side()
        return {**figures, "cpu_seconds": _cpu_seconds() - start}

    return timed


def bench_sandbox(bench: SandboxBench | None = None) -> dict:
    """`run_python` vs a bare `subprocess.run`; returns the result dict (see common)."""
    bench = bench or SandboxBench()
    for side in _sides(bench.warmup).values():  # page cache, imports: not timed
        side()
    runs = timed_repeats(_sides(bench.calls), bench.repeats)
    rates = {name: median([r["calls"] / r["seconds"] for r in rs]) for name, rs in runs.items()}
    ms = {name: 1000 / rate for name, rate in rates.items()}
    cpu_ms = {name: median([1000 * r["cpu_seconds"] / r["calls"] for r in rs]) for name, rs in runs.items()}
    rows = [
        row("executions per second", rates["sandbox"], rates["bare_subprocess"], "runs/s"),
        row("milliseconds per execution", ms["sandbox"], ms["bare_subprocess"], "ms"),
    ]
    overhead_ms = ms["sandbox"] - ms["bare_subprocess"]
    from utils.sandbox import run_python

    settings = asdict(bench) | {
        "snippet": SNIPPET,
        "python": sys.executable,
        "isolation": list(run_python("pass").isolation),  # the kernel layers the measured runs had
    }
    return make_result(
        "sandbox",
        "run_python vs bare subprocess.run, one fresh interpreter per snippet",
        settings,
        rows,
        bar(f"at least {BAR_RUNS_PER_SECOND} executions per second", rates["sandbox"], BAR_RUNS_PER_SECOND),
        overhead_ms_per_execution=overhead_ms,
        cpu_ms_per_execution=cpu_ms,
        repeats=runs,
    )
