"""The caller's side of the sandbox's fork server (the server itself: `sandbox_child.serve`).

Starting an interpreter costs about 12 ms; forking one that has already started costs well under one. So
`run_python` keeps one exec'd server process, with the sandbox's minimal environment and nothing of
the caller's memory, and asks it for a fresh supervisor per call. It is started on first use, restarted
when it has died (killed, or its request failed), and exits when the caller does (EOF on its socket).
Thread-safe: a lock spans one request and its reply. A process forked from the caller (multiprocessing)
forgets the caller's server and starts its own: two processes must not share one socket's replies.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import weakref

__all__ = ["ForkServer", "ServerError"]


class ServerError(OSError):
    """The server refused a request or could not be reached (the call reports a sandbox failure)."""


class ForkServer:
    """One lazily started server process; `fork(args, fds)` returns a supervisor's (pid, pidfd)."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self._argv, self._env = argv, env  # argv: the interpreter and launcher; "serve <fd>" is appended
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        _instances.add(self)

    def _forget(self) -> None:
        """In a forked child: the server is the parent's (its lock may be held by a thread that is not here)."""
        self._lock = threading.Lock()
        if self._sock is not None:
            self._sock.close()  # our copy only: the parent's server keeps its socket
        self._sock = self._proc = None

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs (tests kill it)."""
        with self._lock:
            return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def fork(self, args: list[str], fds: list[int], timeout: float) -> tuple[int, int]:
        """Start a supervisor with `args` (key=value strings) and `fds` (stdout, stderr, report, status
        write ends). Retries once on a fresh server if the running one is dead; one that has not
        answered within `timeout` seconds (stopped, stuck) is killed, and the call fails."""
        payload = "\0".join(args).encode("utf-8", "surrogateescape")
        with self._lock:
            for attempt in (0, 1):
                if self._proc is None or self._proc.poll() is not None:
                    self._restart()
                try:
                    self._sock.settimeout(max(0.05, timeout))
                    return self._request(payload, fds)
                except TimeoutError:
                    self._proc.kill()  # a late reply must never reach the next request
                    self._shutdown()
                    raise ServerError(
                        f"the sandbox's fork server did not answer within {timeout:.3g} s"
                    ) from None
                except (BrokenPipeError, ConnectionError, EOFError):
                    self._shutdown()  # it died between calls (or mid-request): once more, on a new one
                    if attempt:
                        raise ServerError("the sandbox's fork server died twice in a row") from None
        raise AssertionError("unreachable")

    def _request(self, payload: bytes, fds: list[int]) -> tuple[int, int]:
        self._sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(_fd_array(fds)))])
        text, received, flags, _ = socket.recv_fds(self._sock, 4096, 1, socket.MSG_CMSG_CLOEXEC)
        if not text:
            for fd in received:
                os.close(fd)
            raise EOFError
        reply = text.decode("utf-8", "replace")
        if not reply.startswith("pid=") or len(received) != 1:
            for fd in received:
                os.close(fd)
            raise ServerError(f"fork server: {reply.partition('=')[2] or 'no reply'}")
        return int(reply[4:]), received[0]

    def _restart(self) -> None:
        self._shutdown()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [*self._argv, "serve", str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                env=self._env,
                start_new_session=True,
                close_fds=True,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock = ours

    def _shutdown(self) -> None:
        """Close the socket (the server exits on EOF, killing its supervisors) and reap it."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(0.5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


_instances: weakref.WeakSet[ForkServer] = weakref.WeakSet()


def _forget_all() -> None:
    for server in list(_instances):
        server._forget()


os.register_at_fork(after_in_child=_forget_all)


def _fd_array(fds: list[int]):
    import array

    return array.array("i", fds)
