"""The process's CPU priority, lowered for every thread (a writer beside readers)."""

from __future__ import annotations

import os

__all__ = ["lower_priority"]


def lower_priority(n: int) -> int:
    """Lower this process's CPU priority by ``n`` (like ``nice(1)``); returns the new
    niceness. Linux gives each thread its own priority and ``os.nice`` sets the caller's
    only, so the threads started before (BLAS workers, made when numpy loads) get it too.

    Raises
    ------
    OSError
        The platform has no process priorities.
    """
    if not hasattr(os, "nice"):
        raise OSError("this platform has no process priorities")
    new = os.nice(n)
    tasks = "/proc/self/task"
    for tid in os.listdir(tasks) if os.path.isdir(tasks) else []:
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), new)
        except OSError:  # the thread has ended
            pass
    return new
