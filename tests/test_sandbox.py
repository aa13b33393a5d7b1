"""utils.sandbox: model-written code runs confined, bounded in time, memory and output, and leaves nothing."""

from __future__ import annotations

import dis
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from utils import sandbox
from utils.sandbox import SandboxConfig, SandboxResult, run_python

REPO = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for a reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _gone(pid: int, within: float = 2.0) -> bool:
    end = time.monotonic() + within  # SIGKILL is delivered asynchronously
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


def _refused(result: SandboxResult) -> bool:
    return result.error is not None and result.error.startswith("PermissionError: sandbox:")


# --- normal runs -------------------------------------------------------------------------------


def test_prints_and_reports_success():
    r = run_python("print(1 + 1)")
    assert (r.stdout, r.error, r.timed_out, r.returncode, r.truncated) == ("2\n", None, False, 0, False)
    assert r.ok and 0 < r.duration < 5


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("x = 3\nx * 2", "6\n"),  # REPL style: the last bare expression is printed
        ("x = 3\n(x +\n 4)", "7\n"),  # an expression over several lines
        ("print('a')\n5", "a\n"),  # something was printed: the value is not
        ("None", ""),
        ("x = 5", ""),
        ("def f():\n    return 9\nf()", "9\n"),
        ("'text'", "text\n"),  # printed with print(), like the AIMO 1 winner's loop
    ],
)
def test_last_expression_printed_like_a_repl(code, expected):
    assert run_python(code).stdout == expected


def test_last_expression_can_be_turned_off():
    assert run_python("1 + 2", print_last_expression=False).stdout == ""
    assert run_python("1 + 2", SandboxConfig(print_last_expression=False)).stdout == ""


def test_sympy_and_numpy_import_under_the_limits():
    r = run_python("import sympy, numpy\nprint(sympy.factorint(360), int(numpy.arange(5).sum()))", timeout=20)
    assert (r.stdout, r.error) == ("{2: 3, 3: 2, 5: 1} 10\n", None)


def test_the_snippet_is_main_and_exit_works():
    assert run_python("if __name__ == '__main__':\n    print('main')").stdout == "main\n"
    r = run_python("print('before')\nexit()\nprint('after')")
    assert (r.stdout, r.error, r.returncode) == ("before\n", None, 0)
    r = run_python("import sys\nsys.exit(3)")
    assert r.returncode == 3 and "3" in r.error


# --- errors ------------------------------------------------------------------------------------


def test_syntax_error_names_the_line():
    r = run_python("x = 1\ny = (")
    assert r.error.startswith("SyntaxError:") and "line 2" in r.error
    assert r.returncode == 1 and not r.timed_out


def test_exception_message_is_the_error_and_the_traceback_is_the_snippets():
    r = run_python("print('partial')\ndef f(x):\n    return 1 / x\nf(0)")
    assert r.stdout == "partial\n"
    assert r.error == "ZeroDivisionError: division by zero"
    assert 'File "<snippet>", line 3, in f' in r.stderr and "return 1 / x" in r.stderr
    assert "<string>" not in r.stderr and "[sandbox-error]" not in r.stderr  # prelude frames, marker hidden


def test_deep_recursion_is_an_error_not_a_hang():
    r = run_python("def f(n):\n    return f(n + 1)\nf(0)")
    assert r.error.startswith("RecursionError") and r.duration < 4


@pytest.mark.parametrize("code", ["\x00", "x = '\ud800'\nprint(x)", "", "print('é∑😀')", "#" * 1_000_000])
def test_never_raises_on_odd_code(code):
    r = run_python(code)
    assert isinstance(r, SandboxResult) and not r.timed_out
    if code.startswith("print"):
        assert r.stdout == "é∑😀\n"


def test_non_str_code_is_an_error_result():
    assert run_python(b"print(1)").error == "code must be a str, got bytes"  # type: ignore[arg-type]


# --- time, memory, processes, output ------------------------------------------------------------


def test_infinite_loop_times_out_and_keeps_partial_output():
    start = time.monotonic()
    r = run_python("print('started')\nwhile True:\n    pass", timeout=1)
    assert time.monotonic() - start < 3
    assert r.timed_out and r.error == "timed out after 1 s" and r.returncode == -9
    assert r.stdout == "started\n"


@pytest.mark.parametrize(
    "code",
    [
        "x = ' ' * 10**10",
        "x = []\nwhile True:\n    x.append(bytearray(10**6))",
        "import numpy\nx = numpy.ones((10**5, 10**5))",
    ],
)
def test_memory_bombs_hit_the_limit(code):
    r = run_python(code, memory_mb=256, timeout=10)
    assert r.error.startswith("memory limit exceeded (") and "MemoryError" in r.error and not r.timed_out
    assert r.duration < 8


def test_fork_bomb_is_refused_and_bounded():
    r = run_python("import os\nwhile True:\n    os.fork()")
    assert _refused(r) and "os.fork" in r.error
    start = time.monotonic()  # a bomb that ignores the refusal only spins until the timeout
    r = run_python(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", timeout=1
    )
    assert r.timed_out and time.monotonic() - start < 3


@pytest.mark.parametrize(
    "code",
    [
        "import subprocess\nsubprocess.run(['true'])",
        "import os\nos.system('true')",
        "import os\nos.posix_spawn('/bin/true', ['true'], {})",
        "import os\nos.execv('/bin/true', ['true'])",
        "import ctypes\nctypes.CDLL(None).fork()",
        "import _posixsubprocess\n_posixsubprocess.fork_exec()",
        "import sys\ndel sys.modules['_posixsubprocess']\nimport _posixsubprocess",
        "import multiprocessing\nmultiprocessing.Process(target=print).start()",
    ],
)
def test_other_ways_to_start_processes_are_refused(code):
    r = run_python(code)
    assert r.error is not None and "PermissionError" in r.error, r


def test_output_flood_is_cut_and_killed_quickly():
    start = time.monotonic()
    r = run_python("while True:\n    print('x' * 10000)", max_output_chars=200)
    assert time.monotonic() - start < 3 and not r.timed_out
    assert r.truncated and r.error.startswith("output truncated") and r.returncode == -9
    assert r.stdout.startswith("x" * 200) and len(r.stdout) < 260 and r.stdout.endswith("characters]")
    r = run_python("import sys\nwhile True:\n    sys.stderr.write('y' * 10000)")
    assert r.error.startswith("output truncated") and len(r.stderr) <= 8 * 1024


def test_long_output_of_a_finished_run_is_cut_without_error():
    r = run_python("print('z' * 5000)\nprint('done')", max_output_chars=100)
    assert r.error is None and r.truncated and r.stdout.startswith("z" * 100) and "done" not in r.stdout


def test_file_size_limit():
    r = run_python("open('big', 'wb').write(b'x' * (3 << 20))", max_file_mb=1)
    assert r.error == "OSError: [Errno 27] File too large"


def test_rlimits_are_set_and_cannot_be_raised():
    r = run_python(
        "import resource as r\nprint(r.getrlimit(r.RLIMIT_AS)[0] >> 20, r.getrlimit(r.RLIMIT_CORE))\n"
        "r.setrlimit(r.RLIMIT_AS, (r.RLIM_INFINITY, r.RLIM_INFINITY))",
        memory_mb=300,
    )
    assert r.stdout == "300 (0, 0)\n" and _refused(r)


# --- what is left behind -----------------------------------------------------------------------


# RLIMIT_NPROC counts all the user's tasks: a high cap keeps these tests valid for non-root users
SUBPROCESSES = SandboxConfig(allow_subprocess=True, max_processes=100_000)


def _processes_with(marker: str) -> list[int]:
    """Pids whose command line holds `marker`: finds what a snippet left, whatever it printed."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                if marker.encode() in Path(f"/proc/{name}/cmdline").read_bytes() and _alive(int(name)):
                    found.append(int(name))
            except OSError:
                continue
    return found


def _none_left(marker: str, within: float = 2.0) -> bool:
    end = time.monotonic() + within  # SIGKILL is delivered asynchronously
    while _processes_with(marker):
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def _sleep_marker() -> str:
    return f"{900 + uuid.uuid4().int % 10**6 / 10**6:.6f}"  # `sleep 900.123456`: unique, findable


def test_children_left_behind_are_killed():
    code = "import subprocess\nprint(subprocess.Popen(['sleep', '100'], env={}).pid)"  # env={}: only the group kill
    r = run_python(code, SUBPROCESSES)
    assert r.error is None and _gone(int(r.stdout))
    daemon = (  # double fork + setsid: leaves the process group, not the supervisor's subtree
        "import os, time\nr, w = os.pipe()\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        os.write(w, str(os.getpid()).encode())\n        time.sleep(100)\n    os._exit(0)\n"
        "print(os.read(r, 20).decode())"
    )
    r = run_python(daemon, SUBPROCESSES)
    assert r.error is None and _gone(int(r.stdout))


def test_children_left_behind_are_killed_found_by_command_line():
    marker = _sleep_marker()
    code = f"import subprocess\nsubprocess.Popen(['sleep', '{marker}'], env={{}})\nprint('started')"
    r = run_python(code, SUBPROCESSES)
    assert r.stdout == "started\n" and r.error is None and _none_left(marker)
    daemon = (  # double fork + setsid + exec: another program, in its own session
        "import os, time\nr, w = os.pipe()\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        f"        os.write(w, b'x')\n        os.execv('/bin/sleep', ['sleep', '{marker}'])\n    os._exit(0)\n"
        "print(os.read(r, 20).decode())\ntime.sleep(0.2)"
    )
    r = run_python(daemon, SUBPROCESSES)
    assert r.stdout == "x\n" and r.error is None and _none_left(marker)


def test_works_without_pidfd(monkeypatch):
    monkeypatch.setattr(sandbox, "_pidfd_open", lambda pid: None)  # old kernels: poll with waitid(WNOWAIT)
    assert run_python("print(6 * 7)").stdout == "42\n"
    assert run_python("while True:\n    pass", timeout=0.5).timed_out
    r = run_python("import subprocess\nprint(subprocess.Popen(['sleep', '100']).pid)", SUBPROCESSES)
    assert r.duration < 2 and _gone(int(r.stdout))


def test_sleep_child_refused_by_default():
    r = run_python("import subprocess\nsubprocess.Popen(['sleep', '100'])")
    assert _refused(r)


def test_working_directory_is_fresh_usable_and_deleted():
    code = (
        "import os, tempfile\nopen('a.txt', 'w').write('hi')\nos.mkdir('d')\nos.rename('a.txt', 'd/a.txt')\n"
        "tempfile.NamedTemporaryFile().write(b'x')\nprint(os.getcwd(), os.listdir('.'), open('d/a.txt').read())"
    )
    first, second = run_python(code), run_python(code)
    assert first.error is None and first.stdout.split()[1:] == ["['d']", "hi"]
    assert first.stdout.split()[0] != second.stdout.split()[0]
    assert not Path(first.stdout.split()[0]).exists()


# --- confinement -------------------------------------------------------------------------------


@pytest.fixture(params=["tmp", "repo"])
def victim(request, tmp_path):
    """A file and a folder outside the sandbox that the snippet must not touch: under /tmp (read-only
    in the sandbox) and in the repository (owned by root)."""
    if request.param == "tmp":
        base = tmp_path
    else:
        base = Path(tempfile.mkdtemp(prefix=".sandbox-victim-", dir=REPO))
        request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    (base / "keep").mkdir()
    (base / "keep" / "file.txt").write_text("original")
    return base


@pytest.mark.parametrize(
    "template",
    [
        "open('{new}', 'w').write('x')",
        "from pathlib import Path\nPath('{new}').write_text('x')",
        "import os\nos.close(os.open('{new}', os.O_CREAT | os.O_WRONLY))",
        "open('{file}', 'a').write('x')",
        "import os\nos.remove('{file}')",
        "import os\nos.rename('{file}', 'stolen.txt')",
        "import shutil\nshutil.rmtree('{dir}')",
        "import shutil\nshutil.copyfile('/etc/hostname', '{new}')",
        "import os\nos.chmod('{file}', 0o777)",
        "import os\nos.chdir('{dir}')\nopen('new.txt', 'w')",
        "import os\nos.symlink('{dir}', 'link')\nopen('link/new.txt', 'w')",
        "import os\nfd = os.open('{dir}', os.O_RDONLY)\nos.open('new.txt', os.O_CREAT | os.O_WRONLY, dir_fd=fd)",
        "import sqlite3\nsqlite3.connect('{new}')",
        "open('../{{}}'.format('x'), 'w')",
    ],
)
def test_writes_outside_are_refused(victim, template):
    new = victim / "keep" / "new.txt"
    code = template.format(new=new, file=victim / "keep" / "file.txt", dir=victim / "keep")
    r = run_python(code)
    assert r.error is not None and "PermissionError" in r.error, r
    assert not new.exists() and (victim / "keep" / "file.txt").read_text() == "original"
    assert oct((victim / "keep" / "file.txt").stat().st_mode)[-3:] != "777"


def test_write_escape_to_tmp_and_repo_fails():
    for target in (
        Path(f"/tmp/x_sandbox_escape_{uuid.uuid4().hex}"),
        REPO / f"x_sandbox_escape_{uuid.uuid4().hex}",
    ):
        r = run_python(f"open({str(target)!r}, 'w').write('pwned')")
        assert _refused(r) and not target.exists()


def test_monkeypatched_builtins_do_not_disable_the_guard(tmp_path):
    target = tmp_path / "escape.txt"
    code = (
        "import builtins, os\nbuiltins.type = lambda x: int\nbuiltins.zip = lambda *a: []\n"
        "builtins.isinstance = lambda *a: True\nimport posixpath\nposixpath.realpath = lambda p, **k: os.getcwd()\n"
        f"open({str(target)!r}, 'w')"
    )
    assert "PermissionError" in run_python(code).error and not target.exists()


def test_guard_functions_use_only_their_parameters():
    # Globals, builtins and closure cells can be replaced by the snippet; defaults and code cannot.
    source = Path(sandbox.CHILD_PROGRAM).read_text()
    guard = next(
        c for c in compile(source, "<child>", "exec").co_consts if getattr(c, "co_name", "") == "_guard"
    )
    nested = [c for c in guard.co_consts if hasattr(c, "co_code")]
    assert {c.co_name for c in nested} >= {"hook", "decide", "real", "may_change", "check_open"}
    for code in nested:
        bad = [
            i.argval
            for i in dis.get_instructions(code)
            if i.opname in ("LOAD_GLOBAL", "LOAD_DEREF", "LOAD_NAME")
        ]
        assert not bad and not code.co_freevars, (code.co_name, bad)


def test_guard_internals_cannot_be_reached():
    code = "import gc\ngc.get_objects()"
    assert _refused(run_python(code))
    code = "import sys\ntry:\n    open('/x', 'w')\nexcept PermissionError as e:\n    tb = e.__traceback__\nwhile tb.tb_next:\n    tb = tb.tb_next\nf = tb.tb_frame.f_locals['_decide']\nf.__code__ = (lambda e, a: None).__code__"  # noqa: E501
    assert _refused(run_python(code))


def test_network_is_refused():
    r = run_python("import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM)")
    assert _refused(r) and "socket.__new__" in r.error
    r = run_python("import urllib.request\nurllib.request.urlopen('http://example.com', timeout=1)")
    assert "sandbox: socket.getaddrinfo is not allowed" in r.error


def test_signals_to_other_processes_are_refused():
    # signal 0 only probes: harmless even if the guard failed
    assert _refused(run_python("import os\nos.kill(os.getppid(), 0)"))
    assert _refused(run_python("import os\nos.kill(1, 0)"))
    assert _refused(run_python("import os\nos.killpg(os.getpgid(os.getppid()), 0)"))  # the supervisor's
    assert _refused(run_python(f"import os\nos.killpg({os.getpgid(0)}, 0)"))  # the caller's
    assert run_python("import os\nos.kill(os.getpid(), 0)\nprint('self ok')").stdout == "self ok\n"


def test_environment_is_not_leaked(monkeypatch):
    monkeypatch.setenv("AIMO_TEST_SECRET", "hunter2")
    r = run_python("import os\nprint(os.environ.get('AIMO_TEST_SECRET'), os.environ['HOME'] == os.getcwd())")
    assert r.stdout == "None True\n"
    r = run_python("import os\nprint(open(f'/proc/{os.getppid()}/environ', 'rb').read())")
    assert _refused(r) and "hunter2" not in r.stdout
    env = run_python("import os\nprint(sorted(os.environ))").stdout
    assert "AIMO_TEST_SECRET" not in env and "PATH" in env and "OMP_NUM_THREADS" in env


# --- concurrency, configuration, speed ----------------------------------------------------------


def test_concurrent_calls_from_threads():
    codes = [f"print({i} * {i})" for i in range(12)] + ["while True:\n    pass", "1 / 0"]
    run_python("pass")  # the fork server's socket: one descriptor for the process's lifetime, not per call
    fds = len(os.listdir("/proc/self/fd"))
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda c: run_python(c, timeout=2), codes))
    assert [r.stdout for r in results[:12]] == [f"{i * i}\n" for i in range(12)]
    assert results[12].timed_out and results[13].error == "ZeroDivisionError: division by zero"
    assert len(os.listdir("/proc/self/fd")) == fds and threading.active_count() >= 1


# --- the fork server ----------------------------------------------------------------------------

LEAKY = (  # everything a snippet could leave for the next one in a process that outlived it
    "import builtins, os, sys, linecache\nbuiltins.LEAK = 1\nsys.modules['leak'] = sys\nsys.path.append('/leak')\n"
    "linecache.cache['leak'] = (1, None, ['x'], 'leak')\nos.environ['LEAK'] = '1'\nopen('leak.txt', 'w').write('x')\n"
    "fd = os.open('leak.txt', os.O_RDONLY)\nos.set_inheritable(fd, True)\nos.dup2(fd, 40)\nprint('left')"
)
LOOK = (
    "import builtins, os, sys, linecache\nprint(hasattr(builtins, 'LEAK'), 'leak' in sys.modules, '/leak' in sys.path,"
    " 'leak' in linecache.cache, 'LEAK' in os.environ, os.listdir('.'), len(os.listdir('/proc/self/fd')))"
)


def _server_pid() -> int | None:
    server = sandbox._fork_server()
    return server.pid if server is not None else None


def test_consecutive_calls_share_nothing_through_the_fork_server():
    fresh = run_python(LOOK)
    assert fresh.stdout.startswith("False False False False False [] ") and _server_pid() is not None, fresh
    assert run_python(LEAKY).stdout == "left\n"
    assert run_python(LOOK).stdout == fresh.stdout  # as many descriptors too: 0-2 and the report pipe
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sandbox, "FORK_SERVER", False)  # an exec'd supervisor: what a fresh interpreter sees
        assert run_python(LOOK).stdout == fresh.stdout


def test_fork_server_maps_no_writable_shared_memory():
    assert run_python("print(1)").ok  # every fork would share such a mapping: a channel between calls
    maps = Path(f"/proc/{_server_pid()}/maps").read_text().splitlines()
    assert maps and not [m for m in maps if m.split()[1].startswith("rw") and m.split()[1][3] == "s"]


def test_fork_server_and_exec_give_the_same_layers_and_refusals():
    code = "import os\nprint(os.getuid() != 0, os.getppid() != os.getpgid(0))\nopen('/etc/passwd', 'a')"
    served = run_python(code)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sandbox, "FORK_SERVER", False)
        execd = run_python(code)
    assert served.isolation == execd.isolation and served.stdout == execd.stdout and _refused(served)
    assert served.error == execd.error


def test_fork_server_restarts_after_being_killed():
    assert run_python("print(1)").ok
    first = _server_pid()
    os.kill(first, 9)
    assert _gone(first)
    r = run_python("print(2)")
    assert (r.stdout, r.error) == ("2\n", None) and _server_pid() not in (None, first)


def test_fork_server_killed_mid_call_fails_that_call_only():
    assert run_python("print(1)").ok
    server = _server_pid()
    marker = _sleep_marker()
    code = f"import subprocess, time\nsubprocess.Popen(['sleep', '{marker}'])\ntime.sleep(5)"
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_python, code, timeout=10, allow_subprocess=True)
        time.sleep(0.5)
        os.kill(server, 9)
        r = running.result()
    assert r.error is not None and r.error.startswith("sandbox failure") and r.duration < 5, r
    assert _none_left(marker)  # the supervisor died with the server; its snippet and child with it
    assert run_python("print(3)").stdout == "3\n"


def test_a_stuck_fork_server_fails_the_call_in_time_and_is_replaced():
    assert run_python("print(1)").ok
    stuck = _server_pid()
    os.kill(stuck, signal.SIGSTOP)
    start = time.monotonic()
    r = run_python("print(2)", timeout=1)
    assert r.error.startswith("sandbox failure") and "did not answer" in r.error, r
    assert time.monotonic() - start < 1 + sandbox.GRACE_SECONDS and _gone(stuck)
    assert run_python("print(3)").stdout == "3\n" and _server_pid() not in (None, stuck)


def test_fork_server_holds_none_of_the_callers_environment(monkeypatch):
    secret = f"hunter-{uuid.uuid4().hex}"
    monkeypatch.setenv("AIMO_TEST_SECRET", secret)
    assert run_python("print(1)").ok
    os.kill(_server_pid(), 9)  # the next call starts a new server, with the secret in our environment
    assert run_python("print(1)").ok
    environ = Path(f"/proc/{_server_pid()}/environ").read_bytes()
    assert secret.encode() not in environ and b"PATH=" in environ


def test_a_forked_caller_gets_a_server_of_its_own():
    assert run_python("print(1)").ok
    ours = _server_pid()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a multiprocessing worker started by fork: it must not read the parent's replies
        try:
            os.write(w, f"{run_python('print(7)').stdout.strip()} {_server_pid()}".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out, theirs = f.read().split()
    os.waitpid(pid, 0)
    assert out == "7" and int(theirs) != ours and _gone(int(theirs))  # its server left with it
    assert run_python("print(8)").stdout == "8\n" and _server_pid() == ours


def test_config_and_keywords():
    cfg = SandboxConfig(timeout=2.5, max_output_chars=10)
    assert run_python("print('a' * 50)", cfg).stdout.startswith("a" * 10 + "\n[...")
    assert run_python("print('a' * 50)", config=cfg, max_output_chars=20).stdout.startswith("a" * 20 + "\n")
    assert "after 2.5 s" in run_python("while True: pass", config=cfg).error
    with pytest.raises(ValueError, match=r"SandboxConfig\.memory_mb"):
        SandboxConfig(memory_mb=0)
    with pytest.raises(ValueError, match=r"SandboxConfig\.timeout"):
        run_python("1", timeout=-1)


def test_overhead_is_small():
    times = []
    for _ in range(5):
        start = time.perf_counter()
        assert run_python("print(1 + 1)").stdout == "2\n"
        times.append(time.perf_counter() - start)
    assert sorted(times)[2] < 0.5, times  # about 15 ms here; generous for loaded CI machines


def test_error_reasons_for_signals():
    assert sandbox._exit_reason(-24, "") == "CPU time limit exceeded"  # SIGXCPU
    assert re.match(r"killed by SIGSEGV", sandbox._exit_reason(-11, ""))
    assert sandbox._exit_reason(2, "usage\nfatal: bad\n") == "fatal: bad"  # a stderr that can be trusted
    assert sandbox._exit_reason(2) == "exited with code 2"
    assert sandbox._exit_reason(0, "warning") is None


# --- a determined snippet: the audit hook switched off, the kernel's layers must hold ---------------

# Reached the audit hook's own state through the frames of an exception raised inside it, cleared the
# list of functions it protects, and replaced its decision function (the route to switch it off).
HOOK_OFF = """\
import os, sys
try:
    os.mkdir("x", dir_fd=987)
except OSError as e:
    _tb, _frames = e.__traceback__, []
    while _tb is not None:
        _frames.append(_tb.tb_frame.f_locals)
        _tb = _tb.tb_next
    for _loc in _frames:
        if "_ours" in _loc:
            _loc["_ours"].clear()
    for _loc in _frames:
        if "_decide" in _loc:
            _loc["_decide"].__code__ = (lambda *a, **k: None).__code__
"""


def test_the_frame_route_switches_the_hook_off_and_the_kernel_still_refuses():
    # The route, then what it was for: the kernel's answers, not the hook's, and nothing gained
    r = run_python(
        HOOK_OFF
        + "import socket\ntry:\n    socket.socket(socket.AF_INET)\nexcept OSError as e:\n    print(e)"
    )
    assert r.error is None and r.stdout.startswith("[Errno 13]"), r  # seccomp; the hook would say "sandbox:"
    code = "n = 0\ntry:\n    for _ in range(100):\n        if os.fork() == 0:\n            import time\n"
    code += "            time.sleep(1)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)"
    r = run_python(HOOK_OFF + code, max_processes=8)
    assert r.error is None and 0 < int(r.stdout) < 8, r  # forks happen (no hook), but only up to the limit


FRESH_POSIX = "del sys.modules['posix']\nimport posix\n"  # a fresh module: without the hook's stubs

# Both the layers this machine grants (namespaces) and the fallbacks of a container that refuses them.
MODES = pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "no-namespaces"])


@pytest.fixture()
def layers(request, monkeypatch):
    monkeypatch.setattr(sandbox, "USE_NAMESPACES", request.param)
    return request.param


def hostile(code: str, **kwargs) -> SandboxResult:
    """A snippet that got past the audit hook, by whatever route: it runs with no hook at all."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sandbox, "AUDIT_HOOK", False)
        return run_python("import sys\n" + code, **kwargs)


def test_without_the_hook_only_the_kernel_refuses():
    r = hostile("import socket\ntry:\n    socket.socket(socket.AF_INET)\nexcept OSError as e:\n    print(e)")
    assert r.error is None and "sandbox:" not in r.stdout  # the refusal came from the kernel, not the hook
    assert r.stdout.startswith("[Errno 13]")
    r = hostile("import os\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nprint(os.waitpid(pid, 0)[1])")
    assert r.stdout == "0\n"  # no hook, no fork ban: only the kernel's layers are left


def test_isolation_layers_are_reported():
    r = run_python("print(1)")
    assert r.ok and {"uid", "subreaper", "seccomp"} <= set(r.isolation)  # root: always available
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sandbox, "USE_NAMESPACES", False)
        assert not any(x.endswith("namespace") for x in run_python("print(1)").isolation)


@pytest.fixture()
def outside():
    """Places a snippet must not be able to create anything in: the repository, /tmp, /var/tmp,
    /dev/shm (as the caller sees them). Yields a function that names a fresh path in each."""
    made: list[Path] = []
    repo_dir = Path(tempfile.mkdtemp(prefix=".sandbox-victim-", dir=REPO))

    def paths(stem: str) -> list[Path]:
        tag = f"x_sandbox_{stem}_{uuid.uuid4().hex[:8]}"
        new = [repo_dir / tag, Path("/tmp") / tag, Path("/var/tmp") / tag, Path("/dev/shm") / tag]
        made.extend(new)
        return new

    yield paths
    shutil.rmtree(repo_dir, ignore_errors=True)
    for path in made:
        if path.exists() or path.is_symlink():
            path.unlink()


@pytest.mark.parametrize("layers", [True, False], indirect=True, ids=["namespaces", "no-namespaces"])
@pytest.mark.parametrize(
    ("route", "template"),
    [
        ("sqlite", "import sqlite3\nc = sqlite3.connect({p!r})\nc.execute('create table t (x)')\nc.commit()"),
        ("fifo", FRESH_POSIX + "posix.mkfifo({p!r})"),
        ("mknod-file", FRESH_POSIX + "import stat\nposix.mknod({p!r}, stat.S_IFREG | 0o644)"),
        (
            "mknod-device",
            FRESH_POSIX + "import stat\nposix.mknod({p!r}, stat.S_IFCHR | 0o666, posix.makedev(1, 3))",
        ),
        ("open", "open({p!r}, 'w').write('x')"),
        ("symlink", "import os\nos.symlink('/etc/passwd', {p!r})"),
        ("hardlink", "import os\nopen('mine', 'w').write('x')\nos.link('mine', {p!r})"),
        ("rename", "import os\nopen('mine', 'w').write('x')\nos.rename('mine', {p!r})"),
    ],
)
def test_hostile_writes_outside_fail_by_any_route(layers, outside, route, template):
    repo_path, *shared = outside(route)
    r = hostile(template.format(p=str(repo_path)))
    assert r.error is not None and "sandbox:" not in r.error, r  # the kernel refused, not the hook
    for path in shared:  # refused (read-only /tmp, /var/tmp), or written to the run's private /dev/shm
        r = hostile(template.format(p=str(path)))
        assert r.error is None or "sandbox:" not in r.error, (path, r)
    for path in (repo_path, *shared):
        assert not path.exists() and not path.is_symlink(), (path, r)


@pytest.mark.parametrize("layers", [True, False], indirect=True, ids=["namespaces", "no-namespaces"])
def test_hostile_shared_memory_is_bounded_and_left_nowhere(layers):
    before = set(os.listdir("/dev/shm"))
    code = (
        "from multiprocessing import shared_memory\nimport os\ntotal = 0\n"
        "try:\n    m = shared_memory.SharedMemory(create=True, size=1 << 20)\n    m.buf[:] = b'x' * (1 << 20)\n"
        "except OSError as e:\n    print('shm refused', type(e).__name__)\n"
        "try:\n    for i in range(1000):\n        with open(f'/dev/shm/x{i}', 'wb') as f:\n"
        "            for _ in range(16):\n                f.write(b'x' * (1 << 20))\n                total += 1\n"
        "except OSError as e:\n    print('stopped', type(e).__name__)\nprint('MB', total)"
    )
    r = hostile(code, memory_mb=64, timeout=10)
    megabytes = int(r.stdout.split("MB")[-1])
    assert r.error is None and "stopped" in r.stdout and megabytes <= 64, r
    assert set(os.listdir("/dev/shm")) <= before  # nothing new where the caller can see it


@pytest.mark.parametrize("layers", [True, False], indirect=True, ids=["namespaces", "no-namespaces"])
@pytest.mark.parametrize(
    "code",
    [
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\ns.settimeout(1)\n"
        "s.connect(('1.1.1.1', 80))",
        "import socket\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\ns.sendto(b'x', ('::1', 53))",
        "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', 9))",
        "import socket\nsocket.socket(socket.AF_PACKET, socket.SOCK_RAW)",
        "import socket\nsocket.socket(socket.AF_NETLINK, socket.SOCK_RAW)",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nfd = libc.socket(2, 1, 0)\n"
        "assert fd >= 0, ctypes.get_errno()",
    ],
)
def test_hostile_network_is_unreachable(layers, code):
    r = hostile(code)
    assert r.error is not None and "sandbox:" not in r.error, r


def test_hostile_unix_sockets_still_work_for_multiprocessing():
    r = hostile("import socket\na, b = socket.socketpair()\na.send(b'hi')\nprint(b.recv(2).decode())")
    assert (r.stdout, r.error) == ("hi\n", None)


@pytest.mark.parametrize("layers", [True, False], indirect=True, ids=["namespaces", "no-namespaces"])
def test_hostile_cannot_read_the_callers_environment(layers, monkeypatch):
    secret = f"hunter-{uuid.uuid4().hex}"
    monkeypatch.setenv("AIMO_TEST_SECRET", secret)
    code = (
        f"import os\nfound = []\nfor pid in [{os.getpid()}, os.getppid(), 1] + os.listdir('/proc'):\n"
        "    try:\n        data = open(f'/proc/{pid}/environ', 'rb').read()\n    except (OSError, ValueError):\n"
        "        continue\n    if b'AIMO_TEST_SECRET' in data:\n        found.append(pid)\n"
        "print('found', found, dict(os.environ).get('AIMO_TEST_SECRET'))"
    )
    r = hostile(code)
    assert r.error is None and r.stdout == "found [] None\n" and secret not in r.stdout + r.stderr, r


@pytest.mark.parametrize("layers", [True, False], indirect=True, ids=["namespaces", "no-namespaces"])
def test_hostile_daemon_does_not_outlive_the_call(layers):
    marker = _sleep_marker()
    code = (  # the hook's fork/exec ban is off: double fork, setsid, ignore signals, exec
        "import os, signal, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"        os.execv('/bin/sleep', ['sleep', '{marker}'])\n    os._exit(0)\n"
        "time.sleep(0.3)\nprint('left it running')"
    )
    r = hostile(code)
    assert r.stdout == "left it running\n" and r.error is None
    assert _none_left(marker)


@pytest.mark.parametrize("layers", [True, False], indirect=True, ids=["namespaces", "no-namespaces"])
def test_hostile_fork_is_bounded_by_the_process_limit(layers):
    code = (
        "import os, time\nn = 0\ntry:\n    for _ in range(200):\n        if os.fork() == 0:\n"
        "            time.sleep(2)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n"
        "    print(type(e).__name__)\nprint(n)"
    )
    r = hostile(code, max_processes=12, timeout=10)
    assert r.error is None and r.stdout.startswith("BlockingIOError") and int(r.stdout.split()[-1]) < 12, r


@pytest.mark.parametrize("layers", [True, False], indirect=True, ids=["namespaces", "no-namespaces"])
def test_hostile_cannot_kill_the_caller_or_its_processes(layers):
    victim = subprocess.Popen(["sleep", "60"])
    try:
        code = (  # a fresh import of the builtin module: the hook's stubs do not apply to it
            "import sys\ndel sys.modules['posix']\nimport posix\nresults = []\n"
            f"for pid in ({os.getpid()}, {victim.pid}, posix.getppid(), 1, -1):\n"
            "    try:\n        posix.kill(pid, 9)\n        results.append('sent')\n"
            "    except OSError as e:\n        results.append(type(e).__name__)\nprint(results)"
        )
        r = hostile(code)
        assert r.error is None and "sent" not in r.stdout.replace("'sent']", "]"), r  # kill(-1): own uid only
        assert victim.poll() is None  # the victim lives (and so does this test process)
        r = hostile("import posix, signal\nposix.kill(posix.getppid(), signal.SIGKILL)\nprint('survived')")
        assert r.error is not None or r.stdout == "survived\n"
        assert r.error is None or not r.error.startswith("sandbox failure"), r
    finally:
        victim.kill()
        victim.wait()


@pytest.mark.parametrize("layers", [True, False], indirect=True, ids=["namespaces", "no-namespaces"])
def test_deep_tree_keeps_output_and_is_removed(layers):
    code = (
        "import os\nprint('start', os.getcwd())\nfor i in range(2500):\n    os.mkdir('d')\n    os.chdir('d')\n"
        "open('leaf', 'w').write('x')\nos.chmod('.', 0)\nprint('deep')"
    )
    start = time.monotonic()
    r = hostile(code, timeout=10)
    wall = time.monotonic() - start
    assert r.error is None and r.stdout.endswith("deep\n"), r
    assert not Path(r.stdout.split()[1]).exists()
    assert wall <= 10 + sandbox.GRACE_SECONDS and r.duration <= wall and r.duration > wall - 0.2


@pytest.mark.parametrize("layers", [True, False], indirect=True, ids=["namespaces", "no-namespaces"])
def test_many_small_files_stay_within_timeout_and_grace(layers):
    code = (
        "import os\ni = 0\nwhile True:\n    os.close(os.open(f'f{i}', os.O_CREAT | os.O_WRONLY))\n    i += 1"
    )
    start = time.monotonic()
    r = hostile(code, timeout=2, max_files=10**7)
    wall = time.monotonic() - start
    assert r.timed_out and wall <= 2 + sandbox.GRACE_SECONDS, (wall, r)
    assert r.duration > wall - 0.2  # the reported duration counts the clean-up


def test_max_files_bounds_what_is_created():
    code = "import os\ni = 0\ntry:\n    while True:\n        open(f'f{i}', 'w').close()\n        i += 1\nexcept OSError:\n    print(i)"
    r = run_python(code, max_files=500)
    assert r.error is None and 480 <= int(r.stdout) <= 500, r


FORGED = "\\x1e[sandbox-error] timed out after 5 s"


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        ("", None),
        ("raise ValueError('real')", "ValueError: real"),
        ("import os\nos._exit(1)", "exited with code 1"),
        ("import os\nos._exit(3)", "exited with code 3"),
    ],
)
def test_stderr_cannot_forge_the_error_report(tail, expected):
    lines = [FORGED, "exception\\ttimed out after 5 s\\t", "memory\\tMemoryError\\tforged", "rc=0 layers=uid"]
    code = (
        "import sys\n"
        + "".join(f"sys.stderr.write('{x}\\n')\n" for x in lines)
        + "sys.stderr.flush()\n"
        + tail
    )
    r = run_python(code)
    assert r.error == expected and not r.timed_out, r


def test_the_report_pipe_cannot_pose_as_the_sandbox():
    # With the hook off, the snippet writes fake summaries to every descriptor it holds, then fails.
    code = (
        "import os\nfor fd in range(3, 64):\n    try:\n"
        "        os.write(fd, b'exception\\ttimed out after 5 s\\tforged\\nfailure\\tx\\ty\\n')\n"
        "    except OSError:\n        pass\nos._exit(1)"
    )
    r = hostile(code)
    assert (
        not r.timed_out and "timed out" not in (r.error or "") and "sandbox failure" not in (r.error or "")
    ), r


def test_runs_without_seccomp_where_libseccomp_is_missing(monkeypatch):
    monkeypatch.setattr(sandbox, "_seccomp_program", lambda: b"")
    r = run_python("print(2 + 2)")
    assert (r.stdout, r.error) == ("4\n", None) and "seccomp" not in r.isolation and "uid" in r.isolation


@pytest.mark.parametrize(
    "call",
    [
        "libc.unshare(0x10000000)",  # a user namespace: capabilities inside it
        "libc.unshare(0x20000)",  # a mount namespace
        "libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)",
        f"libc.ptrace(16, {os.getpid()}, None, None)",  # PTRACE_ATTACH to the caller
        "libc.syscall(425, 8, None)",  # io_uring_setup: socket and file operations seccomp would not see
        "libc.setuid(0)",
    ],
)
def test_hostile_cannot_regain_privileges_or_leave_the_layout(call):
    code = f"import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nprint({call}, ctypes.get_errno())"
    r = hostile(code)
    assert r.error is None and r.stdout.startswith("-1 "), r
