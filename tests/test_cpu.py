"""pynn/cpu.py: how many threads a run takes on a shared machine. The cores
other processes keep busy are left out, at the start and after each epoch
(SharedCores), and never fewer than one thread."""
import pytest

from pynn import cpu


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(cpu, "available_cores", lambda: 4)


@pytest.mark.parametrize("others, limit, threads", [
    (0.0, 16, 4),   # an idle machine: all of it
    (0.4, 16, 4),   # less than half a core busy: rounded away
    (1.4, 16, 3),
    (2.6, 16, 1),
    (9.0, 16, 1),   # busier than it has cores: one thread still
    (0.0, 2, 2),    # the limit (16 on the course server)
    (2.0, 2, 2),    # others on cores past the limit leave it its 2
    (3.0, 2, 1),
])
def test_free_threads_leaves_out_the_busy_cores(four_cores, others, limit, threads):
    assert cpu.free_threads(others, limit) == threads


def _shared_cores(monkeypatch, samples):
    """A SharedCores whose looks at the machine are ``samples``, in order:
    (wall seconds, busy CPU seconds of all its CPUs, this process's CPU seconds)"""
    it = iter(samples)
    monkeypatch.setattr(cpu, "default_threads", lambda limit: 4)
    monkeypatch.setattr(cpu.SharedCores, "_sample", lambda self: next(it))
    return cpu.SharedCores()


def test_shared_cores_follow_the_others_load(four_cores, monkeypatch):
    cores = _shared_cores(monkeypatch, [
        (0.0, 0.0, 0.0),
        (10.0, 40.0, 20.0),   # 4 cores busy for 10 s, 2 of them ours: 2 others -> 2 threads
        (20.0, 60.0, 40.0),   # 20 s busy, all ours: the others gone -> 4
        (20.2, 62.0, 40.0),   # a look too short to tell (0.2 s): as before
        (30.0, 96.0, 70.0),   # since 20.0, the last look that counted: 6 s of others in
                              # 10 s, 0.6 of a core -> 3 (since 20.2 it would be 0.41 -> 4)
    ])
    assert cores.threads == 4
    assert [cores.check() for _ in range(4)] == [2, 4, 4, 3]


def test_shared_cores_keep_their_count_without_proc_stat(four_cores, monkeypatch):
    cores = _shared_cores(monkeypatch, [(0.0, None, 0.0), (10.0, None, 5.0)])
    assert cores.check() == 4


def test_shared_cores_measure_this_machine():
    cores = cpu.SharedCores()
    assert 1 <= cores.threads <= cpu.MAX_DEFAULT_THREADS
    assert 1 <= cores.check() <= cpu.available_cores()
