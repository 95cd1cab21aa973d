"""Throughput and peak memory of the feature-activation-audit engine path, against two baselines.

    .venv/bin/python bench/activation_audit.py [--model PATH] [--lens PATH] [--quick]
        [--repeats N] [--prompts-per-axis N]

The candidate is exactly what the feature_activation_audit check runs:
``prompt_feature_stats(loaded, lens, texts, features, batch_size=<the check's default>)`` on a
seeded subset of every probe axis (chat template applied, user-text tokens only), for a catalog
of 8 features. Baselines, on the same prompts, the same tokenization and the same length-sorted
batches:

(a) ``truncated_forward``: a bare forward pass stopped at the lens's hook (``hooks.run_to``),
    nothing else. The audit adds the lens's encoder columns and the statistics; goal: the
    audit keeps at least 0.85 of this throughput.
(b) ``full_forward_then_sae``: the naive path: a full forward with ``output_hidden_states=True``
    (all layers and the LM head), then the lens's full ``encode`` on the hidden state at the
    hook, then the same statistics. Goal: the audit is at least 2.5 times faster.

Peak memory of each variant is measured in a fresh process per variant (see harness).

``--multi-layer`` (issue 10, item 7) measures instead reading the catalog features of lenses
at several layers in one pass: the per-layer transcoders of the shipped SmolLM2 set (or
``--lens SET_DIR``; else random JumpReLU transcoders made for the run) at ``MULTI_LAYERS``, read
by ``hooks.run_to`` on all their hook points at once (it stops after the deepest), each
layer's catalog columns encoded on the user's tokens (``features.feature_encoder``, as the
audit does), against a bare forward truncated at the deepest of those hooks, same batches.
``ratio = time / baseline time``; goal: **at most 1.15**.
"""

from __future__ import annotations

import random

import harness
import subjects

BENCH = "activation_audit"
N_FEATURES = 8
AUDIT, TRUNCATED, FULL = "audit", "truncated_forward", "full_forward_then_sae"
GOALS = {TRUNCATED: (">=", 0.85), FULL: (">=", 2.5)}
MULTI, MULTI_BASE = "multi_layer_read", "truncated_at_deepest"
MULTI_LAYERS = (3, 9, 15, 21)  # spread over SmolLM2's 30 layers; the deepest is 21
MULTI_GOAL = ("<=", 1.15)
BASELINE_NAMES = {
    TRUNCATED: "bare forward truncated at the lens hook (hooks.run_to), same batches",
    FULL: "full forward with output_hidden_states=True, then the lens's full encode",
}


def arguments():
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--prompts-per-axis",
        type=int,
        default=None,
        help="seeded subset of each probe axis (default 8, --quick 2; 0 = all)",
    )
    p.add_argument(
        "--multi-layer",
        action="store_true",
        help="lenses at several layers read in one pass vs a forward truncated at the deepest",
    )
    args = p.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 5)
    if args.prompts_per_axis is None:
        args.prompts_per_axis = 2 if args.quick else 8
    return args


def probe_texts(per_axis: int) -> list[str]:
    """The check's own subset rule (features.subset, seed 0) applied to every axis."""
    from interp_jobs.engine.analysis.features import subset
    from interp_jobs.probes import load_probe_set

    probes = load_probe_set()
    return [
        p.prompt for axis in probes.axes for p in subset(probes.for_axis(axis), per_axis or None, 0)
    ]


def catalog_features(lens) -> list[int]:
    """A stand-in catalog: the audit's cost does not depend on which features are named."""
    d_sae = lens.cfg.d_sae
    return sorted(random.Random(0).sample(range(d_sae), min(N_FEATURES, d_sae)))  # noqa: S311 - seeded sampling, not cryptography


def check_batch_size() -> int:
    from interp_jobs.checks import feature_activation_audit as check

    return check.Parameters.parse({}, what="parameters").batch_size


def _batches(loaded, tokens, batch_size: int):
    """The same length-sorted batches prompt_feature_stats makes (little padding)."""
    import torch

    order = torch.argsort(tokens.lengths, stable=True)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        length = int(tokens.lengths[rows].max())
        yield (
            rows,
            tokens.input_ids[rows, :length].to(loaded.device),
            tokens.attention_mask[rows, :length].to(loaded.device),
            tokens.counted[rows, :length].to(loaded.device),
        )


def _hidden_state_index(loaded, hook: str) -> int:
    """Which entry of ``hidden_states`` holds the activation the lens reads."""
    from interp_jobs.engine.hooks import parse_hook_name

    layer, site = parse_hook_name(hook, n_layers=loaded.n_layers)
    index = {"resid_pre": layer, "resid_post": layer + 1}.get(site)
    # The last entry has the final norm applied, so it is not the last block's output.
    if index is None or index >= loaded.n_layers:
        raise SystemExit(
            f"baseline (b) needs a lens on the residual stream before the last "
            f"block's output; this lens reads {hook}"
        )
    return index


def truncated_forward(loaded, lens, texts, batch_size):
    from interp_jobs.engine.analysis.features import tokenize_prompts
    from interp_jobs.engine.hooks import run_to
    from interp_jobs.engine.loading.lenses import lens_hook_name

    hook = lens_hook_name(lens)
    for _, ids, mask, _ in _batches(loaded, tokenize_prompts(loaded, texts), batch_size):
        run_to(loaded, ids, mask, [hook])


def full_forward_then_sae(loaded, lens, texts, features, batch_size):
    """The naive audit: every layer and the LM head, all hidden states, the full encode."""
    import torch

    from interp_jobs.engine.analysis.features import tokenize_prompts
    from interp_jobs.engine.loading.lenses import lens_hook_name

    index = _hidden_state_index(loaded, lens_hook_name(lens))
    tokens = tokenize_prompts(loaded, texts)
    maxima, means = torch.empty(len(texts), len(features)), torch.empty(len(texts), len(features))
    with torch.inference_mode():
        for rows, ids, mask, counted in _batches(loaded, tokens, batch_size):
            out = loaded.model(
                input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False
            )
            feats = lens.encode(out.hidden_states[index])[..., features].float()
            counted = counted.unsqueeze(-1)
            maxima[rows] = feats.masked_fill(~counted, float("-inf")).max(dim=1).values.cpu()
            means[rows] = ((feats * counted).sum(dim=1) / counted.sum(dim=1)).cpu()
    return maxima


def weight_macs_ratio(loaded, lens, n_features: int) -> float:
    """The naive path's weight multiply-adds per token over the audit's: roughly what stopping
    early and slicing the encoder can buy. Attention scores, writing the full-vocabulary logits
    and other memory traffic are left out, so a measured ratio may land a little above it.

    Every 2-D weight of a block is a matrix each token multiplies once; the naive path runs
    every block, the LM head and the whole encoder, the audit the blocks up to the hook and
    the catalog's encoder columns.
    """
    from interp_jobs.engine.loading.architectures import FAMILIES, get_path
    from interp_jobs.engine.loading.lenses import lens_hook_name

    family = next(f for f in FAMILIES if f.name == loaded.family)
    block = get_path(loaded.model, family.blocks)[0]
    per_block = sum(p.numel() for p in block.parameters() if p.dim() == 2)
    head = loaded.model.get_output_embeddings().weight.numel()
    d_in, d_sae = lens.cfg.d_in, lens.cfg.d_sae
    columns = n_features if lens.cfg.architecture() in ("standard", "jumprelu") else d_sae
    blocks_run = _hidden_state_index(loaded, lens_hook_name(lens))
    naive = loaded.n_layers * per_block + head + d_in * d_sae
    return naive / (blocks_run * per_block + d_in * columns)


def length_sorted_batches(loaded, texts: list[str], batch_size: int) -> list[list[str]]:
    """The batches the check's single call forms (prompts sorted by token length), as
    separate units, so each can be timed right next to the baselines' same batch."""
    import torch

    from interp_jobs.engine.analysis.features import tokenize_prompts

    order = torch.argsort(tokenize_prompts(loaded, texts).lengths, stable=True).tolist()
    return [
        [texts[i] for i in order[start : start + batch_size]]
        for start in range(0, len(order), batch_size)
    ]


def build_variants(loaded, lens, features, batch_size) -> dict:
    """Each variant takes a unit: the prompts of one batch."""
    from interp_jobs.engine.analysis.features import prompt_feature_stats

    return {
        AUDIT: lambda unit: (
            prompt_feature_stats(loaded, lens, unit, features, batch_size=batch_size).max
        ),
        TRUNCATED: lambda unit: truncated_forward(loaded, lens, unit, batch_size),
        FULL: lambda unit: full_forward_then_sae(loaded, lens, unit, features, batch_size),
    }


def warm_up_and_compare(variants: dict, batches: list[list[str]]) -> bool:
    """Run every variant on the shortest and the longest batch (lazy initialisation out of
    the timings) and check that the audit and the naive path agree, so the comparison is like
    for like."""
    import torch

    agree = True
    for unit in (batches[0], batches[-1]):
        results = {name: run(unit) for name, run in variants.items()}
        agree &= bool(torch.allclose(results[AUDIT], results[FULL], rtol=1e-4, atol=1e-4))
    return agree


def main() -> None:
    args = arguments()
    harness.apply_threads(args)
    loaded = subjects.load(args.model)
    if args.multi_layer:
        main_multi_layer(args, loaded)
        return
    lens_ref = subjects.resolve_lens(args, lambda: (loaded.n_layers, loaded.d_model))
    lens = subjects.load_lens(lens_ref.path, loaded)
    texts, features = probe_texts(args.prompts_per_axis), catalog_features(lens)
    batch_size = check_batch_size()
    batches = length_sorted_batches(loaded, texts, batch_size)
    variants = build_variants(loaded, lens, features, batch_size)
    whole = {
        name: lambda run=run: [run(unit) for unit in batches] for name, run in variants.items()
    }
    if args.memory_of:
        harness.report_child(harness.measure_peak(whole[args.memory_of]))
        return
    match = warm_up_and_compare(variants, batches)
    timings = harness.interleaved(variants, batches, args.repeats)
    memory = harness.memory_of_variants(
        __file__, args, lens_ref.path, whole, prompts_per_axis=args.prompts_per_axis
    )
    context = {
        "model": subjects.describe(args.model, lens_ref),
        "loads": timings.loads,
        "n_prompts": len(texts),
        "n_tokens": _token_count(loaded, texts),
        "batch_size": batch_size,
        "features": features,
        "macs": weight_macs_ratio(loaded, lens, len(features)),
        "notes_tail": _notes_tail(lens, lens_ref, args, match),
    }
    for baseline in (TRUNCATED, FULL):
        emit_throughput(timings, baseline, context)
    for baseline in (TRUNCATED, FULL):
        emit_memory(memory, baseline, context)


def _token_count(loaded, texts) -> int:
    from interp_jobs.engine.analysis.features import tokenize_prompts

    return int(tokenize_prompts(loaded, texts).lengths.sum())


def _notes_tail(lens, lens_ref, args, outputs_match: bool) -> str:
    architecture = lens.cfg.architecture()
    how = (
        "computes only the catalog features' encoder columns"
        if architecture in ("standard", "jumprelu")
        else "runs the full encode (this architecture couples features), then selects"
    )
    return (
        (harness.QUICK_NOTE if args.quick else "")
        + f"Lens architecture {architecture}: the audit {how}. "
        f"Audit and naive path give the same per-prompt maxima: {outputs_match}. "
        f"{subjects.lens_note(lens_ref, args.model)}"
    )


def emit_throughput(timings, baseline: str, ctx: dict) -> None:
    n, repeats = ctx["n_prompts"], len(timings.totals(AUDIT))
    value, base = n / timings.typical(AUDIT), n / timings.typical(baseline)
    harness.emit(
        bench=BENCH,
        measure=f"throughput_vs_{baseline}",
        value=value,
        unit="prompts/s",
        baseline=(BASELINE_NAMES[baseline], base),
        ratio=harness.ratio(value, base),
        ratio_of="value / baseline (throughput; higher is better)",
        goal=GOALS[baseline],
        model=ctx["model"],
        loads=ctx["loads"],
        notes=(
            f"prompt_feature_stats over {n} probe prompts ({ctx['n_tokens']} tokens, chat "
            f"template), {len(ctx['features'])} catalog features, batch {ctx['batch_size']}; "
            f"called once per length-sorted batch, each batch run by all variants back to "
            f"back; time = per batch the median of {repeats} repeats, summed. "
            + _bound_note(baseline, ctx)
            + ctx["notes_tail"]
        ),
        seconds={name: harness.rounded(timings.totals(name)) for name in timings.wall},
        paired_ratios=harness.paired_ratios(timings.totals(baseline), timings.totals(AUDIT)),
        ratio_by_cpu_time=harness.sig(
            harness.ratio(timings.typical(baseline, "cpu"), timings.typical(AUDIT, "cpu"))
        ),
        weight_macs_ratio=round(ctx["macs"] if baseline == FULL else 1.0, 3),
    )


def _bound_note(baseline: str, ctx: dict) -> str:
    if baseline != FULL:
        return ""
    return (
        f"Expected from weight multiply-adds per token (all blocks + LM head + full encode, "
        f"over the blocks up to the hook + the catalog's columns): {ctx['macs']:.2f}x; the "
        "lens's depth, not the implementation, sets this. "
    )


def emit_memory(memory: dict, baseline: str, ctx: dict) -> None:
    for measure, what in harness.MEMORY_MEASURES:
        value, base = memory[AUDIT][measure], memory[baseline][measure]
        harness.emit(
            bench=BENCH,
            measure=f"{measure}_vs_{baseline}",
            value=value,
            unit="MiB",
            baseline=(BASELINE_NAMES[baseline], base),
            ratio=None if value is None or base is None else harness.ratio(value, base),
            ratio_of="value / baseline (memory; lower is better)",
            goal=None,
            model=ctx["model"],
            loads=ctx["loads"],
            notes=f"{what}; the same {ctx['n_prompts']} prompts. " + ctx["notes_tail"],
            rss_before_mib={name: round(m["rss_before_mib"], 1) for name, m in memory.items()},
        )


# --- several layers in one pass (--multi-layer) -------------------------------------------------


def multi_layer_lenses(args, loaded) -> tuple[list, str]:
    """The lenses at MULTI_LAYERS: of a given or shipped transcoder set, else random ones."""
    import tempfile
    from pathlib import Path

    from interp_jobs.engine.loading.transcoders import load_set_lenses, read_set

    layers = [i for i in MULTI_LAYERS if i < loaded.n_layers] or [loaded.n_layers - 1]
    given = Path(args.lens) if args.lens else None
    shipped = sorted(subjects.SHIPPED_LENSES.glob("smollm2-mlp-transcoders-*/transcoders.json"))
    if given and (given / "transcoders.json").is_file():
        root, source = given, "given"
    elif shipped and subjects._is_default_model(args.model):
        root, source = shipped[0].parent, "shipped"
    else:
        from tests.factories import save_random_transcoders

        root, source = Path(tempfile.mkdtemp(prefix="assay-bench-multi-")), "random"
        save_random_transcoders(root, n_layers=loaded.n_layers, d_model=loaded.d_model)
    lenses = load_set_lenses(read_set(root), device=loaded.device)
    for i in layers:
        lenses[i].cfg_dir = root / f"layer_{i:02d}"  # what the line's model field describes
    return [lenses[i] for i in layers], f"{source} transcoders {root.name}, layers {layers}"


def multi_layer_read(loaded, lenses, encoders, texts, batch_size) -> list:
    """One pass to the deepest hook; each layer's catalog features on the user's tokens."""
    import torch

    from interp_jobs.engine.analysis.features import tokenize_prompts
    from interp_jobs.engine.hooks import run_to
    from interp_jobs.engine.loading.lenses import lens_hook_name

    hooks = [lens_hook_name(lens) for lens in lenses]
    maxima = []
    for _, ids, mask, counted in _batches(loaded, tokenize_prompts(loaded, texts), batch_size):
        store = run_to(loaded, ids, mask, hooks)
        with torch.inference_mode():
            for hook, encode in zip(hooks, encoders, strict=True):
                maxima.append(encode(store[hook][counted]).float().max(dim=0).values)
    return maxima


def main_multi_layer(args, loaded) -> None:
    import torch

    from interp_jobs.engine.analysis.features import feature_encoder
    from interp_jobs.engine.loading.lenses import lens_hook_name

    lenses, described = multi_layer_lenses(args, loaded)
    features = catalog_features(lenses[0])
    encoders = [feature_encoder(lens, torch.tensor(features)) for lens in lenses]
    texts, batch_size = probe_texts(args.prompts_per_axis), check_batch_size()
    batches = length_sorted_batches(loaded, texts, batch_size)
    deepest = max(lenses, key=lambda lens: int(lens_hook_name(lens).split(".")[1]))
    variants = {
        MULTI: lambda unit: multi_layer_read(loaded, lenses, encoders, unit, batch_size),
        MULTI_BASE: lambda unit: truncated_forward(loaded, deepest, unit, batch_size),
    }
    for unit in (batches[0], batches[-1]):  # lazy initialisation out of the timings
        for run in variants.values():
            run(unit)
    timings = harness.interleaved(variants, batches, args.repeats)
    value, base = timings.typical(MULTI), timings.typical(MULTI_BASE)
    harness.emit(
        bench=BENCH,
        measure="multi_layer_read_vs_truncated_at_deepest",
        value=value,
        unit="s",
        baseline=(f"bare forward truncated at the deepest hook ({lens_hook_name(deepest)})", base),
        ratio=harness.ratio(value, base),
        ratio_of="value / baseline (time; lower is better)",
        goal=MULTI_GOAL,
        model=subjects.describe(args.model, subjects.Lens(str(lenses[0].cfg_dir), described)),
        loads=timings.loads,
        notes=(
            (harness.QUICK_NOTE if args.quick else "")
            + f"{len(lenses)} lenses ({described}) read in one run_to pass, {len(features)} "
            f"catalog features each, on {len(texts)} probe prompts "
            f"({_token_count(loaded, texts)} tokens, chat template), batch {batch_size}; each "
            f"batch run by both variants back to back; time = per batch the median of "
            f"{args.repeats} repeats, summed."
        ),
        seconds={name: harness.rounded(timings.totals(name)) for name in timings.wall},
        paired_ratios=harness.paired_ratios(timings.totals(MULTI_BASE), timings.totals(MULTI)),
    )


if __name__ == "__main__":
    main()
