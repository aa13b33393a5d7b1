"""`make bench`: run the benchmarks, print each table, save `benchmarks/results/<name>.json`, regenerate the README.

python -m benchmarks.run                      # all of them (the series takes minutes)
python -m benchmarks.run --only training      # one (or a comma-separated list)
python -m benchmarks.run --skip series        # all but some
python -m benchmarks.run --quick              # tiny sizes: checks the code path, saves nothing
python -m benchmarks.run --model PATH         # another model for training and generation
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import benchmarks  # noqa: F401  (puts src/ on sys.path)
from benchmarks import RESULTS_DIR
from benchmarks.common import format_table, log, save


def _training(quick: bool, model: str | None) -> dict:
    from benchmarks.bench_training import TrainingBench, bench_training

    sizes = dict(problems=40, warmup=1, steps_per_repeat=1, repeats=2) if quick else {}
    return bench_training(TrainingBench(model=model or "tiny", **sizes))


def _generation(quick: bool, model: str | None) -> dict:
    from benchmarks.bench_generation import GenerationBench, bench_generation

    sizes = dict(problems=1, repeats=1, max_new_tokens=8) if quick else {}
    return bench_generation(GenerationBench(model=model or "auto", **sizes))


def _sandbox(quick: bool, model: str | None) -> dict:
    from benchmarks.bench_sandbox import SandboxBench, bench_sandbox

    return bench_sandbox(SandboxBench(calls=2, repeats=1, warmup=1) if quick else None)


def _series(quick: bool, model: str | None) -> dict:
    from benchmarks.bench_series import bench_series

    if quick:
        raise ValueError("--quick does not apply to the series (it runs the notebooks as they are)")
    return bench_series()


def _engines(quick: bool, model: str | None) -> dict | None:
    from benchmarks.bench_engines import EnginesBench, Skipped, bench_engines

    sizes = dict(problems=1, repeats=1, max_new_tokens=8) if quick else {}
    try:
        return bench_engines(EnginesBench(model=model or "auto", **sizes))
    except Skipped as exc:
        log(f"-- engines skipped: {exc}")
        return None


BENCHMARKS: dict[str, Callable[[bool, str | None], dict | None]] = {
    "training": _training,
    "generation": _generation,
    "sandbox": _sandbox,
    "series": _series,
    "engines": _engines,
}


def selected(only: str | None, skip: str | None) -> list[str]:
    """The benchmarks to run, in their fixed order; unknown names are an error that lists the known ones."""

    def names(text: str | None) -> list[str]:
        wanted = [n.strip() for n in (text or "").split(",") if n.strip()]
        unknown = [n for n in wanted if n not in BENCHMARKS]
        if unknown:
            raise SystemExit(f"unknown benchmark {unknown}: choose from {', '.join(BENCHMARKS)}")
        return wanted

    chosen, dropped = names(only) or list(BENCHMARKS), names(skip)
    return [n for n in BENCHMARKS if n in chosen and n not in dropped]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Benchmarks: the project's way against the plain way.")
    ap.add_argument("--only", help=f"comma-separated names among: {', '.join(BENCHMARKS)}")
    ap.add_argument("--skip", help="comma-separated names not to run")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, nothing saved (checks the code path)")
    ap.add_argument(
        "--model",
        help="load_model name for training and generation (default: tiny for training; "
        "notebook 02's adapter, else tiny, for generation)",
    )
    args = ap.parse_args(argv)
    # OpenMP threads that spin while they wait steal the cores from the threads doing the work whenever other
    # processes share the machine: on a loaded 2-core machine one generate call of the tiny model took 15 s
    # instead of 0.05 s. Passive waiting (set before torch loads) makes the timings measure the code.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from utils.modeling import quiet_libraries

    quiet_libraries()
    failed = []
    for name in selected(args.only, args.skip):
        log(f"== running {name}")
        start, load_at_start = time.perf_counter(), round(os.getloadavg()[0], 2)
        try:
            result = BENCHMARKS[name](args.quick, args.model)
        except Exception as exc:  # the other benchmarks are independent: report and go on
            log(f"!! {name} failed: {exc!r}")
            failed.append(name)
            continue
        if result is None:  # skipped: it said why
            continue
        # machine_info() read the load when the benchmark ended; the reader wants both ends.
        result["machine"]["load_average_1min"] = load_at_start
        result["machine"]["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
        print(format_table(result), flush=True)
        where = (
            "not saved (--quick)" if args.quick else f"saved to {save(result).relative_to(benchmarks.REPO)}"
        )
        print(f"({name}: {time.perf_counter() - start:.0f} s, {where})\n", flush=True)
    if not args.quick:
        from benchmarks.report import write_readme

        print(f"README regenerated: {write_readme(RESULTS_DIR).relative_to(benchmarks.REPO)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
