"""sae_fidelity: is this lens good enough to count as evidence about the model?

Evidence kind: observed. The lens's reconstruction of the model's activations on held-out
text is observed (explained variance, MSE, L0, dead and dense features; the forward pass stops
at the lens's hook). The cross-entropy numbers come from splicing: the activation at the hook
is replaced by the lens's reconstruction, or by zeros as the reference point, and the model's
next-token loss is measured downstream. That is an intervention on the forward pass, but what
it measures is the lens (how much of the model's behaviour survives when it is read through
the lens), not an effect of the model; no claim about the model's behaviour rests on it.

Measurement. ``n_sequences`` rows of ``seq_len`` tokens are packed from the held-out split of a
shipped corpus (documents the shipped lenses were never trained on; the seed picks and orders
them), run through the model, and measured at the positions the lens was trained on (its
``seqpos_slice``) less those the shared position rule excludes (interp_jobs.engine.analysis.
positions: position 0, the attention sink; tokens whose norm marks them as secondary sinks are
left out of the statistics); the evidence's ``positions`` says which and why. Definitions follow
``sae_lens.evals`` (see interp_jobs.engine.analysis.fidelity).

Verdict. Pass when every given threshold is met, fail otherwise; with no thresholds the check
is inconclusive (the numbers are still reported). A threshold on loss recovered fails when the
recovery is undefined (zero-ablating the hook did not raise the loss).
"""

from pydantic import Field, field_validator

from interp_jobs.checks.base import (
    FAIL,
    INCONCLUSIVE,
    OBSERVED,
    PASS,
    ArtifactData,
    CheckContext,
    CheckResult,
    Spec,
    evidence_json,
)
from interp_jobs.checks.inputs import load_lens_for, load_model_for

DESCRIPTION = (
    "lens fidelity on held-out text: explained variance, MSE, L0, dead/dense "
    "features, and CE loss clean vs. spliced vs. zero-ablated (loss recovered)"
)
EVIDENCE_KIND = OBSERVED
INTERPRETATION = (
    "Observed reconstruction quality of the lens on held-out text. The spliced and "
    "zero-ablated cross-entropies are interventions on the forward pass that measure the lens "
    "(how much next-token ability survives when the activation is replaced by the lens's "
    "reconstruction), not a causal effect of the model."
)
# (threshold field, metric, at least / at most) in the order they are reported.
BARS = (
    ("min_explained_variance", "explained_variance", ">="),
    ("max_mse", "mse", "<="),
    ("min_fraction_loss_recovered", "fraction_loss_recovered", ">="),
    ("max_ce_loss_increase", "ce_loss_increase", "<="),
    ("min_l0", "l0", ">="),
    ("max_l0", "l0", "<="),
    ("max_dead_fraction", "dead_fraction", "<="),
    ("max_dense_fraction", "dense_fraction", "<="),
)


class Parameters(Spec):
    lens: str | None = Field(None, description="lens name; the model's first lens if omitted")
    corpus: str = Field("stdlib-docs-v1", description="shipped corpus whose held-out split is read")
    n_sequences: int = Field(32, ge=1, le=1024, description="held-out sequences measured")
    seq_len: int = Field(128, ge=8, le=2048, description="tokens per sequence")
    dense_threshold: float = Field(
        0.1, gt=0.0, le=1.0, description="a feature firing on more tokens than this is dense"
    )
    sink_norm_ratio: float | None = Field(
        10.0,
        gt=1.0,
        description="tokens whose activation norm exceeds this many medians are "
        "attention sinks, left out of the reconstruction statistics (None: keep them)",
    )
    batch_size: int = Field(8, ge=1, le=256)
    seed: int = Field(0, description="chooses and orders the held-out documents")

    @field_validator("corpus")
    @classmethod
    def _shipped_corpus(cls, name: str) -> str:
        from interp_jobs.engine.loading.corpus import CORPORA_DIR, MANIFEST_FILE

        shipped = sorted(p.name for p in CORPORA_DIR.iterdir() if (p / MANIFEST_FILE).is_file())
        if name not in shipped:
            raise ValueError(f"unknown corpus {name!r}; shipped corpora: {', '.join(shipped)}")
        return name


class Thresholds(Spec):
    min_explained_variance: float | None = Field(None, le=1.0)
    max_mse: float | None = Field(None, ge=0.0)
    min_fraction_loss_recovered: float | None = Field(None, le=1.0)
    max_ce_loss_increase: float | None = Field(
        None, ge=0.0, description="CE spliced minus CE clean, nats"
    )
    min_l0: float | None = Field(None, ge=0.0)
    max_l0: float | None = Field(None, ge=0.0)
    # "Dead" means silent on the tokens measured, so set this bar for a given n_sequences:
    # fewer tokens leave more rare features silent.
    max_dead_fraction: float | None = Field(None, ge=0.0, le=1.0)
    max_dense_fraction: float | None = Field(None, ge=0.0, le=1.0)


Context = CheckContext[Parameters, Thresholds]


def run(context: Context) -> CheckResult:
    from interp_jobs.engine.analysis.fidelity import measure_fidelity

    params = context.parameters
    context.progress(0.0, "loading model, lens and held-out text")
    loaded = load_model_for(context)
    lens, ref = load_lens_for(context, params.lens, loaded)
    corpus, batch = _heldout(loaded, params)
    context.log(
        f"{batch.tokens.shape[0]} held-out sequences of {params.seq_len} tokens from "
        f"{corpus.name}; lens {ref.name or ref.path} ({lens.cfg.d_sae} features)"
    )
    report = measure_fidelity(
        loaded,
        lens,
        batch.tokens,
        dense_threshold=params.dense_threshold,
        sink_ratio=params.sink_norm_ratio,
        batch_size=params.batch_size,
        progress=lambda done, stage: context.progress(0.05 + 0.85 * done, stage),
    )
    context.progress(0.95, "writing evidence")
    provenance = {**_provenance(lens, ref, corpus, batch, params), "positions": report.positions}
    return _result(context, report, provenance)


def _heldout(loaded, params):
    from interp_jobs.engine.loading.corpus import load_corpus, pack_documents

    corpus = load_corpus(params.corpus)
    batch = pack_documents(
        loaded.tokenizer,
        corpus.split("heldout"),
        seq_len=params.seq_len,
        seed=params.seed,
        n_sequences=params.n_sequences,
    )
    return corpus, batch


def _provenance(lens, ref, corpus, batch, params) -> dict:
    from interp_jobs.engine.analysis.fidelity import lens_positions
    from interp_jobs.engine.loading.lenses import lens_info

    positions = lens_positions(lens, params.seq_len, sink_positions=1)
    return {
        "lens": {
            "name": ref.name,
            "digest": ref.digest,
            **lens_info(lens),
            "seqpos_slice": list(lens.cfg.metadata.seqpos_slice or (None,)),
        },
        "corpus": {**corpus.describe(), "split": "heldout"},
        "eval_tokens": {
            "sha256": batch.digest,
            "sequences": int(batch.tokens.shape[0]),
            "seq_len": params.seq_len,
            "documents": batch.documents,
            "measured_positions": f"{positions[0]}..{positions[-1]}",
        },
        "seed": params.seed,
    }


def _metrics(report) -> dict:
    metrics = report.metrics()
    if metrics.get("ce_spliced") is not None:
        metrics["ce_loss_increase"] = round(metrics["ce_spliced"] - metrics["ce_clean"], 6)
    return metrics


def _bars(metrics: dict, thresholds) -> list[dict]:
    """Every given threshold with the measured value and whether it is met."""
    rows = []
    for field, metric, relation in BARS:
        bar = getattr(thresholds, field)
        if bar is None:
            continue
        value = metrics.get(metric)
        met = value is not None and (value >= bar if relation == ">=" else value <= bar)
        rows.append(
            {
                "threshold": field,
                "metric": metric,
                "relation": relation,
                "bar": bar,
                "value": value,
                "met": met,
            }
        )
    return rows


def _verdict(bars: list[dict]) -> str:
    if not bars:
        return INCONCLUSIVE
    return PASS if all(row["met"] for row in bars) else FAIL


def _summary(metrics: dict, bars: list[dict], verdict: str, provenance: dict) -> str:
    recovered = metrics.get("fraction_loss_recovered")
    recovered_text = "undefined" if recovered is None else f"{recovered:.3f}"
    text = (
        f"Observed on {metrics['n_tokens']} held-out tokens of {provenance['corpus']['name']} "
        f"(documents the lens was not trained on): the lens explains "
        f"{metrics['explained_variance']:.3f} of the activation variance at "
        f"{provenance['lens']['hook_name']} (MSE {metrics['mse']:.4g}) with "
        f"{metrics['l0']:.1f} active features per token; {metrics['dead_fraction']:.1%} of its "
        f"features never fired on these tokens and {metrics['dense_fraction']:.1%} fired on "
        f"more than {metrics['dense_threshold']:.0%} of them"
        f"{_sinks(metrics)}. Splicing its reconstruction into the "
        f"forward pass raises the next-token loss from {metrics['ce_clean']:.3f} to "
        f"{metrics['ce_spliced']:.3f} nats (zero-ablation: {metrics['ce_zero']:.3f}), so it "
        f"recovers {recovered_text} of the loss; this splice measures the lens, not the model. "
    )
    if verdict == INCONCLUSIVE:
        return text + "No thresholds were set, so there is no verdict."
    missed = [row["threshold"] for row in bars if not row["met"]]
    if not missed:
        return text + f"All {len(bars)} policy threshold(s) are met: pass."
    return text + f"Not met: {', '.join(missed)}: fail."


def _sinks(metrics: dict) -> str:
    if not metrics["n_sink_tokens"]:
        return ""
    return (
        f" ({metrics['n_sink_tokens']} attention-sink token(s), with activation norms "
        f"over {metrics['sink_ratio']:g} times the median, are left out of these statistics "
        "but not of the splice)"
    )


def _figure(report, provenance: dict) -> bytes:
    from interp_jobs.checks.figures import log_histogram_svg

    return log_histogram_svg(
        f"Feature firing frequency, {provenance['lens']['name'] or 'lens'} on held-out text",
        report.firing_frequency,
        low=1e-5,
        high=1.0,
        bins=25,
        x_label="share of held-out tokens a feature fires on (log scale)",
        y_label="features",
        markers=[(report.dense_threshold, "dense threshold")],
        notes=[
            f"{report.dead_fraction:.1%} of {len(report.firing_frequency)} features never "
            f"fired on {report.n_tokens} tokens (not shown on the log axis)"
        ],
    )


def _result(context: Context, report, provenance: dict) -> CheckResult:
    metrics = _metrics(report)
    bars = _bars(metrics, context.thresholds)
    verdict = _verdict(bars)
    evidence = {
        "check": "sae_fidelity",
        "evidence_kind": EVIDENCE_KIND,
        "interpretation": INTERPRETATION,
        "metrics": metrics,
        "thresholds": bars,
        "verdict": verdict,
        "per_sequence": report.per_sequence,
        "firing_frequency": report.firing_frequency,
        "parameters": context.parameters.model_dump(mode="json"),
        **provenance,
    }
    context.progress(1.0, "done")
    return CheckResult(
        verdict=verdict,
        evidence_kind=EVIDENCE_KIND,
        metrics=metrics,
        summary=_summary(metrics, bars, verdict, provenance),
        artifacts=(
            ArtifactData("fidelity.json", "application/json", evidence_json(evidence)),
            ArtifactData("firing_frequency.svg", "image/svg+xml", _figure(report, provenance)),
        ),
        provenance=provenance,
    )
