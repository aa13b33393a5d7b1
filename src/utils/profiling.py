"""Measuring memory and time the same way everywhere (training, quantized inference, benchmarks)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import torch


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class Measurement:
    seconds: float = 0.0
    peak_memory_mb: float = 0.0
    memory_kind: str = "cpu_rss"


class measure:
    """`with measure() as m:` records wall time and peak memory of the block.

    On a GPU the peak is `torch.cuda.max_memory_allocated` (reset on entry); on a CPU the process's
    resident set size, sampled every 20 ms by a background thread.
    """

    def __init__(self, device: str | torch.device | None = None, interval: float = 0.02):
        device = torch.device(device) if device is not None else None
        self.cuda = (device is None and torch.cuda.is_available()) or (
            device is not None and device.type == "cuda"
        )
        self.interval = interval
        self.result = Measurement(memory_kind="cuda_allocated" if self.cuda else "cpu_rss")

    def __enter__(self) -> Measurement:
        self._stop = threading.Event()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._peak = _rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        self._start = time.perf_counter()
        return self.result

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_mb())

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.result.peak_memory_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.result.peak_memory_mb = max(self._peak, _rss_mb())
        self.result.seconds = time.perf_counter() - self._start
