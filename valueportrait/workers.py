"""Worker processes that never outlive the command that started them.

``vp analyze`` runs its psychometric steps in forked worker processes. A worker whose
parent is gone must not go on writing tables into the output folder, so each worker

* asks Linux to kill it when its parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``), and
  also watches its parent's pid from a thread (other systems, and the moment between
  fork and prctl);
* ignores SIGINT: Ctrl-C reaches the whole process group, and the parent, not each
  worker, decides what to stop; SIGTERM is back to its default (the parent's handler,
  which turns it into a clean exit, is not inherited).

:func:`process_pool` kills its workers when the block that uses it is left by an
exception (Ctrl-C, SIGTERM, an error), instead of waiting for them to finish.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 0.5


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(WATCH_SECONDS)
        if os.getppid() != parent:
            os._exit(1)


def die_with_parent(parent: int) -> None:
    """Worker initializer: end this process as soon as `parent` (its parent's pid) is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the watcher below is enough
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watch").start()


@contextlib.contextmanager
def process_pool(jobs: int):
    """A fork-based ``ProcessPoolExecutor`` whose workers die with this process.

    Leaving the block normally waits for the workers; leaving it by an exception
    (including KeyboardInterrupt and SIGTERM's :class:`~valueportrait.errors.Terminated`)
    kills them at once.
    """
    from concurrent.futures import ProcessPoolExecutor

    before = set(mp.active_children())
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("fork"),
                               initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        for child in set(mp.active_children()) - before:
            child.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
