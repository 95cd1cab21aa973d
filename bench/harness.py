"""What every benchmark in bench/ shares: the machine description, interleaved timing, peak
memory of a variant measured in a fresh process, and the one-JSON-line-per-measurement output.

Scripts run as ``python bench/<name>.py``, so this directory (not the repository root) is on
sys.path; importing this module puts the root there too, so ``interp_jobs`` imports work
without installing the project. Heavy imports (torch) stay inside the functions that need them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Benchmarks never reach the network; a model or tokenizer lookup must fail rather than fetch.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' GGUF progress bars

CHILD_RESULT = "BENCH-CHILD-RESULT "  # prefix of the one stdout line a memory child reports
MIB = 1 << 20


# --- arguments ------------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    from subjects import DEFAULT_MODEL

    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--model",
        default=str(DEFAULT_MODEL),
        help="a .gguf file or a Hugging Face model directory (default: SmolLM2)",
    )
    p.add_argument(
        "--lens",
        default=None,
        help="a lens directory in SAELens's format (default: "
        "the shipped SmolLM2 lens, else a random lens made for this run)",
    )
    p.add_argument("--quick", action="store_true", help="few prompts and repeats (smoke test)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per variant")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's, one per core); on a machine whose "
        "load exceeds its cores, 1 gives far steadier figures",
    )
    # Internal: run one variant in this (fresh) process and report its peak memory.
    p.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    return p


def apply_threads(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)


# --- the machine ----------------------------------------------------------------------------


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine(loads: list[list[float]] | None = None) -> dict:
    """The CPU, how much of it this process may use, and how busy the machine was.

    ``load_average_range`` is the (min, max) 1-minute load seen between timed runs: on a shared
    machine it says how far to trust a ratio.
    """
    import torch

    ones = [load[0] for load in loads or []]
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": load_average(),
        "load_average_range": [min(ones), max(ones)] if ones else None,
    }


# --- output ---------------------------------------------------------------------------------


def emit(
    *,
    bench: str,
    measure: str,
    value: float,
    unit: str,
    baseline: tuple[str, float],
    ratio: float | None,
    ratio_of: str,
    goal: tuple[str, float] | None,
    model: dict,
    notes: str,
    loads: list[list[float]] | None = None,
    **extra,
) -> dict:
    """Print one measurement as one JSON line. ``goal`` is (">=" or "<=", bound) on the ratio."""
    line = {
        "bench": bench,
        "measure": measure,
        "value": sig(value),
        "unit": unit,
        "baseline": {"name": baseline[0], "value": sig(baseline[1])},
        "ratio": sig(ratio),
        "ratio_of": ratio_of,
        "goal": f"{goal[0]} {goal[1]}" if goal else None,
        "meets_goal": _meets(ratio, goal),
        "machine": machine(loads),
        "model": model,
        "notes": notes + _oversubscribed(),
        **extra,
    }
    print(json.dumps(line), flush=True)
    return line


def _oversubscribed() -> str:
    """A warning where torch's threads had to share cores with the machine's other work."""
    import torch

    load, cores, threads = os.getloadavg()[0], len(os.sched_getaffinity(0)), torch.get_num_threads()
    if threads < 2 or load <= cores:
        return ""
    return (
        f" The machine was oversubscribed (load {load:.1f} on {cores} cores) and torch ran "
        f"{threads} threads, which wait on each other when one is descheduled: figures are "
        "noisy; --threads 1 gives steadier ones."
    )


def _meets(ratio: float | None, goal: tuple[str, float] | None) -> bool | None:
    if goal is None or ratio is None:
        return None
    op, bound = goal
    return ratio >= bound if op == ">=" else ratio <= bound


def sig(value):
    """4 significant digits: enough for noisy timings, short lines."""
    return None if value is None else float(f"{value:.4g}")


def rounded(values: list[float]) -> list[float]:
    """Raw samples for the line, to 4 significant digits (a warm cache hit takes microseconds)."""
    return [sig(value) for value in values]


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


# --- timing ---------------------------------------------------------------------------------


@dataclass
class Timings:
    """Seconds per variant, repeat and unit, by wall clock and by this process's CPU clock."""

    wall: dict[str, list[list[float]]]
    cpu: dict[str, list[list[float]]]
    loads: list[list[float]]  # load averages before the first and after every repeat

    def typical(self, name: str, clock: str = "wall") -> float:
        """One typical pass over all units: per unit the median over repeats, summed."""
        samples = getattr(self, clock)[name]
        return sum(statistics.median(column) for column in zip(*samples, strict=True))

    def totals(self, name: str) -> list[float]:
        """Wall seconds of each repeat's whole pass."""
        return [sum(units) for units in self.wall[name]]


def interleaved(
    variants: dict[str, Callable[[object], object]], units: list, repeats: int
) -> Timings:
    """Time every variant on every unit, ``repeats`` times, interleaved at the unit level.

    On a shared machine the load drifts within seconds; running all variants on one unit
    (one batch) back to back puts each baseline run right next to the candidate's, so drift
    hits both alike, and the order rotates at every unit so no variant always runs first
    (after the others warmed the caches).
    """
    names = list(variants)
    wall = {name: [[0.0] * len(units) for _ in range(repeats)] for name in names}
    cpu = {name: [[0.0] * len(units) for _ in range(repeats)] for name in names}
    loads, turn = [load_average()], 0
    for rep in range(repeats):
        for i, unit in enumerate(units):
            first, turn = turn % len(names), turn + 1
            for name in names[first:] + names[:first]:
                start_wall, start_cpu = time.perf_counter(), time.process_time()
                variants[name](unit)
                wall[name][rep][i] = time.perf_counter() - start_wall
                cpu[name][rep][i] = time.process_time() - start_cpu
        loads.append(load_average())
    return Timings(wall, cpu, loads)


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratios(top: list[float], bottom: list[float]) -> list[float]:
    """Ratio within each repeat (runs interleaved in time): its spread shows the load noise."""
    return [round(t / b, 3) for t, b in zip(top, bottom, strict=True) if b]


# --- peak memory in a fresh process -----------------------------------------------------------


def _status_kib(key: str) -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def _reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0: ``5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure_peak(work: Callable[[], object]) -> dict:
    """Peak memory of ``work`` in this process, which has already loaded what it needs.

    ``peak_rss_mib`` is the process's lifetime high-water mark (ru_maxrss), load included; on a
    small model the load often sets it, so ``peak_increase_mib`` also gives the high-water mark
    during ``work`` alone minus the RSS just before it (the mark is reset first where the
    kernel allows, else it is null). torch's CPU allocator is invisible to tracemalloc, hence
    RSS.
    """
    import gc

    gc.collect()
    before_work_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reset = _reset_peak()
    rss_before = _status_kib("VmRSS")
    work()
    during = _status_kib("VmHWM") if reset else None
    lifetime = max(before_work_peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return {
        "peak_rss_mib": lifetime / 1024,
        "peak_increase_mib": None if during is None else (during - rss_before) / 1024,
        "rss_before_mib": rss_before / 1024,
    }


MEMORY_MEASURES = (
    (
        "peak_rss_mib",
        "peak RSS (ru_maxrss) of a fresh process per variant, its model load included",
    ),
    (
        "peak_increase_mib",
        "peak RSS while the variant ran minus the RSS just before it "
        "(kernel high-water mark reset first), a fresh process per variant",
    ),
)


QUICK_NOTE = (
    "--quick: few prompts, one repeat, memory measured in this process rather than a "
    "fresh one per variant; a smoke test, not a measurement. "
)


def memory_of_variants(
    script: str,
    args: argparse.Namespace,
    lens: str,
    variants: dict[str, Callable[[], object]],
    **more,
) -> dict[str, dict]:
    """Peak memory of each variant, each in its own fresh process (so one variant's freed
    memory cannot hide another's growth). --quick measures them here, one after another:
    three fresh interpreters importing torch and sae_lens would triple a smoke test's time."""
    if args.quick:
        return {name: measure_peak(work) for name, work in variants.items()}
    return run_children(
        script, {name: child_args(args, lens, memory_of=name, **more) for name in variants}
    )


def report_child(result: dict) -> None:
    print(CHILD_RESULT + json.dumps(result), flush=True)


def run_child(script: str, args: list[str], timeout: float = 900) -> dict:
    """Run ``script`` in a fresh interpreter and return the dict it reported."""
    return run_children(script, {"child": args}, timeout=timeout, parallel=False)["child"]


def run_children(
    script: str, jobs: dict[str, list[str]], *, timeout: float = 900, parallel: bool = True
) -> dict[str, dict]:
    """Run ``script`` once per job, each in a fresh interpreter; their reported dicts by job.

    Peak memory is a property of each process alone, so memory children may run side by side
    (they mostly wait on imports and loading); timing children must not (``parallel=False``).
    Output goes to temporary files, not pipes, so a chatty child cannot block on a full pipe.
    """
    results, running = {}, {}
    for name, args in jobs.items():
        running[name] = _start(script, args)
        if not parallel:
            results[name] = _finish(*running.pop(name), script, args, timeout)
    for name, started in running.items():
        results[name] = _finish(*started, script, jobs[name], timeout)
    return results


def _start(script: str, args: list[str]):
    # Closed by _finish once the process has ended; a with-block would close them too soon.
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, script, *args], cwd=ROOT, text=True, stdout=out, stderr=err
    )
    return process, out, err


def _finish(process, out, err, script: str, args: list[str], timeout: float) -> dict:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    with out, err:
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    for line in reversed(stdout.splitlines()):
        if line.startswith(CHILD_RESULT):
            return json.loads(line[len(CHILD_RESULT) :])
    raise RuntimeError(
        f"{Path(script).name} {' '.join(args)} exited {process.returncode} "
        f"without a result:\n{stdout[-2000:]}\n{stderr[-4000:]}"
    )


def child_args(args: argparse.Namespace, lens: str, **more) -> list[str]:
    """The command line that repeats this run's subjects in a child process."""
    out = ["--model", args.model, "--lens", lens]
    if args.quick:
        out.append("--quick")
    if args.threads:
        out += ["--threads", str(args.threads)]
    for key, value in more.items():
        out += [f"--{key.replace('_', '-')}", str(value)]
    return out
