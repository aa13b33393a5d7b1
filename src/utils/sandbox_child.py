"""The child side of `utils.sandbox`: `python -I -S -B -c <import this file> serve <fd>` (the fork server,
see `serve`), or `... key=value...` (one supervisor, exec'd: the fallback), as root or not.

Imported from its directory (then removed from sys.path) rather than run as a script, so that its
cached bytecode is used: compiling 800 lines on every exec would cost milliseconds.

Two processes per run (the first forked by the server, or exec'd); the second runs the snippet once it
has confined itself:

* the supervisor (the process `run_python` started) unshares new mount, network and IPC namespaces
  where the kernel allows it, makes /tmp, /var/tmp and /run/lock read-only, mounts one size- and
  inode-limited tmpfs for everything the snippet may write (its working directory and a private
  /dev/shm), becomes a child subreaper, forks, waits, kills every descendant left, and reports the
  exit status on a pipe that only it holds;
* the snippet's process starts a session of its own, sets the rlimits, drops to the run's own uid,
  dies with the supervisor (PR_SET_PDEATHSIG), sets no_new_privs, restricts itself with Landlock and
  seccomp, installs the audit hook (friendly errors only: it is not a boundary) and runs the snippet.
  Its exception summary goes to a report pipe, not to stderr.

Standard library only, and cheap to start: `signal` (enum) and `ctypes` cost milliseconds of import per
run, so this uses `_signal` and a minimal binding over `_ctypes` for the few libc calls it needs.
"""

from __future__ import annotations

import _signal as signal
import os
import sys

# ----------------------------------------------------------------------------------------------
# Constants of the Linux ABI (x86-64 and arm64 share these numbers)

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWNET = 0x20000, 0x08000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 1, 38, 22, 2
PR_SET_CHILD_SUBREAPER, PR_SET_DUMPABLE = 36, 4
PR_SET_KEEPCAPS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_DAC_READ_SEARCH = 8, 47, 2, 2
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
# No PID namespace: the pids a snippet prints stay the caller's (tests check them); the subreaper
# and the uid do what it would (nothing survives, nothing of the caller's can be signalled).
NAMESPACES = (("mount", CLONE_NEWNS), ("network", CLONE_NEWNET), ("ipc", CLONE_NEWIPC))
SHARED_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")  # world-writable: made private or cleaned


class _Libc:
    """libc functions by name (`libc.mount(...)`), called with ints, bytes (as pointers) or None; each
    returns a C long and keeps errno. Structures are passed as bytes in native layout."""

    def __init__(self):
        import _ctypes

        class CLong(_ctypes._SimpleCData):
            _type_ = "l"

        class Function(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = CLong

        class Char(_ctypes._SimpleCData):
            _type_ = "c"

        self._ctypes, self._function, self._char = _ctypes, Function, Char
        self._handle = _ctypes.dlopen(None, 0)
        self._arrays = {}

    def __getattr__(self, name: str):
        function = self._function((name, self))
        setattr(self, name, function)
        return function

    def errno(self) -> int:
        return self._ctypes.get_errno()

    def buffer(self, data: bytes):
        """A mutable C copy of `data`, and its address (for pointers inside structures)."""
        size = max(1, len(data))
        if size not in self._arrays:
            self._arrays[size] = type(
                "Buffer", (self._ctypes.Array,), {"_type_": self._char, "_length_": size}
            )
        array = self._arrays[size].from_buffer_copy(data.ljust(size, b"\0"))
        return array, self._ctypes.addressof(array)


_LIBC: list = []


def _libc() -> _Libc:
    if not _LIBC:
        _LIBC.append(_Libc())
    return _LIBC[0]


def _u(value: int, size: int) -> bytes:
    return value.to_bytes(size, sys.byteorder, signed=value < 0)


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = _libc().errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


# ----------------------------------------------------------------------------------------------
# Arguments: key=value strings (json would cost an import per run)


def _parse(argv: list[str]) -> dict:
    args = dict(item.split("=", 1) for item in argv)
    for key in (
        "cpu",
        "mem",
        "fsize",
        "nproc",
        "nofile",
        "uid",
        "report_fd",
        "status_fd",
        "files",
        "tmpfs_mb",
    ):
        args[key] = int(args[key])
    args["paths"] = [p for p in args["paths"].split(os.pathsep) if p]
    return args


# ----------------------------------------------------------------------------------------------
# Supervisor


def supervise(args: dict) -> None:
    """Set up the namespaces, run the snippet's process as a child, kill every descendant it left,
    and write `rc=<status> layers=<names>` on the status pipe (which only this process holds)."""
    status_fd = args["status_fd"]
    with open(args["code_path"], encoding="utf-8", errors="surrogatepass") as f:
        code = f.read()
    layers = []
    try:
        namespaces = _unshare() if args["namespaces"] == "1" else []
        if "mount" in namespaces and not _private_mounts(args):
            namespaces.remove("mount")  # e.g. an AppArmor profile that refuses mount: the host's view
        layers = [f"{name}-namespace" for name in namespaces]
        _check(_libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "subreaper")  # orphans come here
        layers.append("subreaper")
    except Exception as exc:  # a broken setup is the sandbox's failure, reported as such
        _send(status_fd, f"failure={type(exc).__name__}: {exc}")
        os._exit(0)
    child = os.fork()
    if child == 0:
        os.close(status_fd)
        _snippet_process(args, code, layers)
    state = {"done": False}

    def stop(_signum, _frame):  # the parent's timeout
        if not state["done"]:
            os.kill(child, signal.SIGKILL)

    signal.signal(signal.SIGUSR1, stop)
    signal.signal(signal.SIGTERM, stop)
    os.waitid(os.P_PID, child, os.WEXITED | os.WNOWAIT)  # a zombie: its pid cannot be reused yet
    state["done"] = True
    status = os.waitpid(child, 0)[1]
    _kill_descendants()
    if "mount-namespace" not in layers and os.geteuid() == 0:
        _remove_owned(SHARED_WRITABLE, args["uid"])
    _send(status_fd, f"rc={os.waitstatus_to_exitcode(status)} layers={','.join(layers)}")
    os._exit(0)


def _kill_descendants() -> None:
    """SIGKILL what the snippet left running. As a child subreaper this process inherits every orphan
    of its subtree (double forks and setsid included: no process can leave it), so killing its
    children until none is left ends them all; a process with a pending SIGKILL cannot fork."""
    while True:
        children = _children()
        if not children:
            break
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in children:  # their own children are ours once they are gone
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:  # zombies left over
            pass
    except ChildProcessError:
        pass


def _children() -> list[int]:
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children", "rb") as f:  # CONFIG_PROC_CHILDREN
            return [int(pid) for pid in f.read().split()]
    except FileNotFoundError:
        pass
    found = []
    for name in os.listdir("/proc"):  # without that file: every process's parent
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                if name.isdigit() and int(f.read().rsplit(b")", 1)[1].split()[1]) == me:
                    found.append(int(name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _send(fd: int, line: str) -> None:
    os.write(fd, (line + "\n").encode("utf-8", "backslashreplace"))


def _unshare() -> list[str]:
    """All three namespaces at once, else each that the kernel grants (a container may refuse all)."""
    if os.geteuid() != 0:
        return []
    libc = _libc()
    if libc.unshare(sum(flag for _, flag in NAMESPACES)) == 0:
        return [name for name, _ in NAMESPACES]
    return [name for name, flag in NAMESPACES if libc.unshare(flag) == 0]


def _mount(source, target, fstype, flags: int, data=None) -> None:
    libc = _libc()
    enc = [None if v is None else v.encode() for v in (source, target, fstype, data)]
    _check(libc.mount(enc[0], enc[1], enc[2], flags, enc[3]), f"mount {target}")


def _private_mounts(args: dict) -> bool:
    """The shared writable directories become read-only (/tmp, /var/tmp, /run/lock: still readable, as
    before) and one tmpfs, bounded in bytes and inodes, holds the working directory and a private
    /dev/shm; it disappears with the namespace, however deep or large the snippet's tree. False when
    the first mount is refused (nothing changed); a failure after it raises."""
    root, uid = args["root"], args["uid"]
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
    except OSError:
        return False
    for path in SHARED_WRITABLE:
        if path != "/dev/shm" and os.path.isdir(path):
            _mount(path, path, None, MS_BIND | MS_REC)
            _mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    opts = f"size={args['tmpfs_mb']}m,nr_inodes={args['files'] + 3},mode=0711"  # 3: its root, work, shm
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, opts)  # on the read-only /tmp: a mount point
    for name in ("work", "shm"):
        os.mkdir(f"{root}/{name}", 0o700)
        os.chown(f"{root}/{name}", uid, uid)
    if os.path.isdir("/dev/shm"):
        _mount(f"{root}/shm", "/dev/shm", None, MS_BIND)
    return True


def _remove_owned(dirs, uid: int) -> None:
    """Without a mount namespace: delete what the run's uid left in the shared writable directories."""
    for top in dirs:
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    import shutil  # here only: its import costs milliseconds

                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except (OSError, RecursionError):
                continue


# ----------------------------------------------------------------------------------------------
# The snippet's process: limits, privileges, kernel confinement, then the snippet


def _snippet_process(args: dict, code: str, layers: list[str]) -> None:
    try:
        os.setsid()  # a group of its own: the supervisor's group is "another process's" to the hook
        os.chdir(args["work"])
        _limits(args)
        supervisor = os.getppid()
        if os.geteuid() == 0:
            _drop_privileges(args["uid"], keep_reading=args["read_cap"] == "1")
            layers.append("uid")
        libc = _libc()
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after setuid, which clears it
        if os.getppid() != supervisor:  # it died before that
            os._exit(125)
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")  # setuid binaries stay powerless
        layers += _optional_layers(args, private_tmp="mount-namespace" in layers)
        os.write(args["report_fd"], f"layers\t{','.join(layers)}\t\n".encode())
    except BaseException as exc:
        os.write(args["report_fd"], f"failure\t{type(exc).__name__}\t{_one_line(str(exc), 500)}\n".encode())
        os._exit(125)
    _run_snippet(args, code)


def _optional_layers(args: dict, private_tmp: bool) -> list[str]:
    """Landlock and seccomp where the kernel (or a container's own seccomp profile) allows them: a
    platform that refuses one still runs snippets, and `SandboxResult.isolation` says what held."""
    held = []
    try:
        if _landlock(args["work"], private_tmp):
            held.append("landlock")
    except OSError:
        pass
    try:
        if args["seccomp"]:
            _seccomp(bytes.fromhex(args["seccomp"]))
            held.append("seccomp")
    except OSError:
        pass
    return held


def _drop_privileges(uid: int, keep_reading: bool) -> None:
    """Become the run's own uid with no groups. `keep_reading` keeps CAP_DAC_READ_SEARCH (ambient, so
    that it survives exec): for a Python installed where other users cannot read (e.g. under /root).
    It bypasses read permissions of files only: not ptrace checks (/proc/<pid>/environ), not writes."""
    libc = _libc()
    if keep_reading:
        _check(libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "keepcaps")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if not keep_reading:
        return
    bit = 1 << CAP_DAC_READ_SEARCH
    header = _u(0x20080522, 4) + _u(0, 4)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = b"".join(_u(v, 4) for v in (bit, bit, bit, 0, 0, 0))  # effective, permitted, inheritable (x2)
    _check(libc.capset(header, data), "capset")
    _check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_DAC_READ_SEARCH, 0, 0), "ambient")


def _limits(args: dict) -> None:
    """setrlimit through libc (the `resource` module costs an import per run); never above a hard
    limit that is already lower."""
    libc, infinity = _libc(), (1 << 64) - 1
    wanted = (  # Linux resource numbers (the same on x86-64 and arm64)
        (0, args["cpu"], args["cpu"] + 1),  # RLIMIT_CPU
        (9, args["mem"], args["mem"]),  # RLIMIT_AS
        (1, args["fsize"], args["fsize"]),  # RLIMIT_FSIZE
        (6, args["nproc"], args["nproc"]),  # RLIMIT_NPROC: per uid, so per run with a fresh uid
        (7, args["nofile"], args["nofile"]),  # RLIMIT_NOFILE
        (4, 0, 0),  # RLIMIT_CORE
    )
    for res, soft, hard in wanted:
        current, _ = libc.buffer(bytes(16))
        _check(libc.getrlimit(res, current), "getrlimit")
        cap = int.from_bytes(current.raw[8:16], sys.byteorder)
        if cap != infinity:
            hard = min(hard, cap)
            soft = min(soft, hard)
        _check(libc.setrlimit(res, _u(soft, 8) + _u(hard, 8)), f"setrlimit {res}")


def _landlock(work: str, private_tmp: bool) -> bool:
    """Writes (create, delete, rename, link, fifo, device, truncate) only beneath the working directory
    (and the private tmpfs mounts); TCP bind/connect refused; signals and abstract sockets scoped to
    the sandbox (ABI 6). False where the kernel has no Landlock."""
    libc = _libc()
    abi = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        return False
    fs = (1 << 1) | sum(1 << b for b in range(4, 13))  # WRITE_FILE, REMOVE_*, MAKE_* (ABI 1)
    fs |= (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0)  # REFER, TRUNCATE
    ruleset = _u(fs, 8) + _u(3 if abi >= 4 else 0, 8) + _u(3 if abi >= 6 else 0, 8)  # fs, net, scoped
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    fd = _check(libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ruleset, size, 0), "landlock")
    writable = [(work, fs)] + [("/dev/shm", fs)] * (private_tmp and os.path.isdir("/dev/shm"))
    writable.append(("/dev/null", (1 << 1) | (1 << 14 if abi >= 3 else 0)))
    for path, allowed in writable:
        target = os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = _u(allowed, 8) + _u(target, 4)  # struct landlock_path_beneath_attr (packed)
        _check(libc.syscall(SYS_LANDLOCK_ADD_RULE, fd, 1, rule, 0), f"landlock rule {path}")
        os.close(target)
    _check(libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, fd, 0), "landlock_restrict_self")
    os.close(fd)
    return True


def _seccomp(program: bytes) -> None:
    """Load the BPF program that the parent compiled with libseccomp (see sandbox._seccomp_program)."""
    libc = _libc()
    keep, address = libc.buffer(program)
    prog = _u(len(program) // 8, 2) + bytes(6) + _u(address, 8)  # struct sock_fprog
    _check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog, 0, 0), "seccomp")
    del keep


# ----------------------------------------------------------------------------------------------
# The audit hook: friendly, early refusals with a clear message ("PermissionError: sandbox: ...").
# It shares the snippet's process, so it is no boundary: the kernel layers above are. Everything it
# uses is bound as a default argument, so monkeypatching modules or globals cannot change its answers.


def _denied(*args, **kwargs):
    raise PermissionError("sandbox: not allowed")


def _stub(allow_sub):
    # Calls that raise no audit event of their own.
    import _posixsubprocess
    import _signal
    import posix

    _signal.pidfd_send_signal = _denied
    posix.mkfifo = posix.mknod = _denied
    if not allow_sub:
        _posixsubprocess.fork_exec = _denied


def _guard(work, allow_sub):
    """Build the audit hook (see the comment above). Its functions use only their parameters."""
    import _stat
    import posix

    o_write = posix.O_WRONLY | posix.O_RDWR | posix.O_CREAT | posix.O_TRUNC | posix.O_APPEND
    ours = []

    def text(p, _fspath=posix.fspath, _str=str, _bytes=bytes, _type=type, _isinst=isinstance,
             _dec=bytes.decode, _cat=str.__add__):  # fmt: skip
        if _type(p) is not _str and _type(p) is not _bytes:
            p = _fspath(p)
        if _isinst(p, _bytes):
            return _dec(p, "utf-8", "surrogateescape")
        return _cat("", p)

    def real(p, base=None, _lstat=posix.lstat, _readlink=posix.readlink, _islnk=_stat.S_ISLNK,
             _cwd=posix.getcwd, _split=str.split, _rpart=str.rpartition, _sw=str.startswith,
             _errors=(OSError, ValueError)):  # fmt: skip
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
                   _sw=str.startswith, _type=type, _int=int):  # fmt: skip
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
                 _isdir=_stat.S_ISDIR, _errors=(OSError, ValueError)):  # fmt: skip
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
                   _ow=o_write, _type=type, _int=int, _str=str):  # fmt: skip
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
    }  # fmt: skip

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
    ))  # fmt: skip
    process = frozenset(("os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.spawn", "os.system",
                         "subprocess.Popen", "os.startfile"))  # fmt: skip
    no_reimport = frozenset(("posix", "_signal", "_posixsubprocess", "_testcapi", "_testinternalcapi",
                             "_xxsubinterpreters", "_xxinterpchannels"))  # fmt: skip
    introspect = frozenset(("object.__getattr__", "object.__setattr__", "object.__delattr__"))
    watched = deny | process | introspect | frozenset(path_args) | frozenset((
        "open", "import", "os.kill", "os.killpg", "resource.setrlimit", "ctypes.dlopen", "sqlite3.connect"))  # fmt: skip

    def decide(event, args, _deny=deny, _process=process, _allow=allow_sub, _noimp=no_reimport,
               _intro=introspect, _ours=ours, _table=path_args, _open=check_open, _paths=check_paths,
               _signal=check_signal, _may_change=may_change, _type=type, _str=str):  # fmt: skip
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
                 check_signal, _denied))  # fmt: skip
    return hook


# ----------------------------------------------------------------------------------------------
# Running the snippet, REPL style, and reporting its exception on the report pipe


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


def _one_line(text: str, limit: int) -> str:
    return " ".join(text.split())[:limit]


def _exception_line(exc) -> tuple[str, str]:
    """(qualified type name, message) as the last line of a traceback writes them."""
    cls = type(exc)
    name = (
        cls.__qualname__
        if cls.__module__ in ("builtins", "__main__")
        else f"{cls.__module__}.{cls.__qualname__}"
    )
    try:
        message = str(exc)
    except BaseException:
        message = "<exception str() failed>"
    return name, message


def _report(exc, code, namespace, report_fd):
    """The traceback (the snippet's and libraries' frames) to stderr for the reader; one line
    `kind<TAB>type<TAB>message` to the report pipe, which the parent turns into `SandboxResult.error`."""
    memory = isinstance(exc, MemoryError)
    if memory:  # free the snippet's memory before formatting
        namespace.clear()
        tb = exc.__traceback__
        while tb is not None:
            try:
                tb.tb_frame.clear()  # the locals of the snippet's functions
            except RuntimeError:
                pass  # a frame still running: ours
            tb = tb.tb_next
    name, message = _exception_line(exc)
    try:
        import linecache
        import traceback

        linecache.cache["<snippet>"] = (len(code), None, code.splitlines(True), "<snippet>")
        chain, tb = [], exc.__traceback__
        while tb is not None:  # tb_next is cheap; extract_tb would read (and audit) every frame
            chain.append(tb)
            tb = tb.tb_next
        frames = traceback.extract_tb(chain[-40:][0]) if chain else []
        frames = [f for f in frames if f.filename != __file__]  # not ours
        text = "".join(traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc))
        text = ("Traceback (most recent call last):\n" if frames else "") + text[-4000:]
    except BaseException:
        text = ""
    sys.stdout.flush()
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
    kind = "memory" if memory else "exception"
    line = f"{kind}\t{_one_line(name, 200)}\t{_one_line(message, 2000)}\n"
    os.write(report_fd, line.encode("utf-8", "replace"))


def _run_snippet(args: dict, code: str) -> None:
    import _ast
    import builtins

    flags, report_fd = args["flags"], args["report_fd"]
    sys.path.extend(p for p in args["paths"] if p not in sys.path)
    sys.argv = ["<snippet>"]
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
    if args["hook"] == "1":
        _stub(allow_sub)
        sys.addaudithook(_guard(os.path.realpath(args["work"]), allow_sub))
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
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            _exit_now(exc.code or 0)
        builtins.__dict__.update(saved_builtins)
        _report(exc, code, namespace, report_fd)
        _exit_now(1)
    except BaseException as exc:
        builtins.__dict__.update(saved_builtins)
        _report(exc, code, namespace, report_fd)
        _exit_now(1)
    _exit_now(0)


def _exit_now(code: int) -> None:
    """What the interpreter's exit does that the snippet may rely on (its non-daemon threads, atexit
    handlers, buffered output), without tearing the interpreter down: that costs milliseconds."""
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
        import atexit

        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except BaseException:
        pass
    os._exit(code & 0xFF if code >= 0 else 255)


# ----------------------------------------------------------------------------------------------
# The fork server: one clean interpreter, started once, forks a fresh supervisor per call


def serve(control: int) -> None:
    """Serve run requests on the `control` socket (SOCK_SEQPACKET) until the caller closes it.

    A request is the supervisor's key=value arguments, NUL-separated, with four descriptors attached
    (the snippet's stdout, stderr, report pipe and the status pipe). Each request forks a supervisor
    that does exactly what an exec'd one does (`supervise`); the reply is its pid and a pidfd for it.
    This process holds no secrets: it was exec'd with the sandbox's minimal environment, never reads a
    snippet (the supervisor reads it from its file after the fork) nor any output. It reaps each
    supervisor, kills what is left of its process group, appends `exit=<code>` to the status pipe and
    closes it: EOF there tells the caller that the run is over. As a child subreaper it also kills any
    orphan of a supervisor that was killed before its own clean-up."""
    import _socket
    import select

    _warm()
    _check(_libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "subreaper")
    # Not dumpable: a process of the same uid (a snippet, when the caller is not root) can neither
    # ptrace it nor open its /proc/<pid>/mem, so no snippet can plant anything in the next call's fork.
    _check(_libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "dumpable")
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0, control)
    poller = select.poll()
    poller.register(control, select.POLLIN)
    active: dict[int, tuple[int, int]] = {}  # pidfd: (supervisor pid, status pipe)
    while True:
        for fd, _ in poller.poll():
            if fd != control:
                _reap(fd, active.pop(fd))
                poller.unregister(fd)
                continue
            try:
                msg, fds = _receive(sock)
            except OSError:
                msg, fds = b"", []
            if not msg:  # the caller is gone: so is everything it started
                _kill_descendants()
                os._exit(0)
            try:
                pid, pidfd = _fork_supervisor(msg, fds, sock)
            except Exception as exc:  # a bad request or no fork possible: the caller reports it
                _close(fds)
                _reply(sock, f"error={type(exc).__name__}: {exc}", None)
                continue
            active[pidfd] = (pid, fds[3])
            _close(fds[:3])
            poller.register(pidfd, select.POLLIN)
            _reply(sock, f"pid={pid}", pidfd)
        _kill_strays({pid for pid, _ in active.values()})


def _warm() -> None:
    """Import, once, what every snippet process would import: the fork inherits it."""
    import _ast  # noqa: F401
    import _posixsubprocess  # noqa: F401
    import _stat  # noqa: F401
    import atexit  # noqa: F401
    import builtins  # noqa: F401
    import linecache  # noqa: F401
    import traceback  # noqa: F401

    _libc()
    import gc

    gc.freeze()  # the collector leaves the server's objects alone in every fork: fewer copied pages


def _receive(sock) -> tuple[bytes, list[int]]:
    import _socket

    space = _socket.CMSG_SPACE(4 * 4)
    msg, ancillary, flags, _ = sock.recvmsg(1 << 17, space, _socket.MSG_CMSG_CLOEXEC)
    fds = []
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds += [int.from_bytes(data[i : i + 4], sys.byteorder) for i in range(0, len(data) - 3, 4)]
    if msg and (len(fds) != 4 or flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC)):
        _close(fds)
        raise OSError("malformed request")
    return msg, fds


def _reply(sock, text: str, pidfd: int | None) -> None:
    import _socket

    rights = [] if pidfd is None else [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _u(pidfd, 4))]
    try:
        sock.sendmsg([text.encode()], rights)
    except OSError:
        pass  # the caller is gone: the next poll reads EOF


def _close(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _fork_supervisor(msg: bytes, fds: list[int], sock) -> tuple[int, int]:
    args = _parse(msg.decode("utf-8", "surrogateescape").split("\0"))
    server = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            sock.close()  # first: the snippet must never reach the server's control socket
            _enter_call(args, fds, server)
            supervise(args)
        except BaseException:  # what an exec'd supervisor would print before dying
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(1)  # never back into the server's loop
    try:
        return pid, os.pidfd_open(pid)
    except OSError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise


def _enter_call(args: dict, fds: list[int], server: int) -> None:
    """Make this forked process what an exec'd supervisor starts as: its own session, /dev/null,
    the call's pipes as stdout and stderr, no other descriptor but the report and status pipes, the
    run's directory and environment; and it dies with the server."""
    _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != server:
        os._exit(1)
    _libc().prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # as an exec'd supervisor is (the server is not)
    os.setsid()
    out, err, report, status = fds
    os.dup2(out, 1)
    os.dup2(err, 2)
    low, high = sorted((report, status))
    os.closerange(3, low)
    os.closerange(low + 1, high)
    os.closerange(high + 1, max(high + 2, os.sysconf("SC_OPEN_MAX")))
    args["report_fd"], args["status_fd"] = report, status
    _fresh_stdio()
    os.chdir(args["root"])
    os.environ["HOME"] = os.environ["TMPDIR"] = args["work"]


_SERVER_STDIO: list = []  # the server's own stdio objects: kept, so that no collection closes fds 0-2


def _fresh_stdio() -> None:
    """sys.stdin/stdout/stderr as an exec'd interpreter would build them over the new fds 0-2 (the
    server's were built over /dev/null: seekable, which a pipe is not)."""
    import io

    _SERVER_STDIO.append((sys.stdin, sys.stdout, sys.stderr))
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        old = getattr(sys, name)
        raw = open(fd, "rb" if fd == 0 else "wb", closefd=False)
        new = io.TextIOWrapper(raw, encoding=old.encoding, errors=old.errors, write_through=fd == 2)
        setattr(sys, name, new)
        setattr(sys, f"__{name}__", new)


def _reap(pidfd: int, call: tuple[int, int]) -> None:
    """A supervisor ended: kill its group while its zombie still holds the id, reap it, report."""
    pid, status = call
    os.close(pidfd)
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    try:
        _send(status, f"exit={code}")
    except OSError:
        pass
    os.close(status)


def _kill_strays(supervisors: set[int]) -> None:
    """Orphans that came here (their supervisor was killed before it killed them): kill and reap,
    until none is left (each one's own children come here as it dies)."""
    for _ in range(1000):  # bounded: a server that hangs here would stall every call
        strays = [pid for pid in _children() if pid not in supervisors]
        if not strays:
            return
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass


def main(argv: list[str]) -> None:
    if argv[:1] == ["serve"]:
        serve(int(argv[1]))
    supervise(_parse(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
