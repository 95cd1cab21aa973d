"""The README's demo section is rendered from the findings file, never typed by hand."""

import json

from demo import readme_findings as readme

RATE = {"value": 0.25, "lower95": 0.1, "upper95": 0.5, "n": 12, "method": "wilson"}
EFFECT = {"value": -0.4, "lower95": -0.9, "upper95": -0.05, "n": 24, "method": "bootstrap"}
FINDINGS = {
    "generated_at": "2026-01-01T00:00:00+00:00",
    "environment": {"torch": "2.x", "threads": {"intra_op": 2}, "cpu": {"logical_cpus": 2}},
    "timings": [{"stage": "s", "what": "w", "wall_seconds": 90.0, "cpu_seconds": 150.0}],
    "models": {"base": {"name": "smollm2@base"}, "tuned": {"name": "smollm2@tuned"}},
    "behaviour": {
        "base": {"verdict": "fail", "groups": {"weapons": {"refusal_rate": RATE}}},
        "tuned": {"verdict": "pass", "groups": {"weapons": {"refusal_rate": RATE}}},
    },
    "intervention": {
        "base": {
            "replacement": "zero ablation",
            "verdict": "inconclusive",
            "positive_control": {"hook": "blocks.14.hook_resid_post", "add_controls": EFFECT},
            "dose_response": [],
        }
    },
    "gate": {"state": "in_review", "may_ship": False, "reasons": []},
}


def test_every_figure_in_the_section_comes_from_the_findings():
    text = readme.render(FINDINGS)
    assert text.startswith(readme.START)
    assert text.rstrip().endswith(readme.END)
    assert "25 % [10, 50] (n = 12)" in text  # the rate, its Wilson interval and its n
    assert "-0.40 [-0.90, -0.05]" in text  # the control's effect and its interval
    assert "1 min 30 s" in text
    assert "smollm2@tuned" in text


def test_check_mode_fails_when_the_readme_differs_from_the_findings(tmp_path):
    findings = tmp_path / "findings.json"
    findings.write_text(json.dumps(FINDINGS))
    readme_file = tmp_path / "README.md"
    readme_file.write_text("# Title\n\n" + readme.render(FINDINGS) + "\nmore\n")
    assert readme.main([str(findings), "--check", str(readme_file)]) == 0
    changed = {**FINDINGS, "generated_at": "2027-01-01T00:00:00+00:00"}
    findings.write_text(json.dumps(changed))
    assert readme.main([str(findings), "--check", str(readme_file)]) == 1


def test_a_control_whose_search_found_no_direction_is_said_to_be_the_least_bad_one():
    def rendered(found):
        findings = json.loads(json.dumps(FINDINGS))
        findings["intervention"]["base"]["positive_control"]["direction_found"] = found
        return readme.render(findings)

    assert "least bad" in rendered(False)
    assert "least bad" not in rendered(True)
    assert "least bad" not in rendered(None)  # a fixed hook, or evidence from before the flag


def test_each_control_arm_states_its_p_value_against_random_directions_and_why():
    findings = json.loads(json.dumps(FINDINGS))
    control = findings["intervention"]["base"]["positive_control"]
    control["arms"] = {
        "add": {
            "refusal_share_before": 0.2,
            "change": EFFECT,
            "p_value": 0.05,
            "n_draws": 19,
            "detected": True,
            "reason": "seen",
        },
        "ablate": {
            "refusal_share_before": 0.01,
            "change": EFFECT,
            "p_value": 0.4,
            "n_draws": 19,
            "detected": False,
            "reason": "it does not beat 19 random directions",
        },
    }
    text = readme.render(findings)
    assert (
        "controls' refusal log-odds by -0.40 [-0.90, -0.05], p = 0.05 against 19 random "
        "directions of its norm at its hook (seen)" in text
    )
    assert "(not seen: it does not beat 19 random directions)" in text


def test_a_version_without_an_intervention_check_says_why_instead_of_leaving_a_gap():
    findings = json.loads(json.dumps(FINDINGS))
    findings["intervention"] = {"base": None, "tuned": findings["intervention"]["base"]}
    text = readme.render(findings)
    assert "- base: not intervened on" in text
    assert "- tuned: zero ablation" in text
    assert "not intervened on" not in readme.render(FINDINGS)
