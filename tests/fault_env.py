"""Run `vp` in a subprocess where a folder is read-only or nearly full, for the fault tests.

As root (CI, these machines) permissions do not stop writes, so each command gets its own
mount namespace (``unshare --mount``) in which the folder is bind-mounted read-only, or a
256 KB tmpfs is mounted on it: real EROFS and ENOSPC, invisible to everything else, gone
when the command ends. As an ordinary user, ``chmod 555`` makes a folder read-only and a
256 KB file-size limit (RLIMIT_FSIZE: EFBIG) stands in for the full disk.
"""

from __future__ import annotations

import functools
import os
import resource
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

VP = [sys.executable, "-m", "valueportrait.cli"]
TINY_BYTES = 256 * 1024
MARK = "@@ files left in the tiny folder:"


@functools.lru_cache(maxsize=None)
def namespaces() -> bool:
    """Whether private mount namespaces work here (root with CAP_SYS_ADMIN)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || mount -t tmpfs -o size=64k tmpfs /tmp"],
                           capture_output=True)
    return probe.returncode == 0


def run_vp(args, *, cwd=None, readonly=(), tiny=None, timeout=600) -> subprocess.CompletedProcess:
    """``vp ARGS`` with the folders in `readonly` read-only and `tiny` (a folder) nearly full."""
    args = [str(a) for a in args]
    readonly = [Path(d) for d in readonly]
    preexec = None
    if namespaces():
        script = [f"mount --bind {shlex.quote(str(d))} {shlex.quote(str(d))} && "
                  f"mount -o remount,ro,bind {shlex.quote(str(d))} {shlex.quote(str(d))}" for d in readonly]
        if tiny is not None:
            script.append(f"mount -t tmpfs -o size={TINY_BYTES // 1024}k tmpfs {shlex.quote(str(tiny))}")
        # The tmpfs vanishes with the namespace: list what the command left in it first.
        listing = (f'; rc=$?; echo "{MARK}"; find {shlex.quote(str(tiny))} -mindepth 1 -printf "%P\\n"; exit $rc'
                   if tiny is not None else "")
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   " && ".join([*script, '"$@"']) + listing, "sh", *VP, *args]
    else:
        if readonly and os.geteuid() == 0:
            pytest.skip("read-only folders cannot be simulated: root without mount namespaces")
        for d in readonly:
            d.chmod(0o555)
        if tiny is not None:
            def preexec():
                resource.setrlimit(resource.RLIMIT_FSIZE, (TINY_BYTES, TINY_BYTES))
        command = [*VP, *args]
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec)
        result.tiny_files = None
        if tiny is not None:
            if MARK in result.stdout:
                result.stdout, listing = result.stdout.split(MARK + "\n", 1)
                result.tiny_files = sorted(filter(None, listing.splitlines()))
            else:
                result.tiny_files = sorted(str(p.relative_to(tiny)) for p in Path(tiny).rglob("*"))
        return result
    finally:
        for d in readonly:
            if not namespaces():
                d.chmod(0o755)


def one_line(result: subprocess.CompletedProcess | str, command: str) -> str:
    """The single error line of a failed command (asserts there is exactly one, and no traceback)."""
    err = result if isinstance(result, str) else result.stderr
    lines = [line for line in err.splitlines() if line.startswith(f"vp {command}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
