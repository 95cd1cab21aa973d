"""Start-up of the second check against the first in one worker process (the model cache).

    .venv/bin/python bench/worker_cache.py [--model PATH] [--lens PATH] [--quick] [--repeats N]

A worker runs a check by calling the check module's ``run(context)``, which loads the model and
lens through ``interp_jobs.engine.loading.cache`` (a per-process cache bounded by memory). Each
repeat starts a fresh Python process, imports what a worker has imported once it is up
(torch, transformers, sae_lens, the check modules: timed, but outside the figures), then runs
the same small real check twice, as two consecutive tasks would:

    start-up = inputs.load_model_for(context) + inputs.load_lens_for(context)
    check    = start-up + feature_activation_audit.run(context)   (end to end)

The first check finds the cache empty and loads the model and lens; the second finds them
cached. Goal: the second start-up is at least 5 times faster than the first. The budget is
the worker's default (ASSAY_WORKER_CACHE_MB if set, as the runner reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import harness
import subjects

BENCH = "worker_cache"
GOAL = (">=", 5.0)
LENS_NAME = "bench"
AXES = ("weapons", "cyber", "neutral")
FIRST = "first check in a fresh worker process (empty cache: loads model and lens)"


def arguments():
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--worker-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    return args


def catalog(lens_path: str) -> tuple:
    from interp_jobs.checks.base import CatalogFeature

    d_sae = json.loads((Path(lens_path) / "cfg.json").read_text())["d_sae"]
    indices = sorted(random.Random(0).sample(range(d_sae), min(4, d_sae)))  # noqa: S311 - seeded sampling, not cryptography
    return tuple(
        CatalogFeature(LENS_NAME, index, f"bench feature {index}", AXES[i % 2])
        for i, index in enumerate(indices)
    )


def make_context(args, check):
    """A CheckContext as the runner builds it (tests/checks/conftest.py make_context)."""
    from interp_jobs.checks.base import CheckContext, LensRef, ModelRef

    params = {"probe_axes": list(AXES), "n_prompts": 2 if args.quick else 4}
    thresholds = {"max_firing_rate_on_neutral": 0.5, "min_firing_rate_on_own_axis": 0.5}
    return CheckContext(
        model=ModelRef(
            path=args.model,
            format=subjects.model_format(args.model),
            weights_digest="",
            file_digests={},
            name=Path(args.model).name,
        ),
        lenses=(LensRef(path=args.lens, digest="", name=LENS_NAME),),
        catalog=catalog(args.lens),
        parameters=check.Parameters.parse(params, what="parameters"),
        thresholds=check.Thresholds.parse(thresholds, what="thresholds"),
    )


def one_check(check, context) -> dict:
    from interp_jobs.checks import inputs

    start = time.perf_counter()
    loaded = inputs.load_model_for(context)
    inputs.load_lens_for(context, None, loaded)
    started = time.perf_counter()
    result = check.run(context)
    return {
        "startup_s": started - start,
        "check_s": time.perf_counter() - start,
        "verdict": result.verdict,
    }


def check_pair(args) -> dict:
    """In a fresh worker process: two consecutive checks on the same model and lens."""
    start = time.perf_counter()
    import sae_lens  # noqa: F401 - a running worker has these imported already
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from interp_jobs.checks import feature_activation_audit as check
    from interp_jobs.engine.loading import cache

    harness.apply_threads(args)
    if os.environ.get("ASSAY_WORKER_CACHE_MB"):
        cache.set_budget(int(os.environ["ASSAY_WORKER_CACHE_MB"]) << 20)
    imported = time.perf_counter() - start
    context = make_context(args, check)
    first, second = one_check(check, context), one_check(check, context)
    return {
        "import_s": imported,
        "first": first,
        "second": second,
        "stats": dict(cache.stats),
        "cached_bytes": cache.cached_bytes(),
        "budget_bytes": _budget_bytes(),
    }


def _budget_bytes() -> int:
    from interp_jobs.engine.loading import cache

    mib = os.environ.get("ASSAY_WORKER_CACHE_MB")
    return int(mib) << 20 if mib else cache.DEFAULT_BUDGET_BYTES


def main() -> None:
    args = arguments()
    if args.worker_child:
        harness.report_child(check_pair(args))
        return
    # Only a random lens needs the model's shape (reading it from a GGUF costs seconds).
    lens_ref = subjects.resolve_lens(args, lambda: subjects.model_shape(args.model))
    runs, loads = fresh_processes(args, lens_ref.path)
    harness.apply_threads(args)  # so the lines report the children's thread count
    ctx = {
        "model": subjects.describe(args.model, lens_ref),
        "loads": loads,
        "runs": runs,
        "notes_tail": _notes_tail(runs, lens_ref, args),
    }
    emit_speedup("startup_s", "check_startup_s", GOAL, ctx)
    emit_speedup("check_s", "check_end_to_end_s", None, ctx)
    emit_cache(ctx)


def fresh_processes(args, lens: str) -> tuple[list[dict], list[list[float]]]:
    """One check pair per fresh process, one process after another (these are timings).

    --quick runs its single pair in this process, which is fresh too: nothing heavy has been
    imported or loaded here yet (the lens was given, or made without loading the model).
    """
    runs, loads = [], [harness.load_average()]
    if args.quick:
        args.lens = lens
        return [check_pair(args)], [*loads, harness.load_average()]
    for _ in range(args.repeats):
        runs.append(
            harness.run_child(__file__, [*harness.child_args(args, lens), "--worker-child"])
        )
        loads.append(harness.load_average())
    return runs, loads


def _notes_tail(runs: list[dict], lens_ref, args) -> str:
    imported = harness.median([run["import_s"] for run in runs])
    verdicts = sorted({run[k]["verdict"] for run in runs for k in ("first", "second")})
    return (
        f"Check: feature_activation_audit on {', '.join(AXES)} probes, 4 catalog features "
        f"(verdicts {verdicts}). Imports before the first check ({imported:.1f} s median) "
        "are outside the figures; the model file was in the OS page cache (a first start "
        "after a reboot reads it from disk as well). "
        + subjects.lens_note(lens_ref, args.model)
        + (" --quick: one pair, in this process, few prompts; a smoke test." if args.quick else "")
    )


def emit_speedup(key: str, measure: str, goal, ctx: dict) -> None:
    runs = ctx["runs"]
    first = [run["first"][key] for run in runs]
    second = [run["second"][key] for run in runs]
    value, base = harness.median(second), harness.median(first)
    what = (
        "model + lens load through the worker cache"
        if key == "startup_s"
        else "start-up + feature_activation_audit.run(context), end to end"
    )
    harness.emit(
        bench=BENCH,
        measure=measure,
        value=value,
        unit="s",
        baseline=(FIRST, base),
        ratio=harness.ratio(base, value),
        ratio_of="baseline / value (speed-up of the second check; higher is better)",
        goal=goal,
        model=ctx["model"],
        loads=ctx["loads"],
        notes=(
            f"Second check in the same process: {what}; median over {len(runs)} fresh "
            "processes. " + ctx["notes_tail"]
        ),
        seconds={"first": harness.rounded(first), "second": harness.rounded(second)},
        paired_ratios=harness.paired_ratios(first, second),
    )


def emit_cache(ctx: dict) -> None:
    last = ctx["runs"][-1]
    value, budget = last["cached_bytes"] / harness.MIB, last["budget_bytes"] / harness.MIB
    harness.emit(
        bench=BENCH,
        measure="cached_mib",
        value=value,
        unit="MiB",
        baseline=("the cache's memory budget", budget),
        ratio=harness.ratio(value, budget),
        ratio_of="value / baseline (share of the budget in use)",
        goal=None,
        model=ctx["model"],
        loads=ctx["loads"],
        notes=(
            "cache.cached_bytes() after the two checks (parameters and buffers of the "
            "cached model and lens) and cache.stats: the first check misses model and "
            "lens once each, every later lookup hits. " + ctx["notes_tail"]
        ),
        cache_stats=last["stats"],
        cached_bytes=last["cached_bytes"],
    )


if __name__ == "__main__":
    main()
