"""How many threads a run uses by default: polite on a shared machine."""
import os

MAX_DEFAULT_THREADS = 16  # the course server is shared


def available_cores():
    """Cores this process may run on (respects taskset / cgroup affinity)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_threads(limit=MAX_DEFAULT_THREADS):
    """All cores up to ``limit``, minus the ones other jobs keep busy.

    Each training step meets at a dozen barriers, and a barrier waits for its
    slowest thread: on cores that other processes also want, one descheduled
    thread stalls all the others (measured on 2 busy cores: an epoch on 2
    threads took 8 s, on 1 thread 0.6 s). So when the 1-minute load average
    says the machine is more than 3/4 busy, the busy cores are left out.
    """
    cores = min(limit, available_cores())
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return cores
    total = available_cores()
    if load > 0.75 * total:
        cores = min(cores, total - int(load))
    return max(1, cores)
