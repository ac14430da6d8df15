"""CPU runtime settings that make training faster without changing a single result.

glibc's malloc serves large blocks (above a threshold that starts at 128 KiB) with fresh mmap'd pages and
hands freed memory back to the kernel. A training step frees and re-allocates the same activation-sized
tensors thousands of times, so every step pays for page faults and for the kernel zeroing those pages. In
the seed CNN on CIFAR-10 (batch 64, fp32, 2 cores) a training step took about 5,000 minor page faults,
and none once blocks up to 32 MiB stay on the heap and the heap is not trimmed below 256 MiB (what
jemalloc or tcmalloc, which Intel's PyTorch CPU tuning guide recommends preloading, achieve by other
means). That model then trains about 22 % faster in fp32 (benchmarks/results/throughput-malloc.md); bf16
and the small dense AE showed no reliable change. The arithmetic is untouched, so results stay
bit-identical; the process just keeps up to a few hundred MB of freed memory for reuse.

Set AECLASS_MALLOC_TUNING=0 to leave the allocator alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit for this parameter on 64-bit systems
TRIM_THRESHOLD = 256 << 20

_applied: str | None = None


def tune_allocator() -> str | None:
    """Apply the malloc settings above once per process (glibc on Linux only) and describe them; None when
    not applied (another C library or OS, or AECLASS_MALLOC_TUNING=0)."""
    global _applied
    if _applied is not None or os.environ.get("AECLASS_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return _applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1:
        _applied = f"glibc mallopt: mmap_threshold {MMAP_THRESHOLD >> 20} MiB, trim_threshold {TRIM_THRESHOLD >> 20} MiB"
    return _applied


def available_cpus() -> int:
    """The CPUs this process may actually use: its affinity mask (taskset, a batch scheduler's binding), capped
    by a cgroup CPU quota (a container's --cpus, a systemd slice), rounded down and at least 1. torch's own
    default counts the machine's cores, so on a shared or constrained machine it starts more threads than it
    gets, and they wait on each other at every parallel region."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        n = min(n, max(1, int(quota)))
    return max(1, n)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _cgroup_cpu_quota() -> float | None:
    """CPUs' worth of time the cgroup may use (cgroup v2 cpu.max, else v1 cfs quota / period); None = no limit."""
    try:
        quota, period = _read("/sys/fs/cgroup/cpu.max").split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(_read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"))
        period = int(_read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


BUSY_SAMPLE_SECONDS = 0.15  # how long the start-up check watches the machine: 15 jiffies per core at 100 Hz
BUSY_THRESHOLD = 0.5        # other processes' CPU use, in cores, from which the machine counts as shared


def _busy_jiffies() -> tuple[int, int] | None:
    """(all CPUs' busy jiffies, this process's jiffies) from /proc; None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
        return busy, int(own[11]) + int(own[12])  # utime + stime
    except (OSError, ValueError, IndexError):
        return None


def competing_load(seconds: float = BUSY_SAMPLE_SECONDS) -> float | None:
    """Cores' worth of CPU time that other processes used over `seconds` (None where /proc cannot tell)."""
    import time
    a = _busy_jiffies()
    if a is None:
        return None
    time.sleep(seconds)
    b = _busy_jiffies()
    if b is None:
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return max(0.0, ((b[0] - a[0]) - (b[1] - a[1])) / hz / seconds)


def is_command_line() -> bool:
    argv = list(getattr(sys, "orig_argv", sys.argv))
    console = bool(sys.argv) and os.path.basename(sys.argv[0]) in ("aeclass", "aeclass.exe")
    return console or any(a == "-m" and b in ("aeclass", "aeclass.cli") for a, b in zip(argv, argv[1:]))


def choose_wait_policy(force: bool = False) -> str | None:
    """For the command line (or `force`), before torch is imported: OMP_WAIT_POLICY=PASSIVE when other processes
    are using at least BUSY_THRESHOLD cores as aeclass starts; otherwise OpenMP's default, unless the user chose a
    policy. Returns what was decided, in words (also in $AECLASS_WAIT_POLICY for run.json), or None.

    Why decide at start: libgomp reads the policy once, when torch loads. Its default, spinning for a while after
    each parallel region, is the fastest on an idle machine; beside one busy process on 2 cores the spinning
    threads take the core the working thread needs and training keeps 15-30 % of its speed, while PASSIVE keeps
    about half, the fair share. PASSIVE always costs 25-65 % on an idle machine (small models run thousands of
    short parallel regions, and every wake-up is a system call), so it is only worth paying where there is a
    neighbour (benchmarks/shared_machine.py). The wait policy never changes the arithmetic: results stay
    bit-identical whatever the check decides, unlike adapting the thread count. A load that starts later is not
    seen: set OMP_WAIT_POLICY=PASSIVE yourself on a machine whose load comes and goes."""
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules or not (force or is_command_line()):
        return None
    load = competing_load()
    if load is None:
        return None
    if load >= BUSY_THRESHOLD:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        decided = f"PASSIVE (other processes used {load:.1f} cores at start)"
    else:
        decided = f"default (other processes used {load:.1f} cores at start)"
    os.environ["AECLASS_WAIT_POLICY"] = decided
    return decided
