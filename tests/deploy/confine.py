"""Run a command the way a container runtime or systemd would start the daemon.

Started as root; it then, in this order:
1. enters a private mount namespace, so nothing below is visible outside this process tree;
2. makes the interpreter reachable for the target user (a 0755 tmpfs over a private directory
   such as /root, holding only the bind-mounted path the interpreter lives in);
3. keeps the listed directories writable and remounts the root read-only
   (readOnlyRootFilesystem, ProtectSystem=strict);
4. switches to the user, its group and its supplementary groups, sets the umask and
   RLIMIT_CORE, and sets no_new_privs (allowPrivilegeEscalation: false, NoNewPrivileges=yes);
5. loads the seccomp filters systemd derives from SystemCallFilter=, SystemCallErrorNumber=,
   MemoryDenyWriteExecute= and RestrictAddressFamilies= (same rules, same errno);
6. executes the command, which keeps this process id.

Usage: confine.py SPEC_JSON -- ARGV...  (SPEC fields: see `_Spec`; exit code 125 on set-up errors)
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import pwd
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

_CLONE_NEWNS = 0x00020000
_PR_SET_NO_NEW_PRIVS = 38
_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_ERRNO = 0x00050000
_SCMP_CMP_EQ = 4
_SCMP_CMP_GE = 5
_SCMP_CMP_MASKED_EQ = 7
_SHM_EXEC = 0o100000
_AF_MAX = 46
# allowed by systemd even when an allow-list leaves them out (systemd.exec(5), SystemCallFilter=)
_IMPLICIT = ("execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn")


class _ArgCmp(ctypes.Structure):
    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


@dataclass
class _Spec:
    user: str
    env: dict[str, str]
    reachable: list[str] = field(default_factory=list)
    writable: list[str] = field(default_factory=list)
    read_only_root: bool = False
    umask: int | None = None
    no_core: bool = False
    syscalls: list[str] | None = None
    syscall_errno: int = errno.EPERM
    mdwe: bool = False
    address_families: list[int] | None = None


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def _blocked_ancestor(path: Path) -> tuple[Path, str] | None:
    """The first ancestor others cannot traverse, and the child on the way to path."""
    parts = path.parts
    for depth in range(2, len(parts)):
        ancestor = Path(*parts[:depth])
        if not ancestor.stat().st_mode & 0o001:
            return ancestor, parts[depth]
    return None


def _make_reachable(paths: list[str]) -> None:
    """Replace each private ancestor by a 0755 tmpfs holding only the children needed."""
    for _ in range(8):
        needed: dict[Path, set[str]] = {}
        for raw in paths:
            found = _blocked_ancestor(Path(raw))
            if found:
                needed.setdefault(found[0], set()).add(found[1])
        if not needed:
            return
        for ancestor, children in needed.items():
            holders = {}
            for child in sorted(children):
                holder = tempfile.mkdtemp(prefix="confine-", dir="/tmp")
                _sh("mount", "--bind", str(ancestor / child), holder)
                holders[child] = holder
            _sh("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(ancestor))
            for child, holder in holders.items():
                (ancestor / child).mkdir()
                _sh("mount", "--move", holder, str(ancestor / child))
                Path(holder).rmdir()
    raise SystemExit("confine: could not make the interpreter reachable")


def _mounts(spec: _Spec) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    _sh("mount", "--make-rprivate", "/")
    _make_reachable(spec.reachable)
    if spec.read_only_root:
        for path in spec.writable:
            _sh("mount", "--bind", path, path)
        _sh("mount", "-o", "remount,ro,bind", "/")


def _become(spec: _Spec) -> None:
    entry = pwd.getpwnam(spec.user)
    os.setgroups(os.getgrouplist(entry.pw_name, entry.pw_gid))
    os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
    os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)
    if spec.umask is not None:
        os.umask(spec.umask)
    if spec.no_core:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class _Seccomp:
    """The few libseccomp calls systemd's filters need."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        self.lib.seccomp_init.restype = ctypes.c_void_p
        self.lib.seccomp_init.argtypes = (ctypes.c_uint32,)
        self.lib.seccomp_rule_add_array.argtypes = (
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.POINTER(_ArgCmp),
        )
        self.lib.seccomp_load.argtypes = (ctypes.c_void_p,)
        self.lib.seccomp_release.argtypes = (ctypes.c_void_p,)
        self.lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)

    def number(self, name: str) -> int:
        return int(self.lib.seccomp_syscall_resolve_name(name.encode()))

    def load(self, default: int, rules: list[tuple[int, str, _ArgCmp | None]]) -> None:
        ctx = self.lib.seccomp_init(default)
        try:
            for action, name, cmp in rules:
                nr = self.number(name)
                if nr < 0:
                    continue  # not a system call on this architecture
                arg = ctypes.byref(cmp) if cmp is not None else None
                rc = self.lib.seccomp_rule_add_array(ctx, action, nr, 0 if cmp is None else 1, arg)
                if rc != 0:
                    raise OSError(-rc, f"seccomp_rule_add({name})")
            rc = self.lib.seccomp_load(ctx)
            if rc != 0:
                raise OSError(-rc, "seccomp_load")
        finally:
            self.lib.seccomp_release(ctx)


def _filters(spec: _Spec) -> None:
    if spec.syscalls is None and not spec.mdwe and spec.address_families is None:
        return
    sc = _Seccomp()
    if spec.mdwe:
        deny = _SCMP_ACT_ERRNO | errno.EPERM
        wx = mmap.PROT_WRITE | mmap.PROT_EXEC
        x = mmap.PROT_EXEC
        sc.load(
            _SCMP_ACT_ALLOW,
            [
                (deny, "mmap", _ArgCmp(2, _SCMP_CMP_MASKED_EQ, wx, wx)),
                (deny, "mprotect", _ArgCmp(2, _SCMP_CMP_MASKED_EQ, x, x)),
                (deny, "pkey_mprotect", _ArgCmp(2, _SCMP_CMP_MASKED_EQ, x, x)),
                (deny, "shmat", _ArgCmp(2, _SCMP_CMP_MASKED_EQ, _SHM_EXEC, _SHM_EXEC)),
            ],
        )
    if spec.address_families is not None:
        deny = _SCMP_ACT_ERRNO | errno.EAFNOSUPPORT
        rules = [
            (deny, "socket", _ArgCmp(0, _SCMP_CMP_EQ, family, 0))
            for family in range(_AF_MAX)
            if family not in spec.address_families
        ]
        rules.append((deny, "socket", _ArgCmp(0, _SCMP_CMP_GE, _AF_MAX, 0)))
        sc.load(_SCMP_ACT_ALLOW, rules)
    # last, as systemd does: the allow-list need not contain seccomp(2) itself
    if spec.syscalls is not None:
        allowed = sorted(set(spec.syscalls) | set(_IMPLICIT))
        sc.load(_SCMP_ACT_ERRNO | spec.syscall_errno, [(_SCMP_ACT_ALLOW, n, None) for n in allowed])


def _no_new_privs() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")


def main(argv: list[str]) -> None:
    """Set up, then exec argv after `--`."""
    spec = _Spec(**json.loads(argv[1]))
    command = argv[argv.index("--") + 1 :]
    try:
        _mounts(spec)
        _become(spec)
        _no_new_privs()
        _filters(spec)
    except (OSError, subprocess.CalledProcessError, KeyError) as exc:
        sys.stderr.write(f"confine: {exc}\n")
        raise SystemExit(125) from None
    os.execve(command[0], command, spec.env)  # noqa: S606 - the command under test, no shell


if __name__ == "__main__":
    main(sys.argv)
