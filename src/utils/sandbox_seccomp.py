"""The sandbox's seccomp filter, compiled to raw BPF with libseccomp (through ctypes, no extra package).

libseccomp adds the architecture check and the x32/i386 handling; the caller compiles once and the
sandbox's child loads the bytes with prctl(PR_SET_SECCOMP) just before the snippet runs. Refused calls
fail with an errno (EACCES for sockets, EPERM otherwise), so Python raises an ordinary OSError.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

__all__ = ["compile_filter", "DENIED_SYSCALLS"]

_ALLOW = 0x7FFF0000
_CMP_NE, _CMP_MASKED_EQ = 1, 7
AF_UNIX = 1
# Namespaces: a new user namespace would give the snippet capabilities in it.
_CLONE_NEW = (0x20000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)

DENIED_SYSCALLS = (
    # namespaces, mounts, chroot: the layout the supervisor set up stays
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsmount", "fspick", "fsconfig", "mount_setattr",
    # other processes' memory, kernel programs and keys
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd", "bpf",
    "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key", "kcmp",
    # io_uring runs socket and file operations that this filter would not see
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # System V IPC and message queues outlive a process unless an IPC namespace holds them
    "shmget", "semget", "msgget", "mq_open",
    # root-only, refused even if a capability were left
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon",
    "swapoff", "acct", "syslog", "open_by_handle_at", "name_to_handle_at", "lookup_dcookie",
)  # fmt: skip


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)
    ]  # fmt: skip
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def compile_filter() -> bytes:
    """Raw BPF (struct sock_filter[]): no sockets but AF_UNIX, no clone3 (ENOSYS: libc falls back to
    clone, whose flags a filter can read), no clone into namespaces, and DENIED_SYSCALLS refused.
    Raises OSError when libseccomp is missing or fails."""
    lib = _library()
    ctx = lib.seccomp_init(_ALLOW)
    if not ctx:
        raise OSError("seccomp_init failed")
    try:

        def rule(action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:  # unknown to this libseccomp or architecture
                return
            array = (_ArgCmp * max(1, len(cmps)))(*(_ArgCmp(*c) for c in cmps))
            if lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array) != 0:
                raise OSError(f"seccomp_rule_add {name}")

        for name in ("socket", "socketpair"):
            rule(_errno_action(errno.EACCES), name, (0, _CMP_NE, AF_UNIX, 0))
        rule(_errno_action(errno.ENOSYS), "clone3")
        for bit in _CLONE_NEW:
            rule(_errno_action(errno.EPERM), "clone", (0, _CMP_MASKED_EQ, bit, bit))
        for name in DENIED_SYSCALLS:
            rule(_errno_action(errno.EPERM), name)
        read_fd, write_fd = os.pipe()
        try:
            if lib.seccomp_export_bpf(ctx, write_fd) != 0:
                raise OSError("seccomp_export_bpf failed")
            os.close(write_fd)
            write_fd = -1
            chunks = []
            while chunk := os.read(read_fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
        return b"".join(chunks)
    finally:
        lib.seccomp_release(ctx)
