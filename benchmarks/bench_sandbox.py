"""The sandbox: code executions per second of `utils.sandbox.run_python` against a bare subprocess.

Every side runs each snippet in a fresh process (what tool-integrated reasoning needs: no state leaks
from one sample's code to the next). The sandbox forks each run's supervisor from its fork server (one
interpreter, started once) and adds namespaces, private tmpfs, own uid, Landlock, seccomp, rlimits, audit
hook and clean-up; the baseline is `subprocess.run([sys.executable, "-c", code])`, a new interpreter with
nothing of that. The sandbox's fallback (`FORK_SERVER = False`: an interpreter exec'd per run, as where
pidfds are missing) is timed alongside and kept in `raw.fallback_exec_per_run`. Sides alternate within
each repeat; the median repeat is reported. CPU time per run (this process, its children, and the fork server
with the supervisors it reaped) is kept in `raw.cpu_ms_per_execution`: unlike wall time it hardly moves
with other processes' load, so the ratio of the sides says what the isolation costs on any machine.
"""

from __future__ import annotations

import os
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
    from utils import sandbox

    def sandboxed() -> dict:
        for _ in range(calls):
            result = sandbox.run_python(SNIPPET)
            if result.error or result.stdout.strip() != EXPECTED:
                raise RuntimeError(
                    f"sandbox run of {SNIPPET!r} gave {result.stdout!r}, error {result.error!r}"
                )
        return {"calls": calls}

    def sandboxed_exec() -> dict:
        saved, sandbox.FORK_SERVER = sandbox.FORK_SERVER, False
        try:
            return sandboxed()
        finally:
            sandbox.FORK_SERVER = saved

    def bare() -> dict:
        for _ in range(calls):
            done = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, timeout=30)
            if done.returncode or done.stdout.strip() != EXPECTED:
                raise RuntimeError(
                    f"bare run of {SNIPPET!r} gave {done.stdout!r}, stderr {done.stderr[-500:]!r}"
                )
        return {"calls": calls}

    return {
        "sandbox": _with_cpu(sandboxed),
        "bare_subprocess": _with_cpu(bare),
        "sandbox_exec": _with_cpu(sandboxed_exec),
    }


def _cpu_seconds() -> float:
    used = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):  # children: once reaped, all descendants
        usage = resource.getrusage(who)
        used += usage.ru_utime + usage.ru_stime
    return used + _fork_server_cpu_seconds()


def _fork_server_cpu_seconds() -> float:
    """The fork server's CPU time and that of the supervisors it reaped (they are not our children)."""
    from utils import sandbox

    server = sandbox._fork_server()
    pid = server.pid if server is not None else None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


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
    fallback = {  # measured alongside, reported apart: the table compares the project's way with the plain way
        "runs_per_second": rates.pop("sandbox_exec"),
        "cpu_ms_per_execution": cpu_ms.pop("sandbox_exec"),
        "repeats": runs.pop("sandbox_exec"),
    }
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
        "run_python (fork server) vs bare subprocess.run, one fresh process per snippet",
        settings,
        rows,
        bar(f"at least {BAR_RUNS_PER_SECOND} executions per second", rates["sandbox"], BAR_RUNS_PER_SECOND),
        overhead_ms_per_execution=overhead_ms,
        cpu_ms_per_execution=cpu_ms,
        fallback_exec_per_run=fallback,
        repeats=runs,
    )
