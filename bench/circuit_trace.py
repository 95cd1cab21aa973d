"""Wall time and peak memory of a circuit trace, in units of one forward+backward pass.

    .venv/bin/python bench/circuit_trace.py [--model PATH] [--lens PATH] [--quick] [--repeats N]

The candidate is the call the circuit_trace check makes, with the check's default parameters:
``trace(loaded, [(name, lens)], input_ids, make_metric("logprob", target_id), max_nodes=...,
node_threshold=..., n_ablations=...)`` on "The capital of France is" with target " Paris" (no
chat template, as the check's default). The baseline, timed in the same run and interleaved
with it, is one forward and one backward pass of the unmodified model on the same prompt:
``model(inputs_embeds=e).logits[0, -1, target].backward()`` with the input embeddings ``e``
requiring grad, so the backward pass runs through every layer (the weights are frozen, as in
the trace). The ratio is the trace's cost in such passes; there is no fixed goal, and the line
carries the passes the trace itself reports (its graph cost).
"""

from __future__ import annotations

import harness
import subjects

BENCH = "circuit_trace"
PROMPT = "The capital of France is"
TARGET = " Paris"
TRACE, FORWARD_BACKWARD = "trace", "forward_backward"
BASELINE_NAME = "one forward + backward pass of the unmodified model on the same prompt"


def arguments():
    args = harness.parser(__doc__.splitlines()[0]).parse_args()
    args.repeats = args.repeats or (1 if args.quick else 7)
    return args


def check_parameters():
    from interp_jobs.checks import circuit_trace as check

    return check.Parameters.parse({"prompt": PROMPT, "target": TARGET}, what="parameters")


def target_token(tokenizer) -> tuple[int, str]:
    """' Paris' as the check resolves it; a tiny test tokenizer may split it, and then its
    first token stands in (the cost does not depend on which token is the target)."""
    from interp_jobs.checks.base import CheckParameterError
    from interp_jobs.checks.circuit_trace import token_id

    try:
        return token_id(tokenizer, TARGET, "target"), ""
    except CheckParameterError:
        first = tokenizer.encode(TARGET, add_special_tokens=False)[0]
        return first, f"{TARGET!r} is not one token here; its first token ({first}) stands in. "


def build_variants(loaded, lens, input_ids, target: int) -> dict:
    from interp_jobs.engine.analysis.attribution import make_metric, trace

    params = check_parameters()

    def run_trace(_unit=None):
        return trace(
            loaded,
            [("bench", lens)],
            input_ids,
            make_metric(params.metric, target),
            max_nodes=params.max_nodes,
            node_threshold=params.node_threshold,
            n_ablations=params.n_ablation_checks,
        )

    return {
        TRACE: run_trace,
        FORWARD_BACKWARD: lambda _unit=None: forward_backward(loaded, input_ids, target),
    }


def forward_backward(loaded, input_ids, target: int) -> None:
    embeds = loaded.model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
    logits = loaded.model(inputs_embeds=embeds, use_cache=False).logits
    logits[0, -1, target].backward()


def graph_cost(graph) -> dict:
    return {
        "forward_passes": graph.n_forward_passes,
        "backward_passes": graph.n_backward_passes,
        "nodes": len(graph.nodes),
        "edges": len(graph.edges),
        "ablation_checks": len(graph.ablations),
    }


def main() -> None:
    args = arguments()
    harness.apply_threads(args)
    loaded = subjects.load(args.model)
    lens_ref = subjects.resolve_lens(args, lambda: (loaded.n_layers, loaded.d_model))
    lens = subjects.load_lens(lens_ref.path, loaded)
    input_ids = loaded.encode(PROMPT)["input_ids"]
    target, target_note = target_token(loaded.tokenizer)
    variants = build_variants(loaded, lens, input_ids, target)
    if args.memory_of:
        harness.report_child(harness.measure_peak(variants[args.memory_of]))
        return
    cost = graph_cost(variants[TRACE]())  # also the warm-up of the trace path
    variants[FORWARD_BACKWARD]()
    timings = harness.interleaved(variants, [None], args.repeats)  # one unit: the prompt
    memory = harness.memory_of_variants(__file__, args, lens_ref.path, variants)
    ctx = {
        "model": subjects.describe(args.model, lens_ref),
        "loads": timings.loads,
        "cost": cost,
        "n_tokens": int(input_ids.shape[1]),
        "notes_tail": (harness.QUICK_NOTE if args.quick else "")
        + target_note
        + subjects.lens_note(lens_ref, args.model),
    }
    emit_time(timings, ctx)
    emit_memory(memory, ctx)


def emit_time(timings, ctx: dict) -> None:
    value, base = timings.typical(TRACE), timings.typical(FORWARD_BACKWARD)
    seconds = {name: timings.totals(name) for name in timings.wall}
    cost = ctx["cost"]
    harness.emit(
        bench=BENCH,
        measure="wall_time",
        value=value,
        unit="s",
        baseline=(BASELINE_NAME, base),
        ratio=harness.ratio(value, base),
        ratio_of="value / baseline (the trace's cost in forward+backward passes)",
        goal=None,
        model=ctx["model"],
        loads=ctx["loads"],
        notes=(
            f"trace() of the logprob of {TARGET!r} after {PROMPT!r} ({ctx['n_tokens']} "
            f"tokens), the check's default pruning; median of {len(seconds[TRACE])} "
            f"interleaved runs. The trace reports {cost['forward_passes']} forward and "
            f"{cost['backward_passes']} backward passes (edge backward passes are partial "
            "but batched over up to 16 nodes; ablation forwards batch up to 8 rows). "
            + ctx["notes_tail"]
        ),
        graph_cost=cost,
        seconds={name: harness.rounded(runs) for name, runs in seconds.items()},
        paired_ratios=harness.paired_ratios(seconds[TRACE], seconds[FORWARD_BACKWARD]),
        ratio_by_cpu_time=harness.sig(
            harness.ratio(timings.typical(TRACE, "cpu"), timings.typical(FORWARD_BACKWARD, "cpu"))
        ),
    )


def emit_memory(memory: dict, ctx: dict) -> None:
    for measure, what in harness.MEMORY_MEASURES:
        value, base = memory[TRACE][measure], memory[FORWARD_BACKWARD][measure]
        harness.emit(
            bench=BENCH,
            measure=measure,
            value=value,
            unit="MiB",
            baseline=(BASELINE_NAME, base),
            ratio=None if value is None or base is None else harness.ratio(value, base),
            ratio_of="value / baseline (memory; lower is better)",
            goal=None,
            model=ctx["model"],
            loads=ctx["loads"],
            notes=f"{what}. " + ctx["notes_tail"],
            rss_before_mib={name: round(m["rss_before_mib"], 1) for name, m in memory.items()},
        )


if __name__ == "__main__":
    main()
