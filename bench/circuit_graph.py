"""Wall time and peak memory of a cross-layer attribution graph, in forward+backward passes.

    .venv/bin/python bench/circuit_graph.py [--model PATH] [--lens SET_DIR] [--quick] [--repeats N]

The candidate is the graph the circuit_trace check builds: circuit-tracer's ``attribute`` over
per-layer transcoders at every layer (replacement model, nnsight backend), then
``prune_graph`` and ``compute_graph_scores`` (``interp_jobs.engine.analysis.circuits.
trace_graph``), with the check's default node budget and batch, on a 10-16 token prompt. The
baseline, timed in the same run and interleaved with it, is one forward and one backward pass
of the model on the same tokens (``model(inputs_embeds=e).logits[0, -1, target].backward()``
with ``e`` requiring grad, so the backward runs through every layer). ``ratio = graph /
baseline`` is the graph's cost in such passes; goal (issue 10, item 7): **at most 30**.

Transcoders: ``--lens`` if it is a transcoder set (a folder with ``transcoders.json``); the
shipped SmolLM2 set for the default model; else random JumpReLU transcoders (width 1024,
seeded) made for the run, which the line's notes say (cost grows with the number of active
features, so random ones only approximate a trained set's cost).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import harness
import subjects

BENCH = "circuit_graph"
PROMPT = "The capital of the country where the Eiffel Tower is located is"
TARGET = " Paris"
GRAPH, FORWARD_BACKWARD = "graph", "forward_backward"
BASELINE_NAME = "one forward + backward pass of the model on the same tokens"
RANDOM_WIDTH = 1024


def arguments():
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--max-feature-nodes", type=int, default=None, help="default: the check's")
    p.add_argument("--batch-size", type=int, default=None, help="default: the check's")
    args = p.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    return args


def transcoder_set(args, n_layers: int, d_model: int) -> tuple[Path, str]:
    """(set directory, source): given, shipped, or random for this run."""
    if args.lens and (Path(args.lens) / "transcoders.json").is_file():
        return Path(args.lens), "given"
    shipped = sorted(subjects.SHIPPED_LENSES.glob("smollm2-mlp-transcoders-*/transcoders.json"))
    if shipped and subjects._is_default_model(args.model):
        return shipped[0].parent, "shipped"
    directory = Path(tempfile.mkdtemp(prefix="assay-bench-transcoders-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    from tests.factories import save_random_transcoders

    width = 48 if args.quick else RANDOM_WIDTH
    save_random_transcoders(
        directory, n_layers=n_layers, d_model=d_model, d_transcoder=width, threshold=0.8
    )
    return directory, "random"


def setup(args):
    import torch

    from interp_jobs.checks import circuit_trace as check
    from interp_jobs.engine.analysis import circuits
    from interp_jobs.engine.loading.transcoders import attribution_dir, load_set_lenses, read_set

    loaded = subjects.load(args.model)
    set_dir, source = transcoder_set(args, loaded.n_layers, loaded.d_model)
    info = read_set(set_dir)
    lenses = load_set_lenses(info)
    work = Path(tempfile.mkdtemp(prefix="assay-bench-work-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    hf_dir = attribution_dir(
        loaded, args.model, subjects.model_format(args.model), digest="", work_dir=work
    )
    model = circuits.replacement_model(hf_dir, lenses, scan=info.scan)
    ids = loaded.encode(PROMPT)["input_ids"][0].tolist()
    tokens = circuits.prompt_tokens(model, ids)
    target, note = _target(loaded.tokenizer)
    defaults = check.Parameters.parse({"prompt": PROMPT, "target": TARGET}, what="parameters")
    budget = args.max_feature_nodes or defaults.max_feature_nodes
    batch = circuits.attribution_batch(budget, args.batch_size or defaults.batch_size)
    embeds = loaded.model.get_input_embeddings()(tokens[None].to(loaded.device)).detach()
    torch.manual_seed(0)
    return {
        "loaded": loaded,
        "model": model,
        "tokens": tokens,
        "target": target,
        "budget": budget,
        "batch": batch,
        "embeds": embeds,
        "set": (set_dir, source, info),
        "note": note,
    }


def _target(tokenizer) -> tuple[int, str]:
    ids = tokenizer.encode(TARGET, add_special_tokens=False)
    if len(ids) == 1:
        return ids[0], ""
    return ids[0], f"{TARGET!r} is not one token here; its first token ({ids[0]}) stands in. "


def variants(s: dict) -> dict:
    from interp_jobs.engine.analysis import circuits

    result: dict = {}

    def graph(_unit=None):
        result["traced"] = circuits.trace_graph(
            s["model"],
            s["tokens"],
            s["target"],
            max_feature_nodes=s["budget"],
            batch_size=s["batch"],
        )

    def forward_backward(_unit=None):
        embeds = s["embeds"].clone().requires_grad_(True)
        logits = s["loaded"].model(inputs_embeds=embeds, use_cache=False).logits
        logits[0, -1, s["target"]].backward()

    return {GRAPH: graph, FORWARD_BACKWARD: forward_backward, "_result": result}


def main() -> None:
    args = arguments()
    harness.apply_threads(args)
    if args.memory_of:
        s = setup(args)
        work = variants(s)[args.memory_of]
        harness.report_child(harness.measure_peak(work))
        return
    s = setup(args)
    runs = variants(s)
    result = runs.pop("_result")
    runs[GRAPH]()  # warm-up: first calls pay for nnsight's tracing set-up and allocator growth
    runs[FORWARD_BACKWARD]()
    timings = harness.interleaved(runs, [None], args.repeats)
    graph, baseline = timings.typical(GRAPH), timings.typical(FORWARD_BACKWARD)
    set_dir, source, info = s["set"]
    model = _describe(args.model, set_dir, source, info)
    traced = result["traced"]
    notes = _notes(args, s, source, traced)
    harness.emit(
        bench=BENCH,
        measure="wall_time_in_forward_backward_passes",
        value=graph,
        unit="s",
        baseline=(BASELINE_NAME, baseline),
        ratio=harness.ratio(graph, baseline),
        ratio_of="graph / baseline (lower is better)",
        goal=("<=", 30),
        model=model,
        notes=notes,
        loads=timings.loads,
        seconds={name: harness.rounded(timings.totals(name)) for name in (GRAPH, FORWARD_BACKWARD)},
        paired_ratios=harness.paired_ratios(
            timings.totals(GRAPH), timings.totals(FORWARD_BACKWARD)
        ),
        ratio_by_cpu_time=harness.sig(
            harness.ratio(timings.typical(GRAPH, "cpu"), timings.typical(FORWARD_BACKWARD, "cpu"))
        ),
        graph_cost={
            "tokens": len(s["tokens"]),
            "max_feature_nodes": s["budget"],
            "batch_size": s["batch"],
            **traced.counts(),
            "replacement": harness.sig(traced.replacement),
            "completeness": harness.sig(traced.completeness),
        },
    )
    memory = harness.memory_of_variants(
        __file__,
        args,
        str(set_dir),
        {GRAPH: runs[GRAPH], FORWARD_BACKWARD: runs[FORWARD_BACKWARD]},
        max_feature_nodes=s["budget"],
        batch_size=s["batch"],
    )
    for key, what in harness.MEMORY_MEASURES:
        ours, theirs = memory[GRAPH][key], memory[FORWARD_BACKWARD][key]
        harness.emit(
            bench=BENCH,
            measure=key,
            value=ours if ours is not None else float("nan"),
            unit="MiB",
            baseline=(BASELINE_NAME, theirs if theirs is not None else float("nan")),
            ratio=harness.ratio(ours, theirs) if ours and theirs else None,
            ratio_of="graph / baseline",
            goal=None,
            model=model,
            notes=f"{what}. " + notes,
        )


def _describe(model_path: str, set_dir: Path, source: str, info) -> dict:
    return {
        "path": subjects._shown(model_path),
        "format": subjects.model_format(model_path),
        "lens": {
            "path": subjects._shown(str(set_dir)),
            "source": source,
            "hook": "blocks.{i}.ln2.hook_normalized -> blocks.{i}.hook_mlp_out, every layer",
            "architecture": info.manifest.get("architecture"),
            "d_in": info.manifest.get("d_model"),
            "d_sae": info.manifest.get("d_transcoder"),
        },
    }


def _notes(args, s: dict, source: str, traced) -> str:
    lens = {
        "given": "Transcoders: given.",
        "shipped": "Transcoders: the shipped SmolLM2 set.",
        "random": "Transcoders: random JumpReLU transcoders made for this run (no set given or "
        "shipped for this model); cost follows the number of active features, which random "
        "weights only approximate.",
    }[source]
    ignored = (
        " --lens was not a transcoder set and was ignored."
        if args.lens and source != "given"
        else ""
    )
    return (
        (harness.QUICK_NOTE if args.quick else "")
        + f"{len(s['tokens'])}-token prompt {PROMPT!r} (circuit-tracer prepends a BOS), target "
        f"{TARGET!r}; {traced.n_selected} of {traced.n_active} active features attributed "
        f"(budget {s['budget']}, batch {s['batch']}); the timed graph includes pruning and "
        f"scores, not the JSON export or validation. {s['note']}{lens}{ignored}"
    )


if __name__ == "__main__":
    main()
