"""Throughput of transcoder training against a bare forward pass over the same tokens.

    .venv/bin/python bench/transcoder_training.py [--model PATH] [--quick] [--repeats N]

The candidate is the fit that ``python -m interp_jobs.engine.transcoder_training`` runs:
``transcoder_training.fit`` (sparsify's Trainer, every layer's MLP at once, the shipped
settings: width 1024, k 32, 4 rows of 256 tokens per step, AuxK), trainer set-up included, on
rows packed from the training mix. The baseline, timed in the same run and interleaved with
it, is a bare forward pass of the same model over the same rows in the same batches (the base
model without the LM head, as the trainer runs it, under inference mode). ``ratio = training
tokens/s / forward tokens/s``; goal (issue 10, item 7): **at least 0.3**. ``--lens`` is not
used (a line says so when one is given).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

import harness
import subjects

BENCH = "transcoder_training"
TRAIN, FORWARD = "training", "forward"
BASELINE_NAME = "bare forward pass over the same tokens (base model, inference mode)"


def arguments():
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=None, help="training rows per repeat")
    args = p.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.rows = args.rows or (4 if args.quick else 16)
    return args


def setup(args) -> dict:
    import torch

    from interp_jobs.engine import transcoder_training as training

    loaded = subjects.load(args.model)
    settings = training.TranscoderSettings()
    if args.quick:
        settings = training.TranscoderSettings(width=64, k=8, seq_len=32, batch_sequences=4)
    mix, _ = training.training_mix()
    docs = training.training_documents(mix, settings.safety_repeats)
    rows = training.pack(
        loaded, docs, seq_len=settings.seq_len, seed=0, n_sequences=args.rows
    ).tokens
    torch.manual_seed(0)
    return {"loaded": loaded, "settings": settings, "rows": rows, "training": training}


def variants(s: dict) -> dict:
    import torch

    loaded, rows, settings = s["loaded"], s["rows"], s["settings"]
    base = getattr(loaded.model, "base_model", loaded.model)

    def train(_unit=None):
        work = Path(tempfile.mkdtemp(prefix="assay-bench-sparsify-"))
        try:
            # sparsify prints its set-up to stdout, which carries only this script's JSON lines
            with contextlib.redirect_stdout(sys.stderr):
                s["training"].fit(loaded, rows, settings, 0, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def forward(_unit=None):
        with torch.inference_mode():
            for start in range(0, len(rows), settings.batch_sequences):
                base(input_ids=rows[start : start + settings.batch_sequences], use_cache=False)

    return {TRAIN: train, FORWARD: forward}


def main() -> None:
    args = arguments()
    harness.apply_threads(args)
    if args.memory_of:
        harness.report_child(harness.measure_peak(variants(setup(args))[args.memory_of]))
        return
    s = setup(args)
    runs = variants(s)
    runs[FORWARD]()  # warm-up
    timings = harness.interleaved(runs, [None], args.repeats)
    tokens = int(s["rows"].numel())
    train_rate = tokens / timings.typical(TRAIN)
    forward_rate = tokens / timings.typical(FORWARD)
    model = _describe(args.model, s)
    notes = _notes(args, s)
    harness.emit(
        bench=BENCH,
        measure="throughput_vs_forward",
        value=train_rate,
        unit="tokens/s",
        baseline=(BASELINE_NAME, forward_rate),
        ratio=harness.ratio(train_rate, forward_rate),
        ratio_of="training / baseline (higher is better)",
        goal=(">=", 0.3),
        model=model,
        notes=notes,
        loads=timings.loads,
        seconds={name: harness.rounded(timings.totals(name)) for name in (TRAIN, FORWARD)},
        paired_ratios=harness.paired_ratios(timings.totals(FORWARD), timings.totals(TRAIN)),
        ratio_by_cpu_time=harness.sig(
            harness.ratio(timings.typical(FORWARD, "cpu"), timings.typical(TRAIN, "cpu"))
        ),
        tokens_per_repeat=tokens,
    )
    memory = harness.memory_of_variants(
        __file__,
        args,
        args.lens or "",
        {TRAIN: runs[TRAIN], FORWARD: runs[FORWARD]},
        rows=args.rows,
    )
    for key, what in harness.MEMORY_MEASURES:
        ours, theirs = memory[TRAIN][key], memory[FORWARD][key]
        harness.emit(
            bench=BENCH,
            measure=key,
            value=ours if ours is not None else float("nan"),
            unit="MiB",
            baseline=(BASELINE_NAME, theirs if theirs is not None else float("nan")),
            ratio=harness.ratio(ours, theirs) if ours and theirs else None,
            ratio_of="training / baseline",
            goal=None,
            model=model,
            notes=f"{what}. " + notes,
        )


def _describe(model_path: str, s: dict) -> dict:
    settings = s["settings"]
    return {
        "path": subjects._shown(model_path),
        "format": subjects.model_format(model_path),
        "lens": {
            "path": None,
            "source": "trained in the run",
            "hook": "blocks.{i}.ln2.hook_normalized -> blocks.{i}.hook_mlp_out, every layer",
            "architecture": f"sparsify TopK transcoder, k {settings.k}",
            "d_in": s["loaded"].d_model,
            "d_sae": settings.width,
        },
    }


def _notes(args, s: dict) -> str:
    settings = s["settings"]
    lens = " --lens is not used by this benchmark." if args.lens else ""
    return (
        (harness.QUICK_NOTE if args.quick else "")
        + f"{len(s['rows'])} rows of {settings.seq_len} tokens from the training mix, "
        f"{settings.batch_sequences} rows per step; the training time includes sparsify's "
        f"trainer set-up (one probe forward pass, the coders' initialisation).{lens}"
    )


if __name__ == "__main__":
    main()
