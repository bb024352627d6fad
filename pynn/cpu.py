"""How many threads a run uses by default: polite on a shared machine."""
import os
import time

MAX_DEFAULT_THREADS = 16  # the course server is shared


def available_cores():
    """Cores this process may run on (respects taskset / cgroup affinity)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _cpu_times():
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]  # user .. steal
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def busy_cores(interval=0.1):
    """How many cores other processes keep busy right now (this process is
    idle while it looks), or None where /proc/stat does not exist."""
    try:
        busy0, total0 = _cpu_times()
        time.sleep(interval)
        busy1, total1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)


def default_threads(limit=MAX_DEFAULT_THREADS):
    """All cores up to ``limit``, minus the ones other jobs keep busy now.

    Each training step meets at a few dozen points where threads wait for each
    other, and each wait lasts as long as the slowest thread: on cores that
    other processes also want, one descheduled thread stalls all the others
    (measured on 2 busy cores: an epoch on 2 threads took 8 s, on 1 thread
    0.6 s). So the cores busy during a 0.1 s look at /proc/stat are left out.
    (The load average would also count this user's previous run.)
    """
    cores = min(limit, available_cores())
    busy = busy_cores()
    if busy is None:
        return cores
    return max(1, min(cores, available_cores() - round(busy)))
