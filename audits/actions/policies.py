"""Release policies: drafts, edits and publication (after which a policy never changes)."""

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import transaction
from django.utils import timezone

from audits import checkkinds, ledger
from audits.errors import ActionError, ConflictError
from audits.ledger import Verb
from audits.models import CheckPolicy, PolicyAssignment, RequiredCheck


def validated_checks(checks: Iterable[Mapping[str, Any]]) -> list[dict]:
    """The checks as a policy stores them: kinds known, parameters and thresholds validated
    with their defaults filled in. Every problem of every check is reported at once, each
    named by its check key."""
    validated, problems, keys = [], [], set()
    for check in checks:
        if check["key"] in keys:
            problems.append(f"check {check['key']!r}: the key appears twice")
        keys.add(check["key"])
        try:
            validated.append(_validated_check(check))
        except checkkinds.CheckSpecError as exc:
            problems.append(f"check {check['key']!r}: {exc}")
    if problems:
        raise checkkinds.CheckSpecError("; ".join(problems))
    return validated


def _validated_check(check: Mapping[str, Any]) -> dict:
    kind = checkkinds.get(check["kind"])
    found = []
    results = {}
    for part, validate in (
        ("parameters", kind.validate_parameters),
        ("thresholds", kind.validate_thresholds),
    ):
        try:
            results[part] = validate(check.get(part) or {})
        except checkkinds.CheckSpecError as exc:
            found.append(str(exc))
    if found:
        raise checkkinds.CheckSpecError("; ".join(found))
    return {
        "key": check["key"],
        "kind": kind.name,
        "parameters": results["parameters"],
        "thresholds": results["thresholds"],
        "blocking": check.get("blocking", True),
    }


def _replace_checks(policy: CheckPolicy, checks: list[dict]) -> None:
    policy.required_checks.all().delete()
    RequiredCheck.objects.bulk_create(RequiredCheck(policy=policy, **check) for check in checks)


@transaction.atomic
def create_policy(
    *,
    actor,
    name: str,
    checks: Iterable[Mapping[str, Any]],
    description: str = "",
    approvals_required: int = 2,
    submitter_may_approve: bool = False,
) -> CheckPolicy:
    """A new draft; a name that exists already gets the next version number."""
    validated = validated_checks(checks)
    latest = CheckPolicy.objects.select_for_update().filter(name=name).order_by("-version")
    version = (latest.values_list("version", flat=True).first() or 0) + 1
    policy = CheckPolicy.objects.create(
        name=name,
        version=version,
        description=description,
        created_by=actor,
        approvals_required=approvals_required,
        submitter_may_approve=submitter_may_approve,
    )
    _replace_checks(policy, validated)
    ledger.record(Verb.POLICY_DRAFTED, actor=actor, target=policy, data=policy.content())
    return policy


@transaction.atomic
def update_draft_policy(
    *,
    actor,
    policy: CheckPolicy,
    changes: Mapping[str, Any],
    checks: Iterable[Mapping[str, Any]] | None = None,
) -> CheckPolicy:
    policy = CheckPolicy.objects.select_for_update().get(pk=policy.pk)
    if policy.is_published:
        raise ConflictError(
            f"policy {policy} is published and immutable; create a new version instead"
        )
    for name, value in changes.items():
        setattr(policy, name, value)
    policy.save()
    if checks is not None:
        _replace_checks(policy, validated_checks(checks))
    ledger.record(Verb.POLICY_EDITED, actor=actor, target=policy, data=policy.content())
    return policy


@transaction.atomic
def publish_policy(*, actor, policy: CheckPolicy) -> CheckPolicy:
    if not policy.required_checks.exists():
        raise ActionError(f"policy {policy} requires no checks; add at least one before publishing")
    digest = policy.compute_digest()
    updated = CheckPolicy.objects.filter(pk=policy.pk, status=CheckPolicy.Status.DRAFT).update(
        status=CheckPolicy.Status.PUBLISHED,
        digest=digest,
        published_by=actor,
        published_at=timezone.now(),
    )
    if not updated:
        raise ConflictError(f"policy {policy} is already published")
    policy.refresh_from_db()
    ledger.record(
        Verb.POLICY_PUBLISHED,
        actor=actor,
        target=policy,
        data={"digest": digest, "content": policy.content()},
    )
    return policy


@transaction.atomic
def assign_policy(*, actor, family: str, policy_name: str) -> PolicyAssignment:
    """The policy that new releases of a model family (or, with family "", of every family
    without its own) must be opened under: the newest published version of policy_name."""
    if not CheckPolicy.objects.filter(name=policy_name, status=CheckPolicy.Status.PUBLISHED):
        raise ConflictError(
            f"policy {policy_name!r} has no published version; publish one before assigning it"
        )
    assignment, _ = PolicyAssignment.objects.update_or_create(
        family=family,
        defaults={"policy_name": policy_name, "assigned_by": actor, "assigned_at": timezone.now()},
    )
    ledger.record(
        Verb.POLICY_ASSIGNED,
        actor=actor,
        target=assignment,
        data={"family": family, "policy": policy_name},
    )
    return assignment
