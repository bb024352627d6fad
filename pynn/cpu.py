"""How many threads a run uses by default: polite on a shared machine."""
import math
import os
import time

from ._kernels import lib

MAX_DEFAULT_THREADS = lib.PYNN_MAX_DEFAULT_THREADS  # the course server is shared (pynn.h)


def allowed_cpus():
    """The CPUs this process may run on (taskset / cpuset affinity), or None."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return None


def quota_cores():
    """The cores a cgroup CPU quota allows (docker --cpus=2, say), or None."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:  # cgroup v2: "max 100000" or "200000 100000"
            quota, period = f.read().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        if quota > 0:
            return max(1, math.ceil(quota / period))
    except (OSError, ValueError):
        pass
    return None


def available_cores():
    """Cores this process may use: its affinity, and a cgroup quota if any."""
    cpus = allowed_cpus()
    cores = len(cpus) if cpus else (os.cpu_count() or 1)
    quota = quota_cores()
    return min(cores, quota) if quota else cores


def _cpu_times(cpus):
    """{cpu: (busy, total)} clock ticks since boot of the given CPUs, from /proc/stat."""
    times = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                ticks = [int(v) for v in fields[:8]]  # user .. steal
                idle = ticks[3] + ticks[4]  # idle + iowait
                times[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return times


def _my_cpus():
    """The CPUs this process may run on, as a set (all of them where unknown)."""
    return set(allowed_cpus() or range(os.cpu_count() or 1))


def busy_cores(interval=0.1):
    """How many of this process's CPUs other processes keep busy right now
    (this process is idle while it looks), or None where /proc/stat does not
    exist. Only the CPUs it may run on count: the load on other CPUs of the
    machine does not slow it."""
    cpus = _my_cpus()
    try:
        before = _cpu_times(cpus)
        time.sleep(interval)
        after = _cpu_times(cpus)
    except (OSError, ValueError, IndexError):
        return None
    busy = 0.0
    for cpu, (b1, t1) in after.items():
        b0, t0 = before.get(cpu, (b1, t1))
        if t1 > t0:
            busy += (b1 - b0) / (t1 - t0)
    return busy if after else None


def free_threads(others, limit=MAX_DEFAULT_THREADS):
    """The threads to run: this process's CPUs minus ``others``, the cores
    other processes keep busy on them (a float, halves rounded up), and no
    more than a cgroup quota allows or ``limit``; at least one."""
    free = len(_my_cpus()) - math.floor(others + 0.5)
    return max(1, min(limit, available_cores(), free))


def default_threads(limit=MAX_DEFAULT_THREADS):
    """All available cores up to ``limit``, minus the ones other jobs keep busy now.

    Each training step meets at a few dozen points where threads wait for each
    other, and each wait lasts as long as the slowest thread: on cores that
    other processes also want, one descheduled thread stalls all the others
    (measured on 2 busy cores: an epoch on 2 threads took 8 s, on 1 thread
    0.6 s). So the cores busy during a 0.1 s look at /proc/stat are left out.
    (The load average would also count this user's previous run.)
    """
    busy = busy_cores()
    return free_threads(busy or 0.0, limit)


class SharedCores:
    """The thread count of a run on a shared machine, updated after each
    epoch: a job that ends frees its core for the epochs after it, and one
    that starts takes it (other jobs on our cores stall every barrier,
    default_threads above). The others' load is the CPU time they got since
    the last update: what the CPUs were busy (/proc/stat) less what this
    process used (os.times()), so no pause is needed to look. The thread
    count moves no bit of the results (docs/design.md, "Determinism")."""

    def __init__(self, limit=MAX_DEFAULT_THREADS):
        self.limit = limit
        self.threads = default_threads(limit)
        self._cpus = _my_cpus()
        self._last = self._sample()

    def _sample(self):
        """(wall seconds, busy seconds of the CPUs or None, this process's CPU seconds)"""
        try:
            ticks = _cpu_times(self._cpus)
            busy = sum(b for b, _ in ticks.values()) / os.sysconf("SC_CLK_TCK") if ticks else None
        except (OSError, ValueError, IndexError, AttributeError):
            busy = None
        own = os.times()
        return time.perf_counter(), busy, own.user + own.system

    def update(self):
        """The thread count for what comes next, from the others' load since
        the last update (or the start); the same count where /proc/stat does
        not exist."""
        now = self._sample()
        (w0, b0, o0), (w1, b1, o1) = self._last, now
        if w1 - w0 < 0.5:  # too short to tell: the next look covers this one's time too
            return self.threads
        self._last = now
        if b0 is None or b1 is None:
            return self.threads
        others = max(0.0, (b1 - b0) - (o1 - o0)) / (w1 - w0)
        self.threads = free_threads(others, self.limit)
        return self.threads
