"""How many CPU threads a decoding step runs on.

A decode step on a CPU is a few hundred small operations; with T threads each parallel one ends
at a barrier that waits for all T. When another program keeps a core busy, the operating system
deschedules one of our threads for a whole time slice now and then and every barrier waits for
it: on the 2-core development machine with other work running a NAR decode took 10x longer on 2
threads than on 1 (reports/speed_cpu.md), and NAR, whose steps are fewer and wider, lost more
than raster. So a decode asks, when it starts, how many cores are free (cores this process may
use minus the other programs' runnable threads), and never runs on more threads than that; and a
step with few query rows (batch x inputs, CFG halves counted) runs on one thread, where splitting
it costs more than it gains.

torch.set_num_threads sets OpenMP's thread count of the calling thread only, so a decode in its
own thread (the app's live view) does not change the count of a training thread beside it.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch


@dataclass
class ThreadPolicy:
    """adaptive=False: every step on torch's current thread count (as before this policy)."""
    adaptive: bool = True
    min_rows_per_thread: int = 8   # a step with fewer query rows per thread than this uses fewer threads


POLICY = ThreadPolicy()


def set_policy(policy: ThreadPolicy) -> None:
    """Replace the process's policy (the benchmark's --fixed-threads)."""
    global POLICY
    POLICY = policy


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _running_threads_of_this_process() -> int:
    count = 0
    for stat in Path("/proc/self/task").glob("*/stat"):
        try:
            # the state follows the ")" that ends the command name
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "R":
                count += 1
        except (OSError, IndexError):
            pass
    return count


def other_runnable_threads() -> int:
    """Threads of other programs that are running or ready to run now (Linux; 0 elsewhere): the
    kernel's count of runnable threads (/proc/loadavg) less this process's own."""
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return 0
    return max(0, running - max(1, _running_threads_of_this_process()))


def decode_threads(requested: Optional[int] = None, policy: Optional[ThreadPolicy] = None) -> int:
    """Threads a decode starting now may use: the requested count (default torch's current one),
    at most the cores no other program is using (at least 1)."""
    policy = policy or POLICY
    requested = requested or torch.get_num_threads()
    if not policy.adaptive:
        return requested
    return max(1, min(requested, usable_cores() - other_runnable_threads()))


def threads_for_rows(budget: int, rows: int, policy: Optional[ThreadPolicy] = None) -> int:
    """Threads for a step of `rows` query rows within a decode's budget."""
    policy = policy or POLICY
    if not policy.adaptive:
        return budget
    return max(1, min(budget, rows // max(1, policy.min_rows_per_thread)))


@contextmanager
def running_on(threads: Optional[int]) -> Iterator[None]:
    """torch's thread count of this thread set to `threads` inside the block, restored after
    (None: left as it is)."""
    before = torch.get_num_threads()
    threads = threads or before
    if threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads != before:
            torch.set_num_threads(before)
