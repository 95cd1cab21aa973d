"""The gate's rules, on plain facts: it never answers approved without eligible approvals."""

from audits.gate import CheckFacts, DecisionFacts, ReleaseFacts, evaluate

PASSED = CheckFacts("fp", "weights_fingerprint", True, "succeeded", "pass")


def _facts(checks=(PASSED,), decisions=(), withdrawn=False, need=2):
    return ReleaseFacts(
        withdrawn=withdrawn,
        approvals_required=need,
        checks=tuple(checks),
        decisions=tuple(decisions),
    )


def _approve(reviewer, eligible=True, current=True):
    return DecisionFacts(reviewer, "approve", eligible, current)


def test_passing_checks_without_decisions_are_in_review_never_approved():
    answer = evaluate(_facts())
    assert answer.state == "in_review"
    assert not answer.may_ship
    assert answer.reasons[0]["code"] == "approvals_missing"


def test_running_checks_keep_the_release_checking():
    answer = evaluate(
        _facts(checks=[PASSED, CheckFacts("sae", "sae_fidelity", True, "running", "")])
    )
    assert answer.state == "checking"
    assert answer.reasons[0] == {
        "code": "check_pending",
        "message": "check 'sae' is running",
        "check": "sae",
    }


def test_failed_blocking_check_blocks_even_with_approvals():
    failed = CheckFacts("fp", "weights_fingerprint", True, "succeeded", "fail")
    answer = evaluate(_facts(checks=[failed], decisions=[_approve(1), _approve(2)]))
    assert answer.state == "in_review"
    assert answer.reasons[0]["code"] == "blocking_check_not_passed"


def test_errored_blocking_check_blocks():
    errored = CheckFacts("fp", "weights_fingerprint", True, "errored", "")
    answer = evaluate(_facts(checks=[errored], decisions=[_approve(1), _approve(2)]))
    assert answer.reasons[0]["outcome"] == "errored"


def test_failed_advisory_check_does_not_block():
    advisory = CheckFacts("probe", "behavior_probe", False, "succeeded", "fail")
    assert (
        evaluate(_facts(checks=[PASSED, advisory], decisions=[_approve(1), _approve(2)])).state
        == "approved"
    )


def test_waived_blocking_check_does_not_block():
    waived = CheckFacts("fp", "weights_fingerprint", True, "succeeded", "fail", waived=True)
    assert evaluate(_facts(checks=[waived], decisions=[_approve(1), _approve(2)])).may_ship


def test_one_reviewer_approving_twice_counts_once():
    answer = evaluate(_facts(decisions=[_approve(1), _approve(1)]))
    assert answer.state == "in_review"
    assert answer.reasons[0]["have"] == 1


def test_ineligible_and_stale_approvals_do_not_count():
    answer = evaluate(
        _facts(decisions=[_approve(1, eligible=False), _approve(2, current=False), _approve(3)])
    )
    assert answer.state == "in_review"
    assert answer.reasons[0]["have"] == 1
    assert "2 approval(s) do not count" in answer.reasons[0]["message"]


def test_a_standing_rejection_wins_over_approvals():
    rejection = DecisionFacts(3, "reject", True, True)
    assert evaluate(_facts(decisions=[_approve(1), _approve(2), rejection])).state == "rejected"


def test_withdrawn_wins_over_everything():
    assert evaluate(_facts(withdrawn=True, decisions=[_approve(1), _approve(2)])).state == (
        "withdrawn"
    )
