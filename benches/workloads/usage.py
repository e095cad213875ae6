"""The resource usage every workload reads before and after its measured work."""

from __future__ import annotations

import resource

__all__ = ["usage"]


def usage() -> dict[str, float]:
    """This process's CPU seconds (user, sys) and peak RSS in bytes (``maxrss``, ``hwm``).

    Peak RSS from ``VmHWM``, not ``ru_maxrss``: Linux carries ``ru_maxrss``
    across ``exec``, so a child of the pytest process would report pytest's
    own peak when it is larger. ``maxrss`` is kept, to show it.
    """
    r = resource.getrusage(resource.RUSAGE_SELF)
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return {"user": r.ru_utime, "sys": r.ru_stime, "maxrss": r.ru_maxrss * 1024, "hwm": hwm * 1024}
