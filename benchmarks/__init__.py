"""Benchmarks: the project's way against the plain way, timed side by side in one run (`make bench`).

Each `bench_*.py` module has one public function that returns a result dict (settings, raw figures of
both sides, their ratios, the bar it is held to, machine info); `benchmarks.run` prints and saves them to
`benchmarks/results/<name>.json`, and `benchmarks.report` regenerates `benchmarks/README.md` from the JSON.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"

# `python -m benchmarks.run` from the repository root must find the shared package without an install.
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

# The OpenMP wait policy this process started with: `benchmarks.run` sets a passive one for its own timings
# (see there), while the series benchmark runs the notebooks with this one, as `make run-all` would.
OMP_WAIT_POLICY_AT_START = os.environ.get("OMP_WAIT_POLICY")
