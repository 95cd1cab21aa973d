"""feature_intervention's positive control, end to end on a tiny model with a planted refusal
direction (issue #11: evidence that survives a statistician).

The control (the refusal direction of Arditi et al. 2024: a difference of mean activations
between harmful and harmless reference prompts, chosen among candidate layers and
post-instruction positions, added to the controls and ablated from the risk prompts) is
otherwise shown to work only on SmolLM2, where nobody knows the true direction, and by a unit
test on synthetic rows. Here the direction is known: tests.factories.save_refusal_direction_model
builds a model whose refusal log-odds depend on one planted direction d and on nothing else,
plus a second attention path orthogonal to d that carries prompt-dependent noise as strongly as
d is carried (so the difference of means is not d by construction: the estimate has to average
the noise out). On that model the check must see the control (adding raises the controls'
refusal log-odds, ablating lowers the risk prompts', each beating 19 random directions of the
same norm at the same hook) and the direction it selects must point along d. On the same model
with the planting switched off (coefficient 0, every other weight equal) nothing moves at all,
so that half alone could not fail; the negative model can: its unembedding reads a random
direction, so anything added or ablated moves refusal, and the check must not count a
direction that does no more than random ones.

The reference prompts are the check's default (64 per group; 62 neutral prompts exist in the
discovery split): the estimate's purity matters. With 8 per group the estimate's cosine with d
was 0.74 and ablating it *raised* the risk prompts' refusal log-odds (directional ablation of
r-hat also writes -(x . r-hat) r-hat along d into every token, and the last token's own
embedding is much larger than the refusal signal), so the control was not detected; with 64
the cosine is 0.96 (width 128). Three check runs, 15 to 20 s each on two shared cores.
"""

import json
import time

import pytest
import torch

from interp_jobs.checks import feature_intervention as check
from interp_jobs.checks.base import INCONCLUSIVE, PASS, LensRef, ModelRef
from tests.factories import REFUSAL_AXES, catalog, save_random_lens, save_refusal_direction_model

PARAMETERS = {
    "features": [{"index": 3}],  # a target is required; this test reads the positive control
    "axes": list(REFUSAL_AXES),
    "n_prompts_per_axis": 4,
    "n_control_prompts": 6,
    "n_generations": 1,
    "n_samples": 0,
    "max_new_tokens": 2,
    "n_null_draws": 0,
    "n_boot": 200,
}
THRESHOLDS = {"require_positive_control": True}
CATALOG = catalog((3, "tiny weapons feature", "weapons"))
MIN_COSINE = 0.9  # within about 25 degrees of d
# Wide enough that a random direction is nearly orthogonal to d (|cos| ~ 0.09): at the factories'
# usual 32 a random direction's ablation writes so much along d (|cos| ~ 0.18, times every
# token's embedding) that 2 of 19 random ablations lowered refusal as much as d's own, and the
# null rightly refused to call the ablation arm specific.
D_MODEL = 128
NEGATIVE_SEED = 2  # see test_when_any_direction_moves_refusal_the_control_must_beat_random_ones


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    planted = tmp_path_factory.mktemp("refusal-planted")
    unplanted = tmp_path_factory.mktemp("refusal-unplanted")
    negative = tmp_path_factory.mktemp("refusal-random-readout")
    direction = save_refusal_direction_model(planted, coefficient=1.0, d_model=D_MODEL)
    assert torch.equal(
        save_refusal_direction_model(unplanted, coefficient=0.0, d_model=D_MODEL), direction
    )
    save_refusal_direction_model(
        negative, coefficient=0.0, d_model=D_MODEL, readout="random", seed=NEGATIVE_SEED
    )
    lens = save_random_lens(tmp_path_factory.mktemp("lens-128"), d_in=D_MODEL)
    return {
        "planted": planted,
        "unplanted": unplanted,
        "negative": negative,
        "direction": direction,
        "lens": LensRef(path=str(lens), digest="", name="tiny"),
    }


def _run(make_context, models, name, monkeypatch) -> tuple:
    """The check end to end, and the direction it selected, caught on its way into the run."""
    chosen = []
    original = check.control_direction

    def spy(*args, **kwargs):
        chosen.append(original(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(check, "control_direction", spy)
    model_dir = models[name]
    context = make_context(
        check,
        lenses=(models["lens"],),
        parameters=PARAMETERS,
        thresholds=THRESHOLDS,
        model=ModelRef(
            path=str(model_dir), format="hf_dir", weights_digest="", file_digests={}, name="r@1"
        ),
        catalog=CATALOG,
    )
    start = time.perf_counter()
    result = check.run(context)
    print(f"\n{model_dir.name}: {time.perf_counter() - start:.1f} s; {result.summary}")
    report = json.loads(next(a.data for a in result.artifacts if a.title == "intervention.json"))
    (direction,) = chosen
    assert report["positive_control"]["direction"]["hook"] == direction.hook
    assert report["positive_control"]["direction"]["norm"] == pytest.approx(
        direction.norm, rel=1e-5
    )  # 6 digits
    return result, report["positive_control"], direction


def test_the_control_sees_a_planted_refusal_direction_and_selects_it(
    make_context, models, monkeypatch
):
    result, control, selected = _run(make_context, models, "planted", monkeypatch)
    add = control["add"]["groups"]["neutral"]["log_odds_change"]
    ablate = control["ablate"]["groups"]["all_risk"]["log_odds_change"]
    assert add["lower95"] > 0, add  # adding it raises the controls' refusal log-odds
    assert ablate["upper95"] < 0, ablate  # ablating it lowers the risk prompts'
    for arm in ("add", "ablate"):
        assert control[arm]["null"]["p_value"] <= check.CONTROL_ALPHA, control[arm]["null"]
        assert control[arm]["detected"], control[arm]["reason"]
    assert control["detected"] is True
    assert result.metrics["positive_control_detected"] is True
    assert result.verdict == PASS  # the only bar given is the positive control

    cosine = float(
        torch.nn.functional.cosine_similarity(
            selected.vector.double(), models["direction"].double(), dim=0
        )
    )
    print(f"cosine(selected direction, d) = {cosine:.4f} at {selected.hook}@{selected.offset}")
    assert cosine > MIN_COSINE


def test_without_the_planting_the_same_model_shows_no_control(make_context, models, monkeypatch):
    result, control, selected = _run(make_context, models, "unplanted", monkeypatch)
    # a real direction was estimated (the noise path's difference of means), none of it along d
    assert selected.norm > 0
    assert float(selected.vector.double() @ models["direction"].double()) == 0.0
    add = control["add"]["groups"]["neutral"]["log_odds_change"]
    ablate = control["ablate"]["groups"]["all_risk"]["log_odds_change"]
    assert not control["add"]["detected"], add
    assert not control["ablate"]["detected"], ablate
    assert control["detected"] is False
    assert result.metrics["positive_control_detected"] is False
    assert result.verdict == INCONCLUSIVE  # an instrument that sees nothing vouches for nothing


def test_when_any_direction_moves_refusal_the_control_must_beat_random_ones(
    make_context, models, monkeypatch
):
    """The negative model: the unembedding reads a random direction, and no token is marked, so
    refusal log-odds move with whatever is added to or ablated from the residual stream, but no
    direction carries harmful-vs-harmless. The difference of means still moves them: ablating
    it lowers the risk prompts' refusal log-odds with an interval well clear of
    min_control_effect, which the check without a null counted as a seen control. Random
    directions of the same norm do as much, so it must not count. (A rank test at 0.05 calls a
    non-special direction special one time in 20; this seed's draw is one where the old rule
    was fooled, chosen so the test shows what the null is for.)"""
    result, control, _ = _run(make_context, models, "negative", monkeypatch)
    ablate = control["ablate"]
    change = ablate["change"]
    assert ablate["clears_floor"], change
    assert change["upper95"] < -0.5, change  # a large, tight change
    nulls = ablate["null"]["null_mean_changes"]
    assert max(abs(v) for v in nulls) > 0.5, nulls  # random directions move log-odds too
    assert ablate["null"]["p_value"] > check.CONTROL_ALPHA
    assert not ablate["beats_null"]
    assert not ablate["detected"]
    assert "random directions" in ablate["reason"]
    assert control["detected"] is False
    assert result.verdict == INCONCLUSIVE
