"""The thread plan: counts from the cores a process may use, the start-up line, the OpenMP spin, the governor."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from annotassist.runtime.threads import (SPINCOUNT, ThreadGovernor, plan_threads, prepare_openmp,
                                         threads_for_load)

from conftest import REPO, make_config


def test_plan_from_an_affinity_set():
    p = plan_threads({0, 1}, requested_workers=1)
    assert (p.cores, p.torch_threads, p.loader_workers, p.interop_threads) == (2, 2, 1, 1)
    assert p.describe() == "2 cores available, 2 torch threads, 1 loader worker, OpenMP wait policy default"
    # one core: the loader would only take it from the compute thread
    p = plan_threads({3}, requested_workers=4)
    assert (p.torch_threads, p.loader_workers) == (1, 0)
    assert p.describe().startswith("1 core available, 1 torch thread, 0 loader workers")
    # 16 cores (an affinity set that is not 0..n-1) for 4 torchrun processes: 4 each, 3 of them free for workers
    p = plan_threads(set(range(8, 24)), requested_workers=8, local_processes=4)
    assert (p.cores, p.torch_threads, p.loader_workers) == (16, 4, 3)
    assert "16 cores available shared by 4 processes, 4 torch threads, 3 loader workers" in p.describe()
    # on a GPU the main process mostly waits: workers up to the cores it has
    assert plan_threads(set(range(16)), 4, device_type="cuda").loader_workers == 4
    assert plan_threads({0, 1}, 4, device_type="cuda").loader_workers == 2
    # more processes than cores: still one thread each
    assert plan_threads({0, 1}, 2, local_processes=4).torch_threads == 1
    # the user's OMP_NUM_THREADS wins
    assert plan_threads({0, 1}, 1, omp_num_threads="1").torch_threads == 1


def test_the_plan_follows_the_real_affinity_mask():
    """A process restricted to one core (as taskset or a container would) gets one thread and no worker."""
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from annotassist.runtime import threads; p = threads.configure(2); import torch; "
            "print(p.cores, p.torch_threads, p.loader_workers, torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True).stdout.split()
    assert out == ["1", "1", "0", "1"]


def test_prepare_openmp_shortens_the_spin_unless_the_user_chose():
    env = {}
    prepare_openmp(env)
    assert env == {"GOMP_SPINCOUNT": SPINCOUNT}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    prepare_openmp(env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}
    env = {"GOMP_SPINCOUNT": "100"}
    prepare_openmp(env)
    assert env == {"GOMP_SPINCOUNT": "100"}


def test_importing_annotassist_sets_the_spin_before_torch_loads():
    code = ("import os, sys; import annotassist; print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**env, "PYTHONPATH": str(REPO)}, check=True).stdout.split()
    assert out == [SPINCOUNT, "False"]


def test_threads_for_foreign_load():
    assert threads_for_load(2, 2, 0.0) == 2
    assert threads_for_load(2, 2, 0.3) == 2  # an editor or a server in the background: ignored
    assert threads_for_load(2, 2, 0.7) == 1
    assert threads_for_load(2, 2, 1.0) == 1  # a second training run: one core each
    assert threads_for_load(2, 2, 2.0) == 1  # never 0
    assert threads_for_load(8, 8, 3.0) == 5
    assert threads_for_load(4, 8, 1.0) == 4  # never more than the plan


def _burn_elsewhere(seconds: float) -> None:
    """Busy loops on every core in processes that are NOT our children (started through a shell that exits at
    once, so they belong to init): someone else's load."""
    loop = f"import time; t = time.time() + {seconds}\nwhile time.time() < t: pass"
    cores = len(os.sched_getaffinity(0))
    cmd = " ".join([f"{sys.executable} -c '{loop}' &" for _ in range(cores)])
    subprocess.run(["sh", "-c", cmd + " exit 0"], check=True)


@pytest.mark.serial  # another test running beside it is foreign load
@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="the governor reads /proc")
def test_governor_lowers_threads_while_other_processes_are_busy_and_restores_them(monkeypatch):
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # a user's choice turns the governor off; not here

    plan = plan_threads(os.sched_getaffinity(0), 0)
    if plan.torch_threads < 2:
        pytest.skip("one core: nothing to lower")
    before = torch.get_num_threads()
    torch.set_num_threads(plan.torch_threads)
    try:
        gov = ThreadGovernor(plan, interval=1.0)
        assert gov.enabled
        gov.reset()
        _burn_elsewhere(1.5)
        time.sleep(1.3)
        assert gov.tick() == 1, gov.foreign
        assert torch.get_num_threads() == 1 and gov.foreign > 1.0
        time.sleep(0.5)  # the busy loops end
        gov.reset()
        time.sleep(1.2)
        assert gov.tick() == plan.torch_threads, gov.foreign
        assert torch.get_num_threads() == plan.torch_threads
        # our own children (DataLoader workers) are not someone else's load
        own = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time() + 1.3\n"
                                "while time.time() < t: pass"])
        gov.reset()
        time.sleep(1.2)
        assert gov.tick() is None and gov.threads == plan.torch_threads, gov.foreign
        own.wait()
    finally:
        torch.set_num_threads(before)


def test_governor_is_off_under_torchrun_and_when_the_user_set_threads(monkeypatch):
    plan = plan_threads({0, 1}, 0, local_processes=2)
    assert not ThreadGovernor(plan).enabled
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert not ThreadGovernor(plan_threads({0, 1}, 0)).enabled
    assert not ThreadGovernor(plan_threads({0, 1}, 0), device_type="cuda").enabled


def test_governor_is_off_when_the_config_asks_for_fixed_threads():
    """train.adaptive_threads=false: exact resumes and reruns need a thread count that never follows the load."""
    cfg = make_config(["train.adaptive_threads=false"])
    assert cfg.train.adaptive_threads is False
    assert not ThreadGovernor(plan_threads({0, 1}, 0), adaptive=cfg.train.adaptive_threads).enabled
    assert ThreadGovernor(plan_threads({0, 1}, 0), adaptive=True).enabled == ("OMP_NUM_THREADS" not in os.environ)
