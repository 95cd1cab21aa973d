"""The demo's stages: one line each, with the wall time and the CPU time spent on it.

CPU time is the demo process's own (merging a model, signing) plus the worker's: the worker
process and its pool children, read from /proc (utime + stime, and the times of children it
has reaped). On a quiet machine with two cores the wall time of a check is about its CPU time
divided by the cores torch uses, so the CPU time is what says how long a stage takes when the
machine is shared with other work (the wall time then says more about the neighbours).
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields after the command name


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of a process, its live descendants and the children it has reaped."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    # fields[11..14]: utime, stime, cutime, cstime (proc(5) fields 14-17), in clock ticks
    own = sum(int(v) for v in fields[11:15]) / CLOCK_TICKS
    return own + sum(process_tree_cpu(child) for child in _children(pid))


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Stages:
    """``with stages.stage(name, what): ...`` prints one line when the stage ends."""

    def __init__(self, worker_pid: int | None, write: Callable[[str], None]):
        self.worker_pid = worker_pid
        self.write = write
        self.records: list[dict] = []
        self._notes: list[str] = []

    def _cpu(self) -> float:
        return own_cpu() + (process_tree_cpu(self.worker_pid) if self.worker_pid else 0.0)

    def note(self, text: str) -> None:
        """A detail printed under the stage's line."""
        self._notes.append(text)

    @contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        self._notes = []
        started, cpu = time.monotonic(), self._cpu()
        number = len(self.records) + 1
        yield
        wall, spent = time.monotonic() - started, self._cpu() - cpu
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        self.records.append(
            {
                "stage": name,
                "what": what,
                "wall_seconds": round(wall, 1),
                "cpu_seconds": round(spent, 1),
                "load_average_1min_at_end": None if load is None else round(load, 2),
            }
        )
        self.write(f"[{number}] {name}: {what} ({_duration(wall)} wall, {_duration(spent)} CPU)")
        for text in self._notes:
            self.write(f"    {text}")


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"
