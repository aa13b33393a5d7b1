"""Running model-written Python safely: the tool of tool-integrated reasoning.

Each snippet runs in a fresh `python -I -S` interpreter, in its own session (process group), in a
temporary working directory that is deleted afterwards, with a minimal environment. Limits come from
two layers:

* the kernel: `setrlimit` (CPU time, address space, file size, processes, open files, no core dumps),
  set by the child's prelude before any snippet code runs; the parent's wall-clock timeout; SIGKILL to
  the whole process group (and to anything still carrying this run's marker in its environment) every
  time a run ends, so nothing it started outlives it;
* a prelude installed with `sys.addaudithook` before the snippet runs: no fork/exec/subprocess, no
  sockets, no writes, renames or deletions outside the working directory, no signals to other
  processes, no reading other processes' `/proc` entries, no raising of the rlimits (root could).

The prelude is defence in depth against careless or mildly hostile code, not a security boundary:
an audit hook lives inside the process it guards, and CPython can be subverted from within by a
determined attacker. For untrusted adversaries add OS isolation (a container, user or mount
namespaces, seccomp). Read access to the file system is not restricted (imports need it).

`stdout` keeps the first `max_output_chars` characters; `error` is None when the snippet ran to the
end (even with truncated output), else the last line of its traceback or the reason it was stopped.
"""

from __future__ import annotations

import dataclasses
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass

__all__ = ["SandboxConfig", "SandboxResult", "run_python"]

_ERROR_MARK = "\x1e[sandbox-error] "  # the prelude's last stderr line: the snippet's exception summary
_DRAIN_BYTES = 64 * 1024  # stdout read (and dropped) past the kept head before a flood is killed
_STDERR_KEEP = 8 * 1024  # stderr is kept from the end: the traceback is there
_STDERR_FLOOD = 1024 * 1024
_MARK_ENV = "AIMO_SANDBOX_RUN"  # environment marker that finds descendants which left the group


@dataclass(frozen=True)
class SandboxConfig:
    """The limits of one run, as data (pass it as `config=` or as `run_python`'s second argument)."""

    timeout: float = 5.0  # wall-clock seconds, interpreter start-up and imports included
    memory_mb: int = 512  # address space (RLIMIT_AS)
    max_output_chars: int = 1000  # stdout kept; the rest is replaced by a marker
    max_file_mb: int = 16  # largest file the snippet may write (RLIMIT_FSIZE)
    max_processes: int = 64  # RLIMIT_NPROC; counts all the user's tasks, and root is exempt
    max_open_files: int = 64  # RLIMIT_NOFILE
    print_last_expression: bool = True  # REPL-style: print a final bare expression if nothing was printed
    allow_subprocess: bool = False  # True lifts the fork/exec ban (then only the rlimits bound it)

    def __post_init__(self) -> None:
        if not (isinstance(self.timeout, (int, float)) and 0 < self.timeout <= 3600):
            raise ValueError(f"SandboxConfig.timeout: expected seconds in (0, 3600], got {self.timeout!r}")
        for name in ("memory_mb", "max_output_chars", "max_file_mb", "max_processes", "max_open_files"):
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
    duration: float = 0.0  # seconds from start to exit (or kill)
    stderr: str = ""  # the end of stderr (warnings, the full traceback), without the prelude's marker
    truncated: bool = False  # stdout was longer than max_output_chars

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
    config: SandboxConfig | None = None,
) -> SandboxResult:
    """Run a Python snippet in a fresh, limited interpreter and return what it printed.

    Keywords left as None take their value from `config` (or the `SandboxConfig` defaults). Never
    raises because of the code: every failure of the snippet or of the sandbox is a result.
    Thread-safe: each call has its own process, pipes and directory.
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
# Parent side


def _run(code: str, cfg: SandboxConfig) -> SandboxResult:
    root = os.path.realpath(tempfile.mkdtemp(prefix="sandbox-"))
    try:
        work = os.path.join(root, "work")
        os.mkdir(work, 0o700)
        code_path = os.path.join(root, "snippet.py")
        with open(code_path, "wb") as f:
            f.write(code.encode("utf-8", "surrogatepass"))
        token = uuid.uuid4().hex
        return _spawn_and_collect(cfg, work, code_path, token)
    finally:
        _remove_tree(root)


def _spawn_and_collect(cfg: SandboxConfig, work: str, code_path: str, token: str) -> SandboxResult:
    out = _Capture(keep=4 * cfg.max_output_chars + 16, flood=4 * cfg.max_output_chars + 16 + _DRAIN_BYTES)
    err = _Capture(keep=_STDERR_KEEP, flood=_STDERR_FLOOD, tail=True)
    start = time.monotonic()
    proc = subprocess.Popen(
        _child_argv(cfg, work, code_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=work,
        env=_child_env(work, token),
        start_new_session=True,
        close_fds=True,
    )
    stop = None
    try:
        stop = _collect(proc, (out, err), start + cfg.timeout)
        duration = time.monotonic() - start
    finally:
        _kill_everything(proc.pid, token)  # before reaping: the group id cannot have been reused yet
        _drain(proc, (out, err))
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            pipe.close()
    return _result(cfg, proc.returncode, stop, out, err, duration)


def _child_argv(cfg: SandboxConfig, work: str, code_path: str) -> list[str]:
    # -I: no environment variables, no user site, no script dir on sys.path; -S: skip site (about 10 ms),
    # the parent's own sys.path entries are passed instead so that installed packages import.
    flags = ("p" if cfg.print_last_expression else "") + ("s" if cfg.allow_subprocess else "")
    limits = [
        int(cfg.timeout) + 1,
        cfg.memory_mb << 20,
        cfg.max_file_mb << 20,
        cfg.max_processes,
        cfg.max_open_files,
    ]
    paths = [p for p in sys.path if p and os.path.isabs(p) and os.path.exists(p)]
    return [
        sys.executable,
        "-I",
        "-S",
        "-B",
        "-c",
        _PRELUDE,
        work,
        code_path,
        flags,
        *map(str, limits),
        *paths,
    ]


def _child_env(work: str, token: str) -> dict[str, str]:
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
        _MARK_ENV: token,
    }


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


def _collect(proc: subprocess.Popen, caps: tuple[_Capture, _Capture], deadline: float) -> str | None:
    """Read both pipes until the child exits; returns 'timeout', 'flood' or None (it exited)."""
    pidfd = _pidfd_open(proc.pid)
    with selectors.DefaultSelector() as sel:
        for pipe, cap in zip((proc.stdout, proc.stderr), caps, strict=True):
            os.set_blocking(pipe.fileno(), False)
            sel.register(pipe, selectors.EVENT_READ, cap)
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ, None)
        try:
            while True:
                if pidfd is None and _has_exited(proc.pid):
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
                        if key.data.flooded:
                            return "flood"
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


def _drain(proc: subprocess.Popen, caps: tuple[_Capture, _Capture]) -> None:
    """Read what is left in the pipes after the kill (bounded: writers that escaped are ignored)."""
    for pipe, cap in zip((proc.stdout, proc.stderr), caps, strict=True):
        end = time.monotonic() + 0.2
        while not cap.flooded and time.monotonic() < end:
            chunk = _read(pipe.fileno())
            if not chunk:
                break
            cap.add(chunk)


def _kill_everything(pgid: int, token: str) -> None:
    """SIGKILL the run's process group, then any process that still carries the run's marker."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    marker = f"{_MARK_ENV}={token}".encode()
    for _ in range(3):  # a daemon may be forking while we look
        if not _kill_marked(marker):
            break


def _kill_marked(marker: bytes) -> int:
    """Kill processes whose environment holds `marker` (double-forked daemons leave the group)."""
    killed = 0
    for name in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                found = marker in f.read()
            if found:
                os.kill(int(name), signal.SIGKILL)
                killed += 1
        except OSError:
            continue
    return killed


def _remove_tree(path: str) -> None:
    def fix_and_retry(func, failed, _exc):  # the snippet may have chmod-ed its files to 0
        try:
            os.chmod(os.path.dirname(failed), 0o700)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
            func(failed)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix_and_retry)


def _result(
    cfg, returncode: int, stop: str | None, out: _Capture, err: _Capture, duration: float
) -> SandboxResult:
    stdout, truncated = _cut(out, cfg.max_output_chars)
    stderr, summary = _split_stderr(err.buf.decode("utf-8", "replace"))
    if stop == "timeout":
        error = f"timed out after {cfg.timeout:g} s"
    elif stop == "flood":
        error = f"output truncated: more than {out.flood if out.flooded else err.flood} bytes printed, process killed"
    elif summary is not None:
        error = summary
    else:
        error = _exit_reason(returncode, stderr)
    return SandboxResult(
        stdout=stdout,
        error=error,
        timed_out=stop == "timeout",
        returncode=returncode,
        duration=duration,
        stderr=stderr,
        truncated=truncated,
    )


def _cut(cap: _Capture, limit: int) -> tuple[str, bool]:
    text = cap.buf.decode("utf-8", "replace")
    if cap.total <= len(cap.buf) and len(text) <= limit:
        return text, False
    return text[:limit] + f"\n[... output truncated to {limit} characters]", True


def _split_stderr(text: str) -> tuple[str, str | None]:
    """Separate the prelude's exception summary (its last line) from the rest of stderr."""
    head, mark, tail = text.rpartition(_ERROR_MARK)
    if not mark:
        return text, None
    summary, _, after = tail.partition("\n")  # anything after it was written at interpreter exit
    return (head.rstrip("\n") + "\n" + after).strip("\n"), summary.strip() or "unknown error"


def _exit_reason(returncode: int, stderr: str) -> str | None:
    if returncode == 0:
        return None
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


# ----------------------------------------------------------------------------------------------
# Child side: the prelude, run by `python -I -S -B -c _PRELUDE work code_path flags limits... paths...`.
# Everything the audit hook uses is bound as a default argument (reading or replacing a function's
# defaults or code is itself an audited event that the hook refuses for its own functions), so
# monkeypatching modules or globals cannot change its decisions.

_PRELUDE = r'''
import sys


def _limits(cpu, mem, fsize, nproc, nofile):
    import resource as r
    wanted = ((r.RLIMIT_CPU, cpu, cpu + 1), (r.RLIMIT_AS, mem, mem), (r.RLIMIT_FSIZE, fsize, fsize),
              (r.RLIMIT_NPROC, nproc, nproc), (r.RLIMIT_NOFILE, nofile, nofile), (r.RLIMIT_CORE, 0, 0))
    for res, soft, hard in wanted:
        cap = r.getrlimit(res)[1]
        if cap != r.RLIM_INFINITY:
            hard = min(hard, cap)
            soft = min(soft, hard)
        r.setrlimit(res, (soft, hard))


def _denied(*args, **kwargs):
    raise PermissionError("sandbox: not allowed")


def _stub(allow_sub):
    # Calls that raise no audit event of their own.
    import posix
    import _signal
    import _posixsubprocess
    _signal.pidfd_send_signal = _denied
    posix.mkfifo = posix.mknod = _denied
    if not allow_sub:
        _posixsubprocess.fork_exec = _denied


def _guard(work, allow_sub):
    """Build the audit hook that confines the snippet (see the module docstring).

    Its functions use only their parameters: builtins, globals and closure cells can all be replaced
    from the snippet, a function's defaults and code cannot (the hook refuses it for its own).
    """
    import posix
    import _stat
    o_write = posix.O_WRONLY | posix.O_RDWR | posix.O_CREAT | posix.O_TRUNC | posix.O_APPEND
    ours = []

    def text(p, _fspath=posix.fspath, _str=str, _bytes=bytes, _type=type, _isinst=isinstance,
             _dec=bytes.decode, _cat=str.__add__):
        if _type(p) is not _str and _type(p) is not _bytes:
            p = _fspath(p)
        if _isinst(p, _bytes):
            return _dec(p, "utf-8", "surrogateescape")
        return _cat("", p)

    def real(p, base=None, _lstat=posix.lstat, _readlink=posix.readlink, _islnk=_stat.S_ISLNK,
             _cwd=posix.getcwd, _split=str.split, _rpart=str.rpartition, _sw=str.startswith,
             _errors=(OSError, ValueError)):
        """Resolve symlinks like the kernel does, with C functions only; missing parts stay as written."""
        if not _sw(p, "/"):
            p = (base or _cwd()) + "/" + p
        todo, out, hops = _split(p, "/")[::-1], "", 0
        while todo:
            name = todo.pop()
            if name == "" or name == ".":
                continue
            if name == "..":
                out = _rpart(out, "/")[0]
                continue
            cand = out + "/" + name
            try:
                st = _lstat(cand)
            except _errors:
                out = cand
                continue
            if hops < 40 and _islnk(st.st_mode):
                hops += 1
                target = _readlink(cand)
                if _sw(target, "/"):
                    out = ""
                todo.extend(_split(target, "/")[::-1])
            else:
                out = cand
        return out or "/"

    def fd_path(fd, _readlink=posix.readlink, _int=int, _type=type, _err=PermissionError):
        if _type(fd) is not _int:
            raise _err("sandbox: unexpected descriptor")
        return _readlink("/proc/self/fd/" + _int.__repr__(fd))

    def inside(r, _w=work, _ws=work + "/", _sw=str.startswith):
        return r == _w or _sw(r, _ws)

    def may_change(p, dir_fd=None, _text=text, _real=real, _fd=fd_path, _in=inside, _rpart=str.rpartition,
                   _sw=str.startswith, _type=type, _int=int):
        """May the snippet create, change or delete `p`: is it, and what it links to, inside?"""
        if _type(p) is _int:
            return _in(_fd(p))
        p = _text(p)
        base = _fd(dir_fd) if dir_fd is not None and dir_fd != -1 and not _sw(p, "/") else None
        head, sep, tail = _rpart(p, "/")
        if tail == "" or tail == "." or tail == "..":
            itself = _real(p, base)
        else:
            itself = _real(head or ("/" if sep else "."), base) + "/" + tail
        return _in(itself) and _in(_real(p, base))

    def may_read(p, is_os_open, _text=text, _real=real, _in=inside, _split=str.split, _sw=str.startswith,
                 _digit=str.isdigit, _pid=posix.getpid, _repr=int.__repr__, _stat_=posix.stat,
                 _isdir=_stat.S_ISDIR, _errors=(OSError, ValueError)):
        r = _real(_text(p))
        if _sw(r, "/proc/"):
            part = _split(r, "/")[2]
            if _digit(part) and part != _repr(_pid()):
                return False  # other processes' environment, memory, command line
        if is_os_open and not _in(r):  # no descriptors of outside directories: they would serve as dir_fd
            try:
                return not _isdir(_stat_(r).st_mode)
            except _errors:
                return True
        return True

    def check_open(path, mode, flags, _may_change=may_change, _may_read=may_read, _real=real, _text=text,
                   _ow=o_write, _type=type, _int=int, _str=str):
        if _type(path) is _int:
            return None  # an open descriptor: the kernel enforces its access mode
        writes = _type(flags) is _int and flags & _ow
        if _type(mode) is _str and ("w" in mode or "a" in mode or "x" in mode or "+" in mode):
            writes = True
        if writes:
            if _real(_text(path)) == "/dev/null" or _may_change(path):
                return None
            return "for writing outside the working directory is not allowed"
        return None if _may_read(path, mode is None) else "of this path is not allowed"

    path_args = {  # event: (positions of the changed paths, positions of their dir_fd or None)
        "os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)),
        "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)), "os.utime": ((0,), (3,)),
        "os.truncate": ((0,), (None,)), "os.rename": ((0, 1), (2, 3)), "os.setxattr": ((0,), (None,)),
        "os.removexattr": ((0,), (None,)), "os.chflags": ((0,), (None,)), "os.lchflags": ((0,), (None,)),
        "shutil.rmtree": ((0,), (1,)), "shutil.copyfile": ((1,), (None,)), "shutil.copymode": ((1,), (None,)),
        "shutil.copystat": ((1,), (None,)), "shutil.copytree": ((1,), (None,)), "shutil.chown": ((0,), (None,)),
        "shutil.move": ((0, 1), (None, None)),
    }

    def check_paths(event, args, _table=path_args, _may_change=may_change, _zip=zip):
        paths, fds = _table[event]
        for i, j in _zip(paths, fds):
            if not _may_change(args[i], None if j is None else args[j]):
                return "outside the working directory is not allowed"
        return None

    def check_signal(event, args, _getpid=posix.getpid, _getpgid=posix.getpgid, _allow=allow_sub):
        target, own = args[0], _getpgid(0)
        if event == "os.killpg":
            return None if target == 0 or target == own else "is only allowed for the sandbox's own group"
        if target == 0 or target == _getpid() or target == -own:
            return None
        if _allow and target > 1 and _getpgid(target) == own:
            return None
        return "is only allowed for the sandbox's own processes"

    deny = frozenset((
        "socket.__new__", "socket.bind", "socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
        "socket.gethostbyaddr", "socket.getnameinfo", "socket.sendto", "socket.sendmsg", "socket.sethostname",
        "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function", "ctypes.cdata",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.settrace", "sys.setprofile",
        "os.symlink", "os.link", "resource.prlimit", "cpython.PyInterpreterState_New",
    ))
    process = frozenset(("os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.spawn", "os.system",
                         "subprocess.Popen", "os.startfile"))
    no_reimport = frozenset(("posix", "_signal", "_posixsubprocess", "_testcapi", "_testinternalcapi",
                             "_xxsubinterpreters", "_xxinterpchannels"))
    introspect = frozenset(("object.__getattr__", "object.__setattr__", "object.__delattr__"))
    watched = deny | process | introspect | frozenset(path_args) | frozenset((
        "open", "import", "os.kill", "os.killpg", "resource.setrlimit", "ctypes.dlopen", "sqlite3.connect"))

    def decide(event, args, _deny=deny, _process=process, _allow=allow_sub, _noimp=no_reimport,
               _intro=introspect, _ours=ours, _table=path_args, _open=check_open, _paths=check_paths,
               _signal=check_signal, _may_change=may_change, _type=type, _str=str):
        if event in _deny or (event in _process and not _allow):
            return "is not allowed"
        if event == "open":
            return _open(args[0], args[1], args[2])
        if event in _table:
            return _paths(event, args)
        if event in _intro:
            for f in _ours:
                if args[0] is f:
                    return "on the sandbox's own functions is not allowed"
            return None
        if event == "import":
            return "again is not allowed" if args[0] in _noimp else None
        if event == "os.kill" or event == "os.killpg":
            return _signal(event, args)
        if event == "resource.setrlimit":  # only RLIMIT_STACK (3): RLIMIT_AS bounds the stack anyway
            return None if args[0] == 3 else "is not allowed"
        if event == "ctypes.dlopen":  # dlopen(None) is what `import ctypes` does; symbols stay refused
            return None if args[0] is None else "is not allowed"
        if event == "sqlite3.connect":
            db = args[0]
            if (_type(db) is _str and (db == ":memory:" or db == "")) or _may_change(db):
                return None
            return "outside the working directory is not allowed"
        return None

    def hook(event, args, _watched=watched, _decide=decide, _err=PermissionError):
        if event in _watched:
            why = _decide(event, args)
            if why is not None:
                raise _err("sandbox: " + event + " " + why)

    ours.extend((hook, decide, text, real, fd_path, inside, may_change, may_read, check_open, check_paths,
                 check_signal, _denied))
    return hook


class _Out:
    """sys.stdout that remembers whether anything was written (for the REPL-style last expression)."""

    def __init__(self, stream):
        self._stream, self.used = stream, False

    def write(self, s):
        if s:
            self.used = True
        return self._stream.write(s)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _report(exc, code, namespace):
    """Write the traceback (snippet frames only) and, last, a marked one-line summary to stderr."""
    if isinstance(exc, MemoryError):  # free the snippet's memory before formatting
        namespace.clear()
        tb = exc.__traceback__
        while tb is not None:
            try:
                tb.tb_frame.clear()  # the locals of the snippet's functions
            except RuntimeError:
                pass  # a frame still running: the prelude's own
            tb = tb.tb_next
    try:
        import linecache
        import traceback
        linecache.cache["<snippet>"] = (len(code), None, code.splitlines(True), "<snippet>")
        chain, tb = [], exc.__traceback__
        while tb is not None:  # tb_next is cheap; extract_tb would read (and audit) every frame
            chain.append(tb)
            tb = tb.tb_next
        frames = traceback.extract_tb(chain[-40:][0]) if chain else []
        frames = [f for f in frames if f.filename != "<string>"]  # the prelude's own frames
        last = traceback.format_exception_only(type(exc), exc)
        text = "".join(traceback.format_list(frames) + last)
        text = ("Traceback (most recent call last):\n" if frames else "") + text[-4000:]
        if isinstance(exc, SyntaxError):
            summary = type(exc).__name__ + ": " + str(exc)
        else:
            summary = last[0]
        summary = " ".join(summary.split())[:2000]
        if isinstance(exc, MemoryError):  # numpy raises a subclass with its own message
            summary = "memory limit exceeded (" + summary + ")"
    except BaseException:
        text, summary = "", type(exc).__name__
        summary = "memory limit exceeded (MemoryError)" if isinstance(exc, MemoryError) else summary
    sys.stdout.flush()
    sys.stderr.write(text + "\n\x1e[sandbox-error] " + summary + "\n")
    sys.stderr.flush()


def _main(argv):
    import os
    import builtins
    import _ast
    work, code_path, flags = argv[:3]
    cpu, mem, fsize, nproc, nofile = map(int, argv[3:8])
    sys.path.extend(p for p in argv[8:] if p not in sys.path)
    sys.argv = ["<snippet>"]
    _limits(cpu, mem, fsize, nproc, nofile)
    with open(code_path, encoding="utf-8", errors="surrogatepass") as f:
        code = f.read()
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(encoding="utf-8", errors="backslashreplace", line_buffering=True)
    sys.stdout = out = _Out(sys.stdout)
    builtins.exit = builtins.quit = sys.exit  # no site module, no exit()/quit() otherwise
    module = type(sys)("__main__")
    namespace = module.__dict__
    namespace["__builtins__"] = builtins
    sys.modules["__main__"] = module
    saved_builtins = dict(builtins.__dict__)  # restored before reporting: the snippet may clobber them
    allow_sub = "s" in flags
    _stub(allow_sub)
    sys.addaudithook(_guard(os.path.realpath(work), allow_sub))
    try:
        tree = compile(code, "<snippet>", "exec", _ast.PyCF_ONLY_AST)
        last = None
        if "p" in flags and tree.body and type(tree.body[-1]) is _ast.Expr:
            last = _ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<snippet>", "exec"), namespace)
        if last is not None:
            value = eval(compile(last, "<snippet>", "eval"), namespace)
            if value is not None and not out.used:
                print(value)
    except SystemExit:
        raise
    except BaseException as exc:
        builtins.__dict__.update(saved_builtins)
        _report(exc, code, namespace)
        sys.exit(1)


_main(sys.argv[1:])
'''
