"""The demo reviewer's catalog names quote how well a feature separates prompts it was not
ranked on (a statistician's review: the name quoted the discovery split's 0.85, the best of
4096 features on their own ranking prompts)."""

from audits.models import CatalogFeature
from demo.flow import _label

HELD_OUT = {"value": 0.836869, "lower95": 0.728258, "upper95": 0.927273, "n": 63}


def _feature(evidence: dict) -> CatalogFeature:
    contexts = [{"token": " teenage"}]
    return CatalogFeature(
        risk_axis="cyber", index=3250, evidence={**evidence, "contexts": contexts}
    )


def test_the_name_quotes_the_held_out_auroc_with_its_interval_not_the_in_sample_one():
    label = _label(_feature({"auroc": 0.846875, "confirmation": {"auroc": HELD_OUT}}))
    assert "held-out AUROC 0.84 [0.73, 0.93], n = 63" in label
    assert "0.85" not in label


def test_a_feature_never_confirmed_held_out_says_its_auroc_is_in_sample():
    label = _label(_feature({"auroc": 0.846875}))
    assert "AUROC 0.85 in sample, not confirmed held out" in label
