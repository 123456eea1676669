"""Thread counts from the cores this process may really use, and OpenMP threads that sleep when idle.

On a CPU run three kinds of workers share the cores: torch's intra-op threads (OpenMP), its inter-op pool, and
the DataLoader's worker processes; under torchrun, one set per local process. The plan:

  cores           len(os.sched_getaffinity(0)): what taskset, a container or a batch system gives this
                  process, not os.cpu_count()
  per process     the cores split between torchrun's local processes (LOCAL_WORLD_SIZE)
  torch threads   the cores per process (OMP_NUM_THREADS, when set, wins)
  loader workers  the config's num_workers, at most the cores per process - 1 on CPU (a worker takes its core
                  from the compute threads); on a GPU the main process mostly waits, so up to the cores
  inter-op        1: annotassist runs nothing on torch's inter-op pool

OpenMP threads that wait for work spin (GNU OpenMP: 300,000 iterations, up to about a millisecond, before they
sleep). When another process wants the same cores, a spinning thread holds a core that the other process's
thread needs, every parallel region waits for a descheduled thread, and a step of many small regions becomes
7-16x slower instead of 2x (measured: benchmarks/train_speed.py, NOTES-speed.md). Two remedies, both here:
  - `prepare_openmp()` shortens the spin to GOMP_SPINCOUNT=3000 (a few microseconds) unless the user chose a
    policy; OpenMP reads it once, when torch loads, so annotassist/__init__.py calls it before any torch import.
    Never spinning (OMP_WAIT_POLICY=PASSIVE) costs up to 2x on a quiet machine at the demo's small shapes.
  - `ThreadGovernor` watches how much of this process's cores other processes use (/proc/stat) and lowers
    torch's thread count while they are busy, back to the plan when they stop: one OpenMP thread per free core
    never waits for a descheduled partner.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass


SPINCOUNT = "3000"


def prepare_openmp(environ=os.environ) -> bool:
    """Shorten OpenMP's spin-wait, if nobody chose a wait policy. True if the setting can still take effect
    (torch not loaded yet)."""
    if "OMP_WAIT_POLICY" not in environ and "GOMP_SPINCOUNT" not in environ:
        environ["GOMP_SPINCOUNT"] = SPINCOUNT
    return "torch" not in sys.modules


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadPlan:
    cores: int  # CPUs this process may use
    local_processes: int  # processes on this machine sharing them (torchrun's LOCAL_WORLD_SIZE)
    torch_threads: int
    interop_threads: int
    loader_workers: int
    wait_policy: str  # the OpenMP wait policy in force ("default": spinning, as OpenMP does unless told)

    def describe(self) -> str:
        """One line for the start-up message, e.g. '2 cores available, 2 torch threads, 1 loader worker'."""
        share = f" shared by {self.local_processes} processes" if self.local_processes > 1 else ""
        workers = f"{self.loader_workers} loader worker{'s' if self.loader_workers != 1 else ''}"
        return (f"{self.cores} core{'s' if self.cores != 1 else ''} available{share}, {self.torch_threads} torch "
                f"thread{'s' if self.torch_threads != 1 else ''}, {workers}, OpenMP wait policy "
                f"{self.wait_policy.lower()}")


def plan_threads(cores: int | set | list, requested_workers: int, device_type: str = "cpu",
                 local_processes: int = 1, omp_num_threads: str | None = None,
                 wait_policy: str | None = None) -> ThreadPlan:
    """The thread counts for `cores` (a count or an affinity set), shared by `local_processes` processes."""
    n = cores if isinstance(cores, int) else len(cores)
    n = max(1, n)
    local = max(1, local_processes)
    per_process = max(1, n // local)
    if device_type == "cpu":
        workers = min(max(0, requested_workers), per_process - 1)
    else:
        workers = min(max(0, requested_workers), per_process)
    threads = per_process
    if omp_num_threads:
        try:
            threads = max(1, int(omp_num_threads))
        except ValueError:
            pass
    return ThreadPlan(n, local, threads, 1, workers, wait_policy or "default")


def current_plan(requested_workers: int, device_type: str = "cpu") -> ThreadPlan:
    """The plan for this process, from its affinity, torchrun's environment and OMP_* variables."""
    env = os.environ
    policy = env.get("OMP_WAIT_POLICY") or ("spincount " + env["GOMP_SPINCOUNT"] if "GOMP_SPINCOUNT" in env
                                            else None)
    return plan_threads(available_cores(), requested_workers, device_type,
                        int(env.get("LOCAL_WORLD_SIZE", "1") or 1), env.get("OMP_NUM_THREADS"), policy)


def apply(plan: ThreadPlan) -> ThreadPlan:
    """Set torch's thread counts to the plan (the inter-op count only if its pool has not started yet)."""
    import torch

    if torch.get_num_threads() != plan.torch_threads:
        torch.set_num_threads(plan.torch_threads)
    if torch.get_num_interop_threads() != plan.interop_threads:
        try:
            torch.set_num_interop_threads(plan.interop_threads)
        except RuntimeError:  # already started (some parallel work ran): leave it
            pass
    return plan


def configure(requested_workers: int, device_type: str = "cpu") -> ThreadPlan:
    """Plan and apply: what the trainer and the scoring pass call before they build their loaders."""
    return apply(current_plan(requested_workers, device_type))


# -- fewer threads while other processes use the cores --------------------------------------------------------

def threads_for_load(planned: int, cores: int, foreign_cores: float) -> int:
    """Torch threads for `cores` of which other processes keep `foreign_cores` busy: one per core they leave
    free (at least 1, at most the plan). Half a core or less of foreign load is ignored."""
    free = cores - foreign_cores
    return max(1, min(planned, int(free + 0.5)))


def _cpu_jiffies(cpus: set[int]) -> tuple[int, int]:
    """(busy, total) jiffies of the given CPUs since boot, from /proc/stat."""
    busy = total = 0
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line[3] == " ":
                continue
            name, *vals = line.split()
            if int(name[3:]) not in cpus:
                continue
            v = [int(x) for x in vals]
            total += sum(v[:8])
            busy += sum(v[:8]) - v[3] - v[4]  # all but idle and iowait (steal counts: the host took it)
    return busy, total


def _tree_jiffies(pid: int) -> int:
    """CPU jiffies of this process (all its threads, and its reaped children) and of its live children (the
    DataLoader's workers)."""
    def fields(p) -> list[str]:
        with open(f"/proc/{p}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()

    own = fields(pid)
    total = sum(int(x) for x in own[11:15])  # utime stime cutime cstime
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != pid:
            try:
                st = fields(entry)
            except OSError:  # gone meanwhile
                continue
            if int(st[1]) == pid:  # its parent is us
                total += int(st[11]) + int(st[12])
    return total


class ThreadGovernor:
    """Every `interval` seconds (checked from `tick()`, once per training step), measure the load other
    processes put on this process's cores and set torch's thread count with `threads_for_load`. Off under
    torchrun (the local ranks are each other's load by design), off on a GPU, off without /proc, and off when
    `adaptive` is false (train.adaptive_threads): a thread count that follows the load changes the order of
    float sums, so a resumed or repeated run would no longer match bit for bit."""

    def __init__(self, plan: ThreadPlan, device_type: str = "cpu", interval: float = 2.0, adaptive: bool = True):
        self.plan, self.interval = plan, interval
        self.threads = plan.torch_threads
        self.foreign = 0.0
        self.changes = 0
        try:
            self.cpus = os.sched_getaffinity(0)
            self.reset()
            self.enabled = adaptive and device_type == "cpu" and plan.local_processes == 1 and plan.torch_threads > 1 \
                and "OMP_NUM_THREADS" not in os.environ
        except (AttributeError, OSError, ValueError, IndexError):
            self.enabled = False

    def _sample(self) -> tuple:
        return (time.monotonic(), *_cpu_jiffies(self.cpus), _tree_jiffies(os.getpid()))

    def reset(self) -> None:
        """Start a new measuring window now."""
        self._last = self._sample()

    def tick(self, force: bool = False) -> int | None:
        """The new thread count if it changed, else None (`force`: measure even if the window is short)."""
        if not self.enabled or (not force and time.monotonic() - self._last[0] < self.interval):
            return None
        now = self._sample()
        busy, total, own = (now[i] - self._last[i] for i in (1, 2, 3))
        self._last = now
        if total <= 0:
            return None
        self.foreign = max(0.0, (busy - own) / (total / len(self.cpus)))
        want = threads_for_load(self.plan.torch_threads, len(self.cpus), self.foreign)
        if want == self.threads:
            return None
        import torch

        torch.set_num_threads(want)
        self.threads = want
        self.changes += 1
        return want
