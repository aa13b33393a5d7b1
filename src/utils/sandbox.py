"""Running model-written Python safely: the tool of tool-integrated reasoning.

Each snippet runs in a fresh process, in a temporary working directory, and leaves nothing behind. The
process is forked from a fork server (`utils/sandbox_server.py`, its loop in `utils/sandbox_child.py`):
one `python -I -S` interpreter, exec'd with the sandbox's minimal environment (nothing of the caller's
memory or environment: tokens, credentials), started on first use, restarted when it has died, gone when
the caller exits. Per call it forks a supervisor that owns nothing of any other call: fresh descriptors
(the call's pipes only), its own session, directory and environment, and everything below is set up in
it anew; the server never reads a snippet (the supervisor reads it from its file) nor any output,
and it is not dumpable (no process of its uid can ptrace it or write its memory for later forks).
Forking skips an interpreter's start-up: a call costs a third of a bare `subprocess.run` of Python in
CPU time. The forked processes do share the server's hash seed and memory layout (ASLR), which hide
nothing of the caller's. Where pidfds are missing (Linux < 5.3), or with `FORK_SERVER = False`, each
call execs its own supervisor instead, with the same layers. What confines the snippet is enforced by
the kernel, layer by layer; each layer that a platform refuses (a Docker container refuses
namespaces; old kernels have no Landlock) has a fallback, and `SandboxResult.isolation` names the
layers that held for a run:

* uid (needs root, as on Kaggle): the snippet runs as a uid of its own, fresh for each call, with no
  groups and no capabilities (but CAP_DAC_READ_SEARCH when this Python lies where other users cannot
  read, e.g. under /root: reading files is then as before; writing is not). It stops: writes to
  anything root owns, signals to the caller or any other process (kill, pidfd, a re-imported `posix`),
  reading other processes' /proc entries (their environment), and it makes RLIMIT_NPROC count this
  run's processes only (root is exempt from it).
* mount namespace: /tmp, /var/tmp and /run/lock (writable by anyone) become read-only mounts, and one
  tmpfs, bounded in bytes (memory_mb) and inodes (max_files), holds the working directory and a
  private /dev/shm. Writes by any route (sqlite, fifos, device nodes, POSIX shared memory, symlinks,
  hard links) fail or land there, and the kernel frees it all when the run ends, however deep or large
  the tree. Fallback: the working directory on disk, then the shared writable directories are cleared
  of the run uid's files and the tree is deleted with `rm -rf`.
* child subreaper (PR_SET_CHILD_SUBREAPER, any Linux since 3.4, no privilege needed): every orphan of
  the snippet's subtree (double forks, setsid) is re-parented to the supervisor, not to init, so no
  process can leave it; when the snippet's process ends or the call times out, the supervisor kills
  its children until none is left. Should the supervisor itself be killed (the grace ran out), its
  orphans go to the fork server, a subreaper too, which kills them (and, as root, the caller kills
  every process of the run's uid). No PID namespace: the pids a snippet prints are the caller's.
* network namespace: no interface but a down loopback. IPC namespace: System V objects die with it.
* Landlock (Linux 5.13+): writes only beneath the working directory (and the private tmpfs mounts),
  no TCP bind or connect (ABI 4), signals and abstract sockets scoped to the sandbox (ABI 6).
* seccomp (libseccomp builds the filter once, in the caller): no sockets but AF_UNIX (multiprocessing
  needs them), no namespaces, mounts, ptrace, io_uring, bpf, keyrings, System V IPC or POSIX message
  queues. no_new_privs: setuid programs gain nothing.
* rlimits: CPU time, address space, file size, processes, open files, no core dumps.
* the caller's wall-clock timeout: the snippet's process and all its descendants are killed at the
  deadline; the call returns within `timeout + GRACE_SECONDS`, clean-up included, and `duration`
  counts the clean-up.

An audit hook inside the interpreter still refuses most of these early, with a clear
`PermissionError: sandbox: ...` (no fork/exec/subprocess unless allowed, no sockets, no writes outside
the working directory, no signals to other processes). It shares the snippet's process and can be
defeated from within (tests/test_sandbox.py runs hostile snippets with it absent): it only makes
errors readable; the layers above are the boundary. What stops a determined snippet, here (first) and
in a container without namespaces (then):

    writes outside (sqlite, fifo, mknod, symlink, link)  uid + Landlock + read-only /tmp | uid + Landlock
    /dev/shm, /tmp left full, beyond the memory limit     private tmpfs (size, inodes)  | Landlock; else
                                                          uid + removal of its files afterwards
    network                                               network namespace + seccomp (+ Landlock TCP)
    reading the caller's environment                      uid (ptrace access check)
    a daemon that outlives the call                       subreaper (+ the fork server, a subreaper
                                                          too, and the parent kill the uid's)
    state left for the next call (globals, modules, fds,  a fresh fork of the server per call; the
    files, environment)                                   server runs no snippet and keeps no fds
    forking past max_processes                            uid (RLIMIT_NPROC is per uid; root is exempt)
    killing the caller (any import of posix, pidfd)       uid, Landlock signal scope (ABI 6)
    a deep tree, many files                               tmpfs freed by the kernel, inode cap | rm -rf,
                                                          finished in the background after the grace
    a forged error report                                 the report pipe; the verdict is the parent's

`stdout` keeps the first `max_output_chars` characters; `error` is None when the snippet ran to the
end (even with truncated output), else the last line of its traceback or the reason it was stopped.
The exception summary comes on a pipe of its own, never from parsing stderr, and only lines written
after the sandbox's own set-up count: what a snippet prints cannot pose as the sandbox's verdict
(timeouts, floods, signals, exit codes and set-up failures are decided here).
Without root only Landlock (with its signal scope), seccomp, the subreaper, rlimits and the timeout
apply. In a container without namespaces, the snippet's multiprocessing has no semaphores where
Landlock keeps /dev/shm unwritable.

Persistent state across code blocks (later) fits the same shape: the snippet's process would read one
block after another from a pipe, behind the same layers, and its subtree would be killed when the
session ends.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import secrets
import select
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from utils.sandbox_server import ForkServer

__all__ = ["GRACE_SECONDS", "SandboxConfig", "SandboxResult", "run_python"]

GRACE_SECONDS = 1.0  # a call returns within timeout + this, clean-up included
_RETURN_MARGIN = 0.15  # clean-up ends this long before the grace does: reaping and the result take the rest
CHILD_PROGRAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_child.py")
_DRAIN_BYTES = 64 * 1024  # stdout read (and dropped) past the kept head before a flood is killed
_STDERR_KEEP = 8 * 1024  # stderr is kept from the end: the traceback is there
_STDERR_FLOOD = 1024 * 1024
_UID_BASE, _UID_SPAN = 1 << 30, 1 << 30  # per-call uids: far from any real account's
_TYPE_NAME = re.compile(r"[A-Za-z_][\w.]*")
_ERROR_MARK = "\x1e[sandbox-error] "  # what the old in-process prelude wrote to stderr; nothing reads it now
FORK_SERVER = True  # False: exec a fresh supervisor per call (slower; the same layers)
USE_NAMESPACES = True  # False: the fallback layers only, as in a container that refuses unshare (tests)
AUDIT_HOOK = True  # False: no audit hook, what a snippet that defeated it would face (tests)


@dataclass(frozen=True)
class SandboxConfig:
    """The limits of one run, as data (pass it as `config=` or as `run_python`'s second argument)."""

    timeout: float = 5.0  # wall-clock seconds, interpreter start-up and imports included
    memory_mb: int = 512  # address space (RLIMIT_AS); the private tmpfs gets as much again
    max_output_chars: int = 1000  # stdout kept; the rest is replaced by a marker
    max_file_mb: int = 16  # largest file the snippet may write (RLIMIT_FSIZE)
    max_processes: int = 64  # RLIMIT_NPROC: per run when it has its own uid (as root)
    max_open_files: int = 64  # RLIMIT_NOFILE
    print_last_expression: bool = True  # REPL-style: print a final bare expression if nothing was printed
    allow_subprocess: bool = False  # True lifts the audit hook's fork/exec ban (the kernel layers stay)
    max_files: int = 20_000  # files and directories the snippet may create (the private tmpfs's inodes)

    def __post_init__(self) -> None:
        if not (isinstance(self.timeout, (int, float)) and 0 < self.timeout <= 3600):
            raise ValueError(f"SandboxConfig.timeout: expected seconds in (0, 3600], got {self.timeout!r}")
        for name in (
            "memory_mb",
            "max_output_chars",
            "max_file_mb",
            "max_processes",
            "max_open_files",
            "max_files",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SandboxConfig.{name}: expected a positive int, got {value!r}")
        if self.max_open_files < 16:
            raise ValueError(
                f"SandboxConfig.max_open_files: the interpreter needs at least 16, got {self.max_open_files}"
            )


@dataclass
class SandboxResult:
    """What a run printed and how it ended."""

    stdout: str
    error: str | None = None  # None: ran to the end; else the exception line or why it was stopped
    timed_out: bool = False
    returncode: int | None = None
    duration: float = 0.0  # seconds from start to the end of clean-up
    stderr: str = ""  # the end of stderr (warnings, the full traceback)
    truncated: bool = False  # stdout was longer than max_output_chars
    isolation: tuple[str, ...] = ()  # the kernel layers that confined this run (see the module docstring)

    @property
    def ok(self) -> bool:
        return self.error is None


def run_python(
    code: str,
    timeout: float | SandboxConfig | None = None,
    *,
    memory_mb: int | None = None,
    max_output_chars: int | None = None,
    max_file_mb: int | None = None,
    max_processes: int | None = None,
    max_open_files: int | None = None,
    print_last_expression: bool | None = None,
    allow_subprocess: bool | None = None,
    max_files: int | None = None,
    config: SandboxConfig | None = None,
) -> SandboxResult:
    """Run a Python snippet in a fresh, confined interpreter and return what it printed.

    Keywords left as None take their value from `config` (or the `SandboxConfig` defaults). Never
    raises because of the code: every failure of the snippet or of the sandbox is a result.
    Thread-safe: each call has its own processes, pipes, uid and directory.
    """
    if isinstance(timeout, SandboxConfig):
        config, timeout = timeout, None
    overrides = {
        "timeout": timeout,
        "memory_mb": memory_mb,
        "max_output_chars": max_output_chars,
        "max_file_mb": max_file_mb,
        "max_processes": max_processes,
        "max_open_files": max_open_files,
        "print_last_expression": print_last_expression,
        "allow_subprocess": allow_subprocess,
        "max_files": max_files,
    }
    cfg = dataclasses.replace(
        config or SandboxConfig(), **{k: v for k, v in overrides.items() if v is not None}
    )
    if not isinstance(code, str):
        return SandboxResult(stdout="", error=f"code must be a str, got {type(code).__name__}")
    try:
        return _run(code, cfg)
    except Exception as e:  # the sandbox itself failed (no fork possible, disk full...): report, never raise
        return SandboxResult(stdout="", error=f"sandbox failure: {type(e).__name__}: {e}")


# ----------------------------------------------------------------------------------------------
# One run: directory, uid, processes, pipes, clean-up


_uids_in_use: set[int] = set()
_uids_lock = threading.Lock()


def _take_uid() -> int:
    """A uid of its own for this call (as root); collisions with other callers' uids: ~1 in 10^9."""
    if os.geteuid() != 0:
        return os.getuid()
    with _uids_lock:
        while (uid := _UID_BASE + secrets.randbelow(_UID_SPAN)) in _uids_in_use:
            pass
        _uids_in_use.add(uid)
    return uid


def _release_uid(uid: int) -> None:
    with _uids_lock:
        _uids_in_use.discard(uid)


def _run(code: str, cfg: SandboxConfig) -> SandboxResult:
    start = time.monotonic()
    end_by = start + cfg.timeout + GRACE_SECONDS - _RETURN_MARGIN  # clean-up stops there; the rest returns
    uid = _take_uid()
    server = _fork_server()
    root = os.path.realpath(tempfile.mkdtemp(prefix="sandbox-"))
    try:
        os.chmod(root, 0o711)  # the run's uid may pass through, not list
        work = os.path.join(root, "work")
        os.mkdir(work, 0o700)
        if os.geteuid() == 0:
            os.chown(work, uid, uid)
        code_path = os.path.join(root, "snippet.py")
        with open(os.open(code_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(code.encode("utf-8", "surrogatepass"))  # read by the supervisor, as root
        if server is not None:
            result = _fork_and_collect(server, cfg, root, work, code_path, uid, start)
        else:
            result = _spawn_and_collect(cfg, root, work, code_path, uid, start)
    finally:
        _remove_tree(root, end_by)
        _release_uid(uid)
    result.duration = time.monotonic() - start
    return result


def _spawn_and_collect(cfg: SandboxConfig, root: str, work: str, code_path: str, uid: int, start: float):
    report_r, report_w = os.pipe()  # the snippet's process: its layers, then its exception summary
    status_r, status_w = os.pipe()  # the supervisor only: the exit status and the namespaces
    out = _Capture(keep=4 * cfg.max_output_chars + 16, flood=4 * cfg.max_output_chars + 16 + _DRAIN_BYTES)
    err = _Capture(keep=_STDERR_KEEP, flood=_STDERR_FLOOD, tail=True)
    report, status = _Capture(keep=8192, flood=1 << 20), _Capture(keep=4096, flood=1 << 20)
    try:
        proc = subprocess.Popen(
            _child_argv(cfg, root, work, code_path, uid, report_w, status_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=root,
            env=_child_env(work),
            start_new_session=True,
            close_fds=True,
            pass_fds=(report_w, status_w),
        )
    except BaseException:
        os.close(report_r)
        os.close(status_r)
        raise
    finally:
        os.close(report_w)
        os.close(status_w)
    pipes = [(proc.stdout.fileno(), out), (proc.stderr.fileno(), err), (report_r, report), (status_r, status)]
    stop = None
    try:
        stop = _collect(proc.pid, pipes, start + cfg.timeout)
        if stop is not None:
            _stop(proc, start + cfg.timeout + GRACE_SECONDS / 2, uid)
    finally:
        _kill_group(proc.pid)  # before reaping: the group id cannot have been reused yet
        _drain(pipes)
        proc.wait()
        if os.geteuid() == 0 and b"rc=" not in status.buf:  # the supervisor died before its clean-up
            _kill_uid(uid)
        for fd in (proc.stdout, proc.stderr, report_r, status_r):
            fd.close() if hasattr(fd, "close") else os.close(fd)
    return _result(cfg, proc.returncode, stop, out, err, report, status)


_server_lock = threading.Lock()
_server: list[ForkServer] = []


def _fork_server() -> ForkServer | None:
    """The process-wide fork server, or None (exec a supervisor per call) where it is switched off or
    pidfds are missing (Linux < 5.3): the caller could not signal a supervisor that is not its child."""
    if not FORK_SERVER:
        return None
    probe = _pidfd_open(os.getpid())
    if probe is None:
        return None
    os.close(probe)
    with _server_lock:
        if not _server:
            _server.append(ForkServer(_interpreter(), _child_env("/")))
        return _server[0]


def _fork_and_collect(server: ForkServer, cfg, root: str, work: str, code_path: str, uid: int, start: float):
    """One run through the fork server: the same supervisor, forked instead of exec'd. The pipes are
    made here and handed over; the supervisor's end is seen on its pidfd, its exit code (should it
    die before writing its status) comes from the server on the status pipe."""
    out = _Capture(keep=4 * cfg.max_output_chars + 16, flood=4 * cfg.max_output_chars + 16 + _DRAIN_BYTES)
    err = _Capture(keep=_STDERR_KEEP, flood=_STDERR_FLOOD, tail=True)
    report, status = _Capture(keep=8192, flood=1 << 20), _Capture(keep=4096, flood=1 << 20)
    pairs = [os.pipe() for _ in range(4)]  # stdout, stderr, report, status
    try:
        args = _child_argv(cfg, root, work, code_path, uid, -1, -1)[len(_interpreter()) :]
        pid, pidfd = server.fork(args, [w for _, w in pairs], start + cfg.timeout - time.monotonic())
    except BaseException:
        for r, _ in pairs:
            os.close(r)
        raise
    finally:
        for _, w in pairs:
            os.close(w)
    pipes = [(r, cap) for (r, _), cap in zip(pairs, (out, err, report, status), strict=True)]
    stop = None
    try:
        stop = _collect(pid, pipes, start + cfg.timeout, pidfd=pidfd)
        if stop is not None:
            _stop_forked(pidfd, start + cfg.timeout + GRACE_SECONDS / 2, uid)
        if b"rc=" not in status.buf:  # it died before its status: the server's exit= line says how
            _until_eof(pipes[3], start + cfg.timeout + GRACE_SECONDS - _RETURN_MARGIN)
    finally:
        try:  # normally a no-op (it has exited); after an error here, no supervisor runs on
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _drain(pipes)
        if os.geteuid() == 0 and b"rc=" not in status.buf:  # the supervisor died before its clean-up
            _kill_uid(uid)
        for fd, _ in pipes:
            os.close(fd)
        os.close(pidfd)
    fields = dict(_status_fields(status.buf.decode("utf-8", "replace")))
    returncode = int(fields["exit"]) if fields.get("exit", "").lstrip("-").isdigit() else None
    return _result(cfg, returncode, stop, out, err, report, status)


def _stop_forked(pidfd: int, until: float, uid: int) -> None:
    """`_stop` for a supervisor that is the server's child: signalled through its pidfd (no pid reuse)."""
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGUSR1)
    except ProcessLookupError:
        return
    if not _readable(pidfd, until):
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if os.geteuid() == 0:
            _kill_uid(uid)


def _until_eof(pipe, until: float) -> None:
    fd, cap = pipe
    while _readable(fd, until):
        chunk = _read(fd)
        if chunk == b"":
            return
        if chunk:
            cap.add(chunk)


def _readable(fd: int, until: float) -> bool:
    """Wait until `fd` is readable or the deadline passes (poll: any fd number, unlike select)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    left = until - time.monotonic()
    return left > 0 and bool(poller.poll(left * 1000))


def _child_argv(
    cfg: SandboxConfig, root: str, work: str, code_path: str, uid: int, report_w: int, status_w: int
):
    # -I: no environment variables, no user site, no script dir on sys.path; -S: skip site (about 10 ms),
    # the parent's own sys.path entries are passed instead so that installed packages import.
    paths = [p for p in sys.path if p and os.path.isabs(p) and os.path.exists(p)]
    args = {
        "root": root,
        "work": work,
        "code_path": code_path,
        "flags": ("p" if cfg.print_last_expression else "") + ("s" if cfg.allow_subprocess else "") + "-",
        "cpu": int(cfg.timeout) + 1,
        "mem": cfg.memory_mb << 20,
        "fsize": cfg.max_file_mb << 20,
        "nproc": cfg.max_processes,
        "nofile": cfg.max_open_files,
        "files": cfg.max_files,
        "tmpfs_mb": cfg.memory_mb,
        "uid": uid,
        "read_cap": "1" if _needs_read_capability() else "0",
        "namespaces": "1" if USE_NAMESPACES else "0",
        "hook": "1" if AUDIT_HOOK else "0",
        "report_fd": report_w,
        "status_fd": status_w,
        "seccomp": _seccomp_program().hex(),
        "paths": os.pathsep.join(paths),
    }
    return [*_interpreter(), *(f"{k}={v}" for k, v in args.items())]


def _interpreter() -> list[str]:
    return [sys.executable, "-I", "-S", "-B", "-c", _launcher()]


@functools.lru_cache(maxsize=1)
def _launcher() -> str:
    """`-c` code that imports the child program from its bytecode cache (compiled here once)."""
    import py_compile
    from importlib.util import cache_from_source

    cached = cache_from_source(CHILD_PROGRAM)
    if not os.path.exists(cached) or os.path.getmtime(cached) < os.path.getmtime(CHILD_PROGRAM):
        try:
            py_compile.compile(CHILD_PROGRAM, doraise=True)
        except (OSError, py_compile.PyCompileError):
            pass  # a read-only install: the child compiles the source each time
    folder = os.path.dirname(CHILD_PROGRAM)
    return f"import sys;sys.path.insert(0,{folder!r});import sandbox_child as c;del sys.path[0];c.main(sys.argv[1:])"


def _child_env(work: str) -> dict[str, str]:
    """A minimal environment: nothing of the parent's (tokens, credentials) reaches the snippet."""
    one = "1"
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": work,
        "TMPDIR": work,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": one,
        "PYTHONIOENCODING": "utf-8",
        "OMP_NUM_THREADS": one,
        "MKL_NUM_THREADS": one,
        "OPENBLAS_NUM_THREADS": one,
        "NUMEXPR_NUM_THREADS": one,
        "MPLBACKEND": "Agg",
    }


@functools.lru_cache(maxsize=1)
def _needs_read_capability() -> bool:
    """Can another user reach this interpreter and its import paths (every parent directory searchable
    by others)? If not (a Python under /root), the run's uid keeps CAP_DAC_READ_SEARCH."""
    for path in [os.path.realpath(sys.executable), *sys.path]:
        if not path or not os.path.isabs(path) or not os.path.exists(path):
            continue
        path = os.path.realpath(path)
        while True:
            parent = os.path.dirname(path)
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return True
            if parent == path:
                break
            path = parent
    return False


@functools.lru_cache(maxsize=1)
def _seccomp_program() -> bytes:
    """The seccomp filter as raw BPF, compiled once with libseccomp (b"" where it is missing)."""
    from utils.sandbox_seccomp import compile_filter

    try:
        return compile_filter()
    except OSError:
        return b""


class _Capture:
    """One pipe's bytes: the first `keep` (or the last, with tail=True), and how many came in all."""

    def __init__(self, keep: int, flood: int, tail: bool = False):
        self.keep, self.flood, self.tail = keep, flood, tail
        self.buf = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.tail:
            self.buf += chunk
            del self.buf[: -self.keep]
        elif len(self.buf) < self.keep:
            self.buf += chunk[: self.keep - len(self.buf)]

    @property
    def flooded(self) -> bool:
        return self.total > self.flood


def _collect(pid: int, pipes: list, deadline: float, pidfd: int | None = None) -> str | None:
    """Read the pipes until the supervisor exits; returns 'timeout', 'flood' or None (it exited).
    Without a pidfd (`pid` is then this process's child) it polls with waitid."""
    own_pidfd = pidfd is None
    if own_pidfd:
        pidfd = _pidfd_open(pid)
    with selectors.DefaultSelector() as sel:
        for fd, cap in pipes:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ, cap)
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ, None)
        try:
            while True:
                if pidfd is None and _has_exited(pid):
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return "timeout"
                for key, _ in sel.select(left if pidfd is not None else min(left, 0.01)):
                    if key.data is None:
                        return None
                    chunk = _read(key.fd)
                    if chunk == b"":
                        sel.unregister(key.fileobj)
                    elif chunk:
                        key.data.add(chunk)
                        if key.data.flooded and key.data in (pipes[0][1], pipes[1][1]):
                            return "flood"
        finally:
            if pidfd is not None and own_pidfd:
                os.close(pidfd)


def _stop(proc: subprocess.Popen, until: float, uid: int) -> None:
    """Ask the supervisor to kill the snippet's process and every descendant; if it has not exited by
    `until`, kill its group and (as root) every process of the run's uid from here."""
    try:
        os.kill(proc.pid, signal.SIGUSR1)  # not reaped yet: the pid is still ours
    except ProcessLookupError:
        return
    pidfd = _pidfd_open(proc.pid)
    try:
        while not _has_exited(proc.pid):
            left = until - time.monotonic()
            if left <= 0:
                _kill_group(proc.pid)
                if os.geteuid() == 0:
                    _kill_uid(uid)
                return
            if pidfd is not None:
                select.select([pidfd], [], [], left)
            else:
                time.sleep(min(left, 0.01))
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _pidfd_open(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)  # readable once the child exits: no polling (Linux 5.3+)
    except (AttributeError, OSError):
        return None


def _has_exited(pid: int) -> bool:
    # WNOWAIT: leave the zombie in place so that its pid (= the group id) is not reused before the kill
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _read(fd: int) -> bytes | None:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None


def _drain(pipes: list) -> None:
    """Read what is left in the pipes after the end (bounded: writers that escaped are ignored)."""
    for fd, cap in pipes:
        end = time.monotonic() + 0.2
        while not cap.flooded and time.monotonic() < end:
            chunk = _read(fd)
            if not chunk:
                break
            cap.add(chunk)


def _kill_group(pgid: int) -> None:
    """SIGKILL what is left of the run's process group (normally nothing: the supervisor killed it)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_uid(uid: int) -> None:
    """The last resort when the supervisor died before its clean-up: every process of the run's uid."""
    owner = f"Uid:\t{uid}\t".encode()
    for _ in range(5):
        if not _kill_matching(lambda pid: owner in _proc_bytes(pid, "status")):
            break


def _proc_bytes(pid: str, name: str) -> bytes:
    with open(f"/proc/{pid}/{name}", "rb") as f:
        return f.read()


def _kill_matching(matches) -> int:
    killed = 0
    for name in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not name.isdigit():
            continue
        try:
            if matches(name):
                os.kill(int(name), signal.SIGKILL)
                killed += 1
        except OSError:
            continue
    return killed


def _remove_tree(path: str, end_by: float) -> None:
    """Delete the run's directory by the deadline. It normally holds one file (the snippet's tree was
    on the private tmpfs); on disk (no mount namespace) any depth or size goes to `rm -rf`, and what
    it has not deleted by the deadline it finishes in the background."""
    try:
        os.unlink(os.path.join(path, "snippet.py"))
        os.rmdir(os.path.join(path, "work"))
        os.rmdir(path)
        return
    except OSError:
        pass
    rm = subprocess.Popen(["rm", "-rf", "--", path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        rm.wait(max(0.05, end_by - time.monotonic()))
    except subprocess.TimeoutExpired:
        threading.Thread(target=rm.wait, name="sandbox-rm", daemon=True).start()
        return
    if os.path.lexists(path):  # rm missing or refused: best effort, never raises
        shutil.rmtree(path, ignore_errors=True)


def _result(cfg, returncode, stop, out, err, report, status) -> SandboxResult:
    stdout, truncated = _cut(out, cfg.max_output_chars)
    stderr = err.buf.decode("utf-8", "replace").strip("\n")
    fields = dict(_status_fields(status.buf.decode("utf-8", "replace")))
    layers = [x for x in fields.get("layers", "").split(",") if x]
    summary, failure = None, fields.get("failure")
    ready = False  # the snippet runs after its process's "layers" line: later lines may be its own
    for kind, name, message in _report_lines(report.buf.decode("utf-8", "replace")):
        if kind == "layers" and not ready:
            layers, ready = list(dict.fromkeys(layers + [x for x in name.split(",") if x])), True
        elif kind == "failure" and not ready:
            failure = failure or f"{name}: {message}"
        elif kind in ("exception", "memory") and ready:
            summary = _summary(kind, name, message)
    if "rc" in fields:
        returncode = int(fields["rc"])
    elif stop is None and failure is None:  # the supervisor died before its report: its traceback ends stderr
        failure = f"the supervisor ended without a status ({_exit_reason(returncode, stderr) or 'exit 0'})"
    if stop is not None and returncode is not None and returncode >= 0 and "rc" not in fields:
        returncode = -signal.SIGKILL
    if stop == "timeout":
        error = f"timed out after {cfg.timeout:g} s"
    elif stop == "flood":
        error = f"output truncated: more than {out.flood if out.flooded else err.flood} bytes printed, process killed"
    elif failure is not None:
        error = f"sandbox failure: {failure}"
    elif summary is not None and returncode == 1:  # written by the snippet's own process as it failed
        error = summary
    else:
        error = _exit_reason(returncode)  # not from stderr: the snippet writes there
    return SandboxResult(
        stdout=stdout,
        error=error,
        timed_out=stop == "timeout",
        returncode=returncode,
        stderr=stderr[-_STDERR_KEEP:],
        truncated=truncated,
        isolation=tuple(layers),
    )


def _status_fields(text: str):
    """key=value fields of the status lines: the supervisor's (`rc=... layers=...` or `failure=...`),
    then, through the fork server, the server's `exit=<supervisor's exit code>`."""
    for line in text.strip().splitlines():
        if line.startswith("failure="):
            yield "failure", line[len("failure=") :]
            continue
        for item in line.split():
            key, _, value = item.partition("=")
            yield key, value


def _report_lines(text: str):
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            yield parts


def _summary(kind: str, name: str, message: str) -> str:
    """`Type: message`, as a traceback's last line; the type must look like one (the pipe is reachable
    from the snippet, so nothing here may read like the sandbox's own verdicts)."""
    name = name if _TYPE_NAME.fullmatch(name) else "Exception"
    line = f"{name}: {message}" if message else name
    return f"memory limit exceeded ({line})" if kind == "memory" else line


def _cut(cap: _Capture, limit: int) -> tuple[str, bool]:
    text = cap.buf.decode("utf-8", "replace")
    if cap.total <= len(cap.buf) and len(text) <= limit:
        return text, False
    return text[:limit] + f"\n[... output truncated to {limit} characters]", True


def _exit_reason(returncode: int | None, stderr: str = "") -> str | None:
    """Why a process ended, given its stderr if that can be trusted (the supervisor's own; never the
    snippet's, which could pose as a verdict): the last line of it, else the exit code."""
    if returncode == 0:
        return None
    if returncode is None:
        return "killed"
    if returncode < 0:
        name = _signal_name(-returncode)
        if name == "SIGXCPU":
            return "CPU time limit exceeded"
        return f"killed by {name}" + (
            " (memory or stack limit?)" if name in ("SIGSEGV", "SIGBUS", "SIGABRT") else ""
        )
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1].strip()[:500] if lines else f"exited with code {returncode}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def __getattr__(name: str):
    if name == "_PRELUDE":  # the child program's source, where the prelude string used to be
        with open(CHILD_PROGRAM, encoding="utf-8") as f:
            return f.read()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
