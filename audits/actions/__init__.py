"""State-changing workflows, one module per workflow. Each is atomic and writes its ledger
event in the same transaction.

Views, serializers and tasks validate input and call these; they never change records directly.
Contested transitions are compare-and-swap: an UPDATE filtered on the old state, acting only when
it changed exactly one row. Imports run one way: models -> errors -> queries -> statements ->
statement_rules -> actions -> api / web / worker.
"""

from audits.actions.accounts import grant_role, remove_role
from audits.actions.check_runs import (
    Artifact,
    Outcome,
    append_log,
    cancel_check_run,
    complete_check_run,
    fail_check_run,
    queue_check_run,
    record_evidence_integrity_failure,
    report_progress,
    requeue_stuck_run,
    rerun_check,
    start_check_run,
    store_evidence_bytes,
)
from audits.actions.decisions import (
    CHALLENGE_MAX_AGE,
    issue_key_challenge,
    record_decision,
    register_reviewer_key,
    revoke_reviewer_key,
    signing_envelope,
)
from audits.actions.ledger_keys import Rotation, rotate_ledger_key
from audits.actions.lenses import (
    LensFacts,
    carry_features,
    propose_features,
    record_lens_failed,
    record_lens_validated,
    register_lens,
    request_lens_training,
    review_feature,
)
from audits.actions.model_versions import (
    ModelDigests,
    record_model_digest_failure,
    record_model_digests,
    register_model_version,
    update_model_version,
)
from audits.actions.policies import (
    assign_policy,
    create_policy,
    publish_policy,
    update_draft_policy,
    validated_checks,
)
from audits.actions.release_state import refresh_release_state
from audits.actions.releases import open_release, withdraw_release
from audits.errors import ActionError, ConflictError, ForbiddenError

__all__ = [
    "CHALLENGE_MAX_AGE",
    "ActionError",
    "Artifact",
    "ConflictError",
    "ForbiddenError",
    "LensFacts",
    "ModelDigests",
    "Outcome",
    "Rotation",
    "append_log",
    "assign_policy",
    "cancel_check_run",
    "carry_features",
    "complete_check_run",
    "create_policy",
    "fail_check_run",
    "grant_role",
    "issue_key_challenge",
    "open_release",
    "propose_features",
    "publish_policy",
    "queue_check_run",
    "record_decision",
    "record_evidence_integrity_failure",
    "record_lens_failed",
    "record_lens_validated",
    "record_model_digest_failure",
    "record_model_digests",
    "refresh_release_state",
    "register_lens",
    "register_model_version",
    "register_reviewer_key",
    "remove_role",
    "report_progress",
    "request_lens_training",
    "requeue_stuck_run",
    "rerun_check",
    "review_feature",
    "revoke_reviewer_key",
    "rotate_ledger_key",
    "signing_envelope",
    "start_check_run",
    "store_evidence_bytes",
    "update_draft_policy",
    "update_model_version",
    "validated_checks",
    "withdraw_release",
]
