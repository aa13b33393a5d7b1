"""Calls that may hang, run in a worker thread and waited on only until a deadline.

A generation can stall where no stopping criterion ever runs (a CUDA kernel that never returns, a lock
held elsewhere): only the caller's thread can still answer in time. Python cannot kill a thread, so a
call past its time is abandoned: its daemon thread finishes (or not) in the background and its result is
dropped. A daemon thread never blocks the interpreter's exit, and the next call starts a fresh worker,
so one stuck call never blocks later ones (they may only run slower while it still holds the device).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """What became of a watched call: it finished (with a value or an exception) or it was abandoned."""

    finished: bool
    value: Any = None
    error: BaseException | None = None
    seconds: float = 0.0


def call_with_timeout(
    fn: Callable[..., Any], args: tuple = (), timeout: float | None = None, name: str = "watched-call"
) -> Outcome:
    """Run `fn(*args)` in a daemon thread and wait at most `timeout` seconds (None: wait for it)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # handed back to the caller's thread
            box["error"] = e

    start = time.monotonic()
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(None if timeout is None else max(0.0, timeout))
    seconds = time.monotonic() - start
    if thread.is_alive():
        return Outcome(False, seconds=seconds)
    return Outcome(True, box.get("value"), box.get("error"), seconds)


def call_until(
    fn: Callable[..., Any], args: tuple, deadline: float | None, grace: float, name: str = "watched-call"
) -> Outcome:
    """`call_with_timeout` until `deadline` (a `time.monotonic()` time) plus `grace` seconds."""
    timeout = None if deadline is None else deadline + grace - time.monotonic()
    return call_with_timeout(fn, args, timeout, name)
