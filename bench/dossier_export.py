"""Dossier export of a large release against rendering the same document without figures.

    .venv/bin/python bench/dossier_export.py [--discoveries N] [--repeats N] [--quick] [--keep]

One fresh SQLite database in a temporary directory (never a shared one). A real release is
built the way the tests build it (tests/dossier/scenario.py): a tiny seeded Llama and a lens,
registered and validated by the worker's jobs; a policy of six check kinds plus
``--discoveries`` more feature_discovery checks (default 19, one SVG figure each: 25 counting
runs, 26 check runs, 25 figures);
every check run by interp_jobs.worker.tasks.run_check; a re-run; two approvals and a waiver
signed through the API.

Timed, interleaved, ``--repeats`` times (default 3):

- ``export``: what ``manage.py export_dossier`` does: read the records bound to a signed
  checkpoint with an inclusion proof per event, hash and zip the bundle (every evidence file),
  render the PDF/A-3b with every figure and the manifest attached, record the ledger event.
  Goal: <= 15 s.
- baseline ``html_without_figures``: the same snapshot's HTML, figures left out, rendered to
  PDF/A-3b by the same code (no bundle, no ledger). ``ratio = export / baseline``: what the
  figures, the bundle and the records cost on top of typesetting the text.

One JSON line per measurement (see README.md, "Reading a line").
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness

BENCH = "dossier_export"
GOAL_SECONDS = 15.0


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--discoveries", type=int, default=None, help="extra discovery checks (19)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs of each (3)")
    p.add_argument("--quick", action="store_true", help="a small release, one repeat (smoke)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()
    args.discoveries = args.discoveries or (2 if args.quick else 19)
    args.repeats = args.repeats or (1 if args.quick else 3)
    return args


def setup_django(workdir: Path) -> None:
    for name in list(os.environ):
        if name.startswith("ASSAY_") or name == "DATABASE_URL":
            del os.environ[name]
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "ASSAY_SECRET_KEY": secrets.token_urlsafe(50),
            "ASSAY_HTTPS": "false",  # the scenario signs through the API's test client
            "ASSAY_VAR_DIR": str(workdir),
            "ASSAY_MODEL_STORE": str(workdir / "models"),
            "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
            "ASSAY_LOG_LEVEL": "WARNING",
        }
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def build(workdir: Path, discoveries: int):
    from django.db import transaction

    from tests.dossier import scenario

    store = workdir / "models"
    store.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # on_commit callbacks would enqueue the check runs on the broker: the scenario runs them.
    with transaction.atomic():
        who, release = scenario.build(store, extra_discoveries=discoveries)
    return who, release, time.perf_counter() - started


def time_export(who, release, out: Path) -> tuple[float, float, object]:
    from audits.dossier import actions

    started, cpu = time.perf_counter(), time.process_time()
    export = actions.export_dossier(actor=who.auditor, release=release, out_dir=out)
    return time.perf_counter() - started, time.process_time() - cpu, export


def time_baseline(release) -> tuple[float, float]:
    """The same document's HTML without figures, rendered to PDF/A-3b."""
    from audits.dossier import bundle, collect, render

    snap = collect.snapshot(release.pk, dossier_id="baseline")
    listing = bundle.manifest(snap, bundle.files_of(snap))
    started, cpu = time.perf_counter(), time.process_time()
    html = render.html(
        snap, manifest_sha256="0" * 64, read=bundle.read_evidence, with_figures=False
    )
    render.pdf(html, manifest=listing, dossier_id="baseline")
    return time.perf_counter() - started, time.process_time() - cpu


def counts(release, export) -> dict:
    import pypdf

    from audits import queries
    from audits.dossier import render
    from audits.models import Evidence

    counting = queries.counting_runs(release)
    figures = Evidence.objects.filter(check_run__in=counting, media_type__in=render.FIGURE_TYPES)
    return {
        "check_runs": release.check_runs.count(),
        "counting_runs": len(counting),
        "figures_embedded": figures.count(),
        "pages": len(pypdf.PdfReader(export.pdf_path).pages),
        "pdf_bytes": export.pdf_size,
        "bundle_bytes": export.bundle_size,
    }


def main() -> None:
    args = arguments()
    workdir = Path(tempfile.mkdtemp(prefix="assay-bench-dossier-"))
    try:
        setup_django(workdir)
        who, release, build_s = build(workdir, args.discoveries)
        loads: list = []
        exports: list[float] = []
        baselines: list[float] = []
        cpu = {"export": [], "baseline": []}
        export = None
        for repeat in range(args.repeats):
            order = ("export", "baseline") if repeat % 2 == 0 else ("baseline", "export")
            for variant in order:
                loads.append(harness.load_average())
                if variant == "export":
                    seconds, used, export = time_export(who, release, workdir / "out" / str(repeat))
                    exports.append(seconds)
                    cpu["export"].append(used)
                else:
                    seconds, used = time_baseline(release)
                    baselines.append(seconds)
                    cpu["baseline"].append(used)
        value, baseline = statistics.median(exports), statistics.median(baselines)
        facts = counts(release, export)
        emit(
            value,
            baseline,
            facts,
            loads,
            args,
            exports=exports,
            baselines=baselines,
            build_s=build_s,
            cpu=cpu,
        )
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def emit(value, baseline, facts, loads, args, **extra) -> None:
    import json

    ones = [load[0] for load in loads]
    line = {
        "bench": BENCH,
        "measure": "export_wall_time",
        "value": harness.sig(value),
        "unit": "s",
        "baseline": {"name": "html_without_figures_to_pdf", "value": harness.sig(baseline)},
        "ratio": harness.sig(value / baseline if baseline else None),
        "ratio_of": "value / baseline (lower is better)",
        "goal": f"value <= {GOAL_SECONDS} s",
        "meets_goal": value <= GOAL_SECONDS,
        "machine": {
            "cpu": harness._cpu_model(),
            "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)),
            "python": sys.version.split()[0],
            "load_average": harness.load_average(),
            "load_average_range": [min(ones), max(ones)] if ones else None,
        },
        "release": facts,
        "cpu_seconds": {
            "export": harness.sig(statistics.median(extra["cpu"]["export"])),
            "baseline": harness.sig(statistics.median(extra["cpu"]["baseline"])),
            "ratio_by_cpu_time": harness.sig(
                statistics.median(extra["cpu"]["export"])
                / statistics.median(extra["cpu"]["baseline"])
            ),
        },
        "seconds": {
            "export": harness.rounded(extra["exports"]),
            "baseline": harness.rounded(extra["baselines"]),
            "building_the_release": harness.sig(extra["build_s"]),
        },
        "notes": ("--quick: numbers mean nothing; " if args.quick else "")
        + "medians over interleaved repeats; tiny seeded Llama and a random lens (the "
        "figures' size, not what the model learned, sets the cost)",
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
