"""pynn/cpu.py: how many threads a run takes on a shared machine. The cores
other processes keep busy are left out, at the start and after each epoch
(SharedCores), and never fewer than one thread."""
import sys

import pytest

from pynn import cpu


def machine(monkeypatch, cpus, quota=None):
    """This process may run on ``cpus`` CPUs, with a cgroup quota of ``quota`` cores"""
    monkeypatch.setattr(cpu, "_my_cpus", lambda: set(range(cpus)))
    monkeypatch.setattr(cpu, "available_cores", lambda: min(cpus, quota or cpus))


@pytest.mark.parametrize("others, limit, threads", [
    (0.0, 16, 4),   # an idle machine: all of it
    (0.4, 16, 4),   # less than half a core busy: rounded away
    (0.5, 16, 3),   # halves round up, 1.5 and 2.5 alike
    (1.5, 16, 2),
    (2.5, 16, 1),
    (9.0, 16, 1),   # busier than it has cores: one thread still
    (0.0, 2, 2),    # the limit (16 on the course server)
    (2.0, 2, 2),    # two cores busy of four leave it its 2
    (3.0, 2, 1),
])
def test_free_threads_leaves_out_the_busy_cores(monkeypatch, others, limit, threads):
    machine(monkeypatch, 4)
    assert cpu.free_threads(others, limit) == threads


@pytest.mark.parametrize("others, threads", [(0.0, 2), (4.0, 2), (6.4, 2), (6.6, 1)])
def test_a_quota_caps_the_threads_and_the_others_load_counts_against_all_cpus(
        monkeypatch, others, threads):
    # docker --cpus=2 on 8 CPUs: 4 of them busy with other jobs still leave 2 free
    machine(monkeypatch, 8, quota=2)
    assert cpu.free_threads(others) == threads


def _shared_cores(monkeypatch, samples):
    """A SharedCores on 4 CPUs whose looks at the machine are ``samples``, in
    order: (wall seconds, busy CPU seconds of all its CPUs, this process's CPU seconds)"""
    machine(monkeypatch, 4)
    it = iter(samples)
    monkeypatch.setattr(cpu, "default_threads", lambda limit: 4)
    monkeypatch.setattr(cpu.SharedCores, "_sample", lambda self: next(it))
    return cpu.SharedCores()


def test_shared_cores_follow_the_others_load(monkeypatch):
    cores = _shared_cores(monkeypatch, [
        (0.0, 0.0, 0.0),
        (10.0, 40.0, 20.0),   # 4 cores busy for 10 s, 2 of them ours: 2 others -> 2 threads
        (20.0, 60.0, 40.0),   # 20 s busy, all ours: the others gone -> 4
        (20.2, 61.6, 40.0),   # a look too short to tell (0.2 s): as before
        (30.0, 95.5, 70.0),   # since 20.0, the last look that counted: 5.5 s of others in
                              # 10 s, 0.55 of a core -> 3 (since 20.2 it would be 0.40 -> 4)
    ])
    assert cores.threads == 4
    assert [cores.update() for _ in range(4)] == [2, 4, 4, 3]


def test_shared_cores_keep_their_count_without_proc_stat(monkeypatch):
    cores = _shared_cores(monkeypatch, [(0.0, None, 0.0), (10.0, None, 5.0)])
    assert cores.update() == 4


def test_shared_cores_measure_this_machine():
    cores = cpu.SharedCores()
    most = min(cpu.MAX_DEFAULT_THREADS, cpu.available_cores())
    assert 1 <= cores.threads <= most
    if sys.platform.startswith("linux"):
        assert cores._sample()[1] is not None  # /proc/stat read
    wall, busy, own = cores._last
    cores._last = (wall - 1.0, busy, own)  # a second ago: long enough a look to count
    assert 1 <= cores.update() <= most
    assert cores._last[0] > wall  # it counted: the next look starts from this one
