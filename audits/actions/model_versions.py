"""Registering model versions and recording their digests (computed by a worker job)."""

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from audits import dispatch, ledger
from audits.errors import ConflictError, ForbiddenError
from audits.ledger import Verb
from audits.models import ModelVersion


@transaction.atomic
def register_model_version(
    *,
    actor,
    family: str,
    version: str,
    source_path: str,
    fmt: str,
    parent: ModelVersion | None = None,
    description: str = "",
) -> ModelVersion:
    if ModelVersion.objects.filter(family=family, version=version).exists():
        raise ConflictError(f"model version {family}@{version} is already registered")
    model_version = ModelVersion.objects.create(
        family=family,
        version=version,
        source_path=source_path,
        format=fmt,
        parent=parent,
        description=description,
        registered_by=actor,
    )
    ledger.record(
        Verb.MODEL_VERSION_REGISTERED,
        actor=actor,
        target=model_version,
        data={
            "family": family,
            "version": version,
            "source_path": source_path,
            "format": fmt,
            "parent": str(parent.pk) if parent else None,
        },
    )
    dispatch.enqueue_model_digests(model_version.pk)
    return model_version


@transaction.atomic
def update_model_version(*, actor, model_version: ModelVersion, description: str) -> ModelVersion:
    if not model_version.may_be_described_by(actor):
        raise ForbiddenError(
            "only the person who registered a model version or an admin may describe it"
        )
    model_version.description = description
    model_version.save(update_fields=["description"])
    ledger.record(
        Verb.MODEL_VERSION_DESCRIBED,
        actor=actor,
        target=model_version,
        data={"description": description},
    )
    return model_version


@dataclass(frozen=True)
class ModelDigests:
    weights_digest: str
    tokenizer_digest: str
    config_digest: str
    file_digests: dict[str, str]


@transaction.atomic
def record_model_digests(*, model_version_id, digests: ModelDigests) -> bool:
    updated = ModelVersion.objects.filter(
        pk=model_version_id, digest_status=ModelVersion.DigestStatus.PENDING
    ).update(
        digest_status=ModelVersion.DigestStatus.COMPUTED,
        digested_at=timezone.now(),
        weights_digest=digests.weights_digest,
        tokenizer_digest=digests.tokenizer_digest,
        config_digest=digests.config_digest,
        file_digests=digests.file_digests,
    )
    if updated:
        model_version = ModelVersion.objects.get(pk=model_version_id)
        ledger.record(
            Verb.MODEL_VERSION_DIGESTED,
            actor=None,
            target=model_version,
            # Everything the records hold about the files, so verify_ledger can bind them.
            data={
                "weights_digest": digests.weights_digest,
                "tokenizer_digest": digests.tokenizer_digest,
                "config_digest": digests.config_digest,
                "files": digests.file_digests,
            },
        )
    return bool(updated)


@transaction.atomic
def record_model_digest_failure(*, model_version_id, reason: str) -> bool:
    updated = ModelVersion.objects.filter(
        pk=model_version_id, digest_status=ModelVersion.DigestStatus.PENDING
    ).update(digest_status=ModelVersion.DigestStatus.FAILED, digest_error=reason)
    if updated:
        model_version = ModelVersion.objects.get(pk=model_version_id)
        ledger.record(
            Verb.MODEL_VERSION_DIGEST_FAILED,
            actor=None,
            target=model_version,
            data={"reason": reason},
        )
    return bool(updated)
