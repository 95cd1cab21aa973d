"""The README's demo figures, rechecked by a rerun (issue #11, item 7).

`make demo` wrote ``var/demo/findings.json``; its committed copy is
``demo_data/findings/smollm2.json`` and README.md's demo section is rendered from it
(tests/demo/test_readme_findings.py checks the README against the file). These tests rerun the
cheap checks behind figures the README states, on the real SmolLM2 base version, with the demo
policy's own parameters (``demo.policies``: ``audit_check()`` and ``discovery_check(axis)``,
never copies), the lens the demo registers (``demo.flow.shipped_lens``, named as
``demo.flow.lens_name`` names it) and the catalog the findings name, and compare what they
measure with the committed findings, read out by the demo's own ``demo.findings`` functions.

Which figures. The README states, from cheap checks, the catalog (feature #3250 on the cyber
axis, proposed by ``discover-cyber`` on the discovery split and confirmed by the demo reviewer)
and the audit table's base-version column (#3250's firing rate on its own axis and on neutral
prompts, Wilson 95 % intervals, n = 32 each; the audit's verdict). The rerun covers the base
audit (about 20 s on two cores) and the cyber discovery (about 45 s). The README states no
figure of the fidelity check, nor of the other axes' discoveries, so they are not rerun; the
behaviour, intervention and drift figures need the tuned version or many generations
(minutes to a quarter of an hour each) and are not cheap parts.

Tolerances. Same code, same weights (the GGUF's sha256 is checked against the findings'
weights digest first), same prompts and same seeds give the same numbers up to floating-point
noise: a different thread count or BLAS build sums in another order and moves activations by
~1e-7 relative (measured: a rerun on the demo's kind of machine, 2 threads, MKL, matched every
figure exactly except Cohen's d, off by 1.2e-7 relative). The evidence rounds floats to 6
significant digits. So:

- counts, n, feature indices and verdicts must be equal;
- a firing rate (and its Wilson interval) moves only if noise carries a prompt's score across
  the firing threshold, 0, of a TopK lens: none is allowed beyond the 6-digit rounding (1e-6);
- an AUROC can move only when noise reorders two scores that tie to ~1e-7, and each swap moves
  it by exactly 1 / (n_risk x n_neutral): one swap is allowed (1 / (32 x 32) for the audit,
  1 / (40 x 40) and 1 / (30 x 33) for discovery's two splits), for its seeded bootstrap
  interval too; a permutation p-value (k + 1) / (N + 1) may move by one count, 1 / (N + 1)
  (times top_n once Bonferroni-adjusted);
- continuous statistics (Cohen's d and its interval, chance's mean best AUROC) get 1e-4
  relative, a thousand times the measured noise and far below the README's printed precision
  (whole percent, two decimals).

A figure that does not reproduce within these is a finding to report, not a tolerance to
widen.
"""

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from interp_jobs.checks import feature_activation_audit, feature_discovery
from interp_jobs.checks.base import CatalogFeature, CheckContext, CheckResult, LensRef, ModelRef
from tests.factories import GGUF, REQUIRED

NO_MODEL = f"demo model not in the store ({GGUF})"


FINDINGS_FILE = Path(__file__).parents[2] / "demo_data" / "findings" / "smollm2.json"
NOISE = 1e-6  # the evidence's 6 significant digits on values of order 1
RELATIVE = 1e-4  # continuous statistics


def _findings() -> dict:
    return json.loads(FINDINGS_FILE.read_text(encoding="utf-8"))


@dataclass
class _Artifact:
    data: bytes

    def read_bytes(self) -> bytes:
        return self.data


class _Evidence:
    def __init__(self, result: CheckResult):
        self.result = result

    def filter(self, *, title: str):
        found = [_Artifact(a.data) for a in self.result.artifacts if a.title == title]
        return type("Found", (), {"first": lambda _self: found[0] if found else None})()


@dataclass
class _Run:
    """A finished check run as demo.findings reads one (kind, verdict, metrics, evidence by
    title), so the rerun's figures are read out exactly as the findings' were."""

    kind: str
    result: CheckResult

    @property
    def verdict(self) -> str:
        return self.result.verdict

    @property
    def metrics(self) -> dict:
        return self.result.metrics

    @property
    def evidence(self) -> _Evidence:
        return _Evidence(self.result)


@pytest.fixture(scope="module")
def base_refs() -> dict:
    """The base version as the demo registered it: the GGUF from the store (its sha256 the
    findings' weights digest) and the shipped lens, named as the demo names it."""
    from demo import flow

    findings = _findings()
    digest = hashlib.sha256(GGUF.read_bytes()).hexdigest()
    assert digest == findings["models"]["base"]["weights_digest"], (
        f"{GGUF} is not the model the findings were measured on"
    )
    lens_dir = flow.shipped_lens()
    name = flow.lens_name(lens_dir)
    assert {entry["lens"] for entry in findings["catalog"]} == {name}, (
        "the findings' catalog names another lens than the shipped one"
    )
    return {
        "model": ModelRef(
            path=str(GGUF), format="gguf", weights_digest=digest, file_digests={}, name="base"
        ),
        "lenses": (LensRef(path=str(lens_dir), digest="", name=name),),
        "catalog": tuple(
            CatalogFeature(e["lens"], e["index"], e["label"], e["risk_axis"])
            for e in findings["catalog"]
        ),
    }


def _run(module, check: dict, refs: dict) -> CheckResult:
    """One check of the demo policy, run as the worker runs it (runner.build_context)."""
    parameters = module.Parameters.parse(check["parameters"], what="parameters")
    context = CheckContext(
        parameters=parameters,
        thresholds=module.Thresholds.parse(check["thresholds"], what="thresholds"),
        seed=getattr(parameters, "seed", 0),
        **refs,
    )
    start = time.perf_counter()
    result = module.run(context)
    print(f"\n{check['key']} on the base version: {time.perf_counter() - start:.1f} s")
    return result


def _same_estimate(found: dict, recorded: dict, tolerance: float, what: str) -> None:
    assert found["n"] == recorded["n"], what
    assert found["method"] == recorded["method"], what
    for key in ("value", "lower95", "upper95"):
        assert found[key] == pytest.approx(recorded[key], abs=tolerance), f"{what} {key}"


def compare_audit(found: dict, recorded: dict) -> None:
    """An audit as demo.findings reads it (verdict; per feature, the firing rate on every axis
    and the own-axis AUROC) against the recorded one, within the module's tolerances."""
    assert found["verdict"] == recorded["verdict"]
    assert [r["feature"] for r in found["features"]] == [r["feature"] for r in recorded["features"]]
    for row, old in zip(found["features"], recorded["features"], strict=True):
        what = f"#{row['feature']}"
        assert row["risk_axis"] == old["risk_axis"], what
        assert set(row["firing_rate"]) == set(old["firing_rate"]), what
        for axis, rate in row["firing_rate"].items():
            _same_estimate(rate, old["firing_rate"][axis], NOISE, f"{what} firing on {axis}")
        own, neutral = row["firing_rate"][row["risk_axis"]], row["firing_rate"]["neutral"]
        one_swap = 1 / (own["n"] * neutral["n"])
        _same_estimate(
            row["auroc_own_axis_vs_neutral"],
            old["auroc_own_axis_vs_neutral"],
            one_swap,
            f"{what} own-axis AUROC",
        )


def compare_discovery(found: dict, recorded: dict, check: dict) -> None:
    """A discovery as demo.findings reads it (verdict, metrics, the top feature with its
    held-out confirmation) against the recorded one, within the module's tolerances."""
    assert found["verdict"] == recorded["verdict"]
    top, old = found["top_feature"], recorded["top_feature"]
    assert top["feature"] == old["feature"]
    metrics, old_metrics = found["metrics"], recorded["metrics"]
    for key in (
        "best_auroc_feature",
        "best_effect_size_feature",
        "n_features_found",
        "n_features_scanned",
        "n_risk_prompts",
        "n_neutral_prompts",
        "n_confirmation_prompts",
        "held_out",
    ):
        assert metrics[key] == old_metrics[key], key
    one_count = 1 / (check["parameters"]["n_permutations"] + 1)
    top_n = check["parameters"]["top_n"]
    ranked = 1 / (metrics["n_risk_prompts"] * metrics["n_neutral_prompts"])
    assert top["auroc"] == pytest.approx(old["auroc"], abs=ranked)
    assert metrics["best_auroc"] == pytest.approx(old_metrics["best_auroc"], abs=ranked)
    for key in ("best_effect_size", "chance_best_auroc"):
        assert metrics[key] == pytest.approx(old_metrics[key], rel=RELATIVE), key
    assert metrics["chance_p_value"] == pytest.approx(old_metrics["chance_p_value"], abs=one_count)

    confirmation, old_confirmation = top["confirmation"], old["confirmation"]
    risk, neutral = confirmation["firing_rate_risk"], confirmation["firing_rate_neutral"]
    held_out = 1 / (risk["n"] * neutral["n"])
    _same_estimate(confirmation["auroc"], old_confirmation["auroc"], held_out, "held-out AUROC")
    _same_estimate(
        metrics["best_auroc_confirmed"], old_metrics["best_auroc_confirmed"], held_out, "best"
    )
    for key in ("firing_rate_risk", "firing_rate_neutral"):
        _same_estimate(confirmation[key], old_confirmation[key], NOISE, key)
    effect, old_effect = confirmation["effect_size"], old_confirmation["effect_size"]
    assert (effect["n"], effect["method"]) == (old_effect["n"], old_effect["method"])
    for key in ("value", "lower95", "upper95"):
        assert effect[key] == pytest.approx(old_effect[key], rel=RELATIVE), f"effect size {key}"
    assert confirmation["n_permutations"] == old_confirmation["n_permutations"]
    assert confirmation["p_value"] == pytest.approx(old_confirmation["p_value"], abs=one_count)
    assert confirmation["p_value_adjusted"] == pytest.approx(
        old_confirmation["p_value_adjusted"], abs=top_n * one_count
    )
    assert metrics["best_auroc_confirmed_p_value"] == pytest.approx(
        old_metrics["best_auroc_confirmed_p_value"], abs=top_n * one_count
    )


@pytest.mark.smollm2
@pytest.mark.skipif(not GGUF.is_file() and not REQUIRED, reason=NO_MODEL)
def test_the_base_audit_reproduces_the_readme_table(base_refs):
    """The README's audit row for the base version: the catalog feature's firing rates on its
    own axis and on neutral prompts, and the verdict; every axis's rate and the own-axis AUROC
    are compared as well."""
    from demo import findings as demo_findings
    from demo import policies

    check = policies.audit_check()
    result = _run(feature_activation_audit, check, base_refs)
    found = demo_findings._audit(_Run(check["kind"], result))
    compare_audit(found, _findings()["audit"]["base"])


@pytest.mark.smollm2
@pytest.mark.skipif(not GGUF.is_file() and not REQUIRED, reason=NO_MODEL)
def test_the_cyber_discovery_reproduces_the_catalog_feature(base_refs):
    """discover-cyber on the discovery split proposes the catalog's feature (#3250, the one
    the README's tables are about), with the figures the findings record for it."""
    from demo import findings as demo_findings
    from demo import policies

    findings = _findings()
    (entry,) = [e for e in findings["catalog"] if e["risk_axis"] == "cyber"]
    check = policies.discovery_check("cyber")
    result = _run(feature_discovery, check, base_refs)
    found = demo_findings._discovery({check["key"]: _Run(check["kind"], result)})[check["key"]]
    assert found["top_feature"]["feature"] == entry["index"]
    compare_discovery(found, findings["discovery"][check["key"]], check)


def _moved_by_one_prompt(rate: dict) -> dict:
    n = rate["n"]
    return {**rate, "value": rate["value"] - 1 / n}


def test_the_comparisons_refuse_a_figure_one_prompt_or_one_pair_away():
    """The comparisons can fail: the committed findings match themselves, and moving one
    prompt of a firing rate, one pair of an AUROC or the top feature is caught (no model)."""
    from demo import policies

    findings = _findings()
    audit = findings["audit"]["base"]
    compare_audit(audit, audit)
    row = audit["features"][0]
    moved = {
        **row,
        "firing_rate": {
            **row["firing_rate"],
            "neutral": _moved_by_one_prompt(row["firing_rate"]["neutral"]),
        },
    }
    with pytest.raises(AssertionError, match="firing on neutral"):
        compare_audit({**audit, "features": [moved]}, audit)
    auroc = row["auroc_own_axis_vs_neutral"]
    swapped = {**row, "auroc_own_axis_vs_neutral": {**auroc, "value": auroc["value"] + 2 / 1024}}
    with pytest.raises(AssertionError, match="own-axis AUROC"):
        compare_audit({**audit, "features": [swapped]}, audit)

    check = policies.discovery_check("cyber")
    discovery = findings["discovery"][check["key"]]
    compare_discovery(discovery, discovery, check)
    other = {**discovery, "top_feature": {**discovery["top_feature"], "feature": 3251}}
    with pytest.raises(AssertionError):
        compare_discovery(other, discovery, check)
