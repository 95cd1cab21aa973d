"""The record system. Rules about one record live here; workflows live in audits.actions."""

import hashlib
import uuid
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from audits.canonical import json_digest
from audits.roles import Role, has_role


class ImmutableFieldError(ValidationError):
    """An attempt to change a field that identifies a record."""


class AppendOnlyError(ValidationError):
    """An attempt to change or delete a record of an append-only table."""


class EvidenceIntegrityError(Exception):
    """Stored evidence bytes no longer match the sha256 recorded when they were written."""


class ProtectedFieldsModel(models.Model):
    """Refuses changes to identity fields, and lets write-once fields be filled only once."""

    IMMUTABLE_FIELDS: tuple[str, ...] = ()
    WRITE_ONCE_FIELDS: tuple[str, ...] = ()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            self._refuse_protected_changes()
        super().save(*args, **kwargs)

    def _refuse_protected_changes(self) -> None:
        stored = (
            type(self)
            ._default_manager.filter(pk=self.pk)
            .values(*self._attnames(self.IMMUTABLE_FIELDS + self.WRITE_ONCE_FIELDS))
            .first()
        )
        if stored is None:
            return
        for name in self._attnames(self.IMMUTABLE_FIELDS):
            if stored[name] != getattr(self, name):
                raise ImmutableFieldError(f"{name} is immutable once a record exists")
        for name in self._attnames(self.WRITE_ONCE_FIELDS):
            if stored[name] not in ("", None) and stored[name] != getattr(self, name):
                raise ImmutableFieldError(f"{name} was already recorded and cannot change")

    def _attnames(self, names):
        return tuple(self._meta.get_field(name).attname for name in names)  # type: ignore[union-attr]


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only")

    def delete(self):
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only")


class AppendOnlyModel(models.Model):
    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} rows are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError(f"{type(self).__name__} rows are append-only")


class ModelVersion(ProtectedFieldsModel):
    class Format(models.TextChoices):
        HF_DIR = "hf_dir", "Hugging Face directory"
        GGUF = "gguf", "GGUF file"

    class DigestStatus(models.TextChoices):
        PENDING = "pending"
        COMPUTED = "computed"
        FAILED = "failed"

    IMMUTABLE_FIELDS = (
        "id",
        "family",
        "version",
        "source_path",
        "format",
        "parent",
        "registered_by",
        "registered_at",
    )
    WRITE_ONCE_FIELDS = ("weights_digest", "tokenizer_digest", "config_digest", "file_digests")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    family = models.CharField(max_length=100)
    version = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    source_path = models.CharField(max_length=1000)
    format = models.CharField(max_length=10, choices=Format.choices)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    # Digests are computed by a worker job from the files on disk, never taken from a client.
    digest_status = models.CharField(
        max_length=10, choices=DigestStatus.choices, default=DigestStatus.PENDING
    )
    digest_error = models.TextField(blank=True)
    weights_digest = models.CharField(max_length=64, blank=True)
    tokenizer_digest = models.CharField(max_length=64, blank=True)
    config_digest = models.CharField(max_length=64, blank=True)
    file_digests = models.JSONField(default=dict, blank=True)
    digested_at = models.DateTimeField(null=True, blank=True)
    registered_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    registered_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-registered_at"]
        constraints = [
            models.UniqueConstraint(fields=["family", "version"], name="unique_model_version")
        ]

    def __str__(self) -> str:
        return f"{self.family}@{self.version}"

    @property
    def digests_ready(self) -> bool:
        return self.digest_status == self.DigestStatus.COMPUTED

    def may_be_described_by(self, user) -> bool:
        """Only the person who registered a version, or an admin, may change its description."""
        return user.pk == self.registered_by_id or has_role(user, Role.ADMIN)


class CheckPolicy(ProtectedFieldsModel):
    class Status(models.TextChoices):
        DRAFT = "draft"
        PUBLISHED = "published"

    IMMUTABLE_FIELDS = ("id", "name", "version", "created_by", "created_at")
    WRITE_ONCE_FIELDS = ("digest",)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.SlugField(max_length=100)
    version = models.PositiveIntegerField()
    description = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    approvals_required = models.PositiveSmallIntegerField(default=2)
    approver_role = models.CharField(max_length=20, default="reviewer")
    submitter_may_approve = models.BooleanField(default=False)
    digest = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="unique_policy_version"),
            models.CheckConstraint(
                condition=models.Q(approvals_required__gte=1), name="policy_needs_an_approval"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    def save(self, *args, **kwargs):
        if not self._state.adding and self._stored_status() == self.Status.PUBLISHED:
            raise ImmutableFieldError(f"policy {self} is published and cannot change")
        super().save(*args, **kwargs)

    @property
    def is_published(self) -> bool:
        return self.status == self.Status.PUBLISHED

    def _stored_status(self) -> str | None:
        return type(self).objects.filter(pk=self.pk).values_list("status", flat=True).first()

    def content(self) -> dict:
        """What the policy says; its digest is what releases and signatures pin."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "approvals_required": self.approvals_required,
            "approver_role": self.approver_role,
            "submitter_may_approve": self.submitter_may_approve,
            "required_checks": [check.content() for check in self.required_checks.all()],
        }

    def compute_digest(self) -> str:
        return json_digest(self.content())


class PolicyAssignment(models.Model):
    """Which policy the releases of a model family must satisfy, assigned by an admin. The row
    with family "" is the default for families without their own. The newest published
    version of the named policy applies to new releases; each assignment is a ledger event."""

    DEFAULT_FAMILY = ""

    family = models.CharField(max_length=100, unique=True, blank=True)
    policy_name = models.SlugField(max_length=100)
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    assigned_at = models.DateTimeField()

    class Meta:
        ordering = ["family"]

    def __str__(self) -> str:
        return f"{self.family or '(default)'} -> {self.policy_name}"


class RequiredCheck(models.Model):
    policy = models.ForeignKey(
        CheckPolicy, on_delete=models.CASCADE, related_name="required_checks"
    )
    key = models.SlugField(max_length=64, help_text="name of this check within its policy")
    kind = models.CharField(max_length=40)
    parameters = models.JSONField(default=dict, blank=True)
    thresholds = models.JSONField(default=dict, blank=True)
    blocking = models.BooleanField(default=True)

    class Meta:
        ordering = ["policy", "key"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "key"], name="unique_check_key_per_policy")
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.kind})"

    def save(self, *args, **kwargs):
        self._refuse_if_published()
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        self._refuse_if_published()
        return super().delete(*args, **kwargs)

    def _refuse_if_published(self) -> None:
        if CheckPolicy.objects.filter(pk=self.policy_id, status=CheckPolicy.Status.PUBLISHED):
            raise ImmutableFieldError(f"policy {self.policy} is published and cannot change")

    def content(self) -> dict:
        return {
            "key": self.key,
            "kind": self.kind,
            "parameters": self.parameters,
            "thresholds": self.thresholds,
            "blocking": self.blocking,
        }


class Release(ProtectedFieldsModel):
    class State(models.TextChoices):
        DRAFT = "draft"
        CHECKING = "checking"
        IN_REVIEW = "in_review"
        APPROVED = "approved"
        REJECTED = "rejected"
        WITHDRAWN = "withdrawn"

    class Purpose(models.TextChoices):
        RELEASE = "release", "release (may ship once approved)"
        EVALUATION = "evaluation", "evaluation (never ships; any published policy)"

    IMMUTABLE_FIELDS = (
        "id",
        "model_version",
        "policy",
        "policy_digest",
        "purpose",
        "submitter",
        "opened_at",
        "idempotency_key",
        "request_digest",
    )

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    policy = models.ForeignKey(CheckPolicy, on_delete=models.PROTECT, related_name="releases")
    policy_digest = models.CharField(max_length=64)
    purpose = models.CharField(max_length=12, choices=Purpose.choices, default=Purpose.RELEASE)
    title = models.CharField(max_length=200, blank=True)
    # A cache of gate.evaluate(); only actions.refresh_release_state writes it.
    state = models.CharField(max_length=12, choices=State.choices, default=State.DRAFT)
    state_reasons = models.JSONField(default=list, blank=True)
    trust_warnings = models.JSONField(default=list, blank=True)
    submitter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    opened_at = models.DateTimeField(auto_now_add=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    # NULL, not "", so that releases opened without a key never collide on the constraint.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    request_digest = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["submitter", "idempotency_key"], name="unique_release_idempotency_key"
            )
        ]

    def __str__(self) -> str:
        return f"release {self.id} of {self.model_version_id}"

    def may_be_managed_by(self, user) -> bool:
        """Withdrawing a release, re-running or cancelling its checks: its submitter or an
        admin, never another submitter."""
        return user.pk == self.submitter_id or has_role(user, Role.ADMIN)


class CheckRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        ERRORED = "errored"
        CANCELLED = "cancelled"

    class Verdict(models.TextChoices):
        PASS = "pass"  # noqa: S105 - a verdict, not a password
        FAIL = "fail"
        INCONCLUSIVE = "inconclusive"

    FINISHED = (Status.SUCCEEDED, Status.ERRORED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="check_runs")
    required_check = models.ForeignKey(RequiredCheck, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=40)
    attempt = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    verdict = models.CharField(max_length=12, choices=Verdict.choices, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    summary = models.TextField(blank=True)
    error = models.TextField(blank=True)
    progress = models.FloatField(default=0.0)
    stage = models.CharField(max_length=200, blank=True)
    log = models.TextField(blank=True)
    deliveries = models.PositiveSmallIntegerField(default=0)
    provenance = models.JSONField(default=dict, blank=True)
    manifest_digest = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )

    class Meta:
        ordering = ["release", "required_check__key", "attempt"]
        constraints = [
            models.UniqueConstraint(
                fields=["release", "required_check", "attempt"], name="unique_check_attempt"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.attempt} for {self.release_id}"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


def evidence_path(sha256: str) -> Path:
    return Path(settings.ASSAY_EVIDENCE_ROOT) / sha256[:2] / sha256


class Evidence(AppendOnlyModel):
    """An artifact of a check run, stored content-addressed by the sha256 of its bytes."""

    class Kind(models.TextChoices):
        INTEGRITY = "integrity", "integrity measurement"
        OBSERVED = "observed", "observed activation"
        ATTRIBUTION = "attribution", "attribution estimate (linear approximation)"
        INTERVENTION = "intervention", "intervention result (measured causal effect)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    check_run = models.ForeignKey(CheckRun, on_delete=models.PROTECT, related_name="evidence")
    title = models.CharField(max_length=200)
    media_type = models.CharField(max_length=100)
    evidence_kind = models.CharField(max_length=12, choices=Kind.choices)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["check_run", "title"]
        constraints = [
            # A redelivered task must not attach the same artifact twice.
            models.UniqueConstraint(fields=["check_run", "title"], name="unique_evidence_title")
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.sha256[:12]})"

    @property
    def path(self) -> Path:
        return evidence_path(self.sha256)

    def read_bytes(self) -> bytes:
        """The stored bytes, checked against their recorded hash on every read."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise EvidenceIntegrityError(
                f"evidence {self.id} ({self.title}) is missing from the evidence store"
            ) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != self.sha256:
            raise EvidenceIntegrityError(
                f"evidence {self.id} ({self.title}) no longer matches its recorded sha256 "
                f"{self.sha256}; the stored bytes hash to {actual}. The file was altered or "
                "corrupted after it was recorded."
            )
        return data


class AuditEvent(AppendOnlyModel):
    """The ledger: one row per state change, written in the same transaction as the change.

    Each event is chained to the previous one by hash and is a leaf of an RFC 6962 Merkle tree
    (see audits/ledger.py for the exact bytes).
    """

    seq = models.BigIntegerField(primary_key=True)  # 1, 2, 3 … without gaps, set by the ledger
    at = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    actor_label = models.CharField(max_length=200)
    verb = models.CharField(max_length=60)
    target_type = models.CharField(max_length=40)
    target_id = models.CharField(max_length=64)
    data = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    entry_hash = models.CharField(max_length=64)
    # The exact canonical JSON that entry_hash is the sha256 of. The columns above index it;
    # verify_ledger checks that they say the same as these bytes.
    body = models.TextField()

    class Meta:
        ordering = ["seq"]
        indexes = [
            models.Index(fields=["target_type", "target_id"]),
            models.Index(fields=["verb"]),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.verb} {self.target_type}:{self.target_id}"


class LedgerHead(models.Model):
    """One row: the last event's number and hash. Locking it serialises ledger writes.

    frontier holds the roots of the perfect subtrees along the tree's right edge (one per set
    bit of seq, lowest level first, null where the bit is clear), so appending a leaf stores
    its new Merkle nodes without reading any."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    head_hash = models.CharField(max_length=64, default="0" * 64)
    frontier = models.JSONField(default=list, blank=True)

    def __str__(self) -> str:
        return f"ledger head #{self.seq}"


class MerkleNode(AppendOnlyModel):
    """The root of one perfect subtree of the ledger's Merkle tree: 2**level leaves starting at
    leaf index * 2**level (level 0: the leaf hashes). Stored once, when the subtree completes,
    so roots and proofs for any tree size cost O(log n) lookups (RFC 6962's split makes every
    left subtree perfect and aligned)."""

    level = models.PositiveSmallIntegerField()
    index = models.BigIntegerField()
    hash = models.CharField(max_length=64)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["level", "index"], name="unique_merkle_node")
        ]

    def __str__(self) -> str:
        return f"merkle node {self.level}/{self.index}"


class LedgerCheckpoint(AppendOnlyModel):
    """A signed statement by the server of the ledger's Merkle tree size and root."""

    tree_size = models.BigIntegerField(unique=True)
    root_hash = models.CharField(max_length=64)
    timestamp = models.DateTimeField()
    key_id = models.CharField(max_length=64)
    body = models.TextField()  # the exact signed bytes (canonical JSON)
    signature = models.CharField(max_length=200)  # base64 Ed25519 signature over body

    class Meta:
        ordering = ["tree_size"]

    def __str__(self) -> str:
        return f"checkpoint {self.tree_size} {self.root_hash[:12]}"


class ReviewerKey(models.Model):
    """A person's Ed25519 public key. The private key never reaches the server."""

    key_id = models.CharField(max_length=64, primary_key=True)  # sha256 of the raw public key
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviewer_keys"
    )
    public_key = models.CharField(max_length=64)  # raw 32 bytes, base64
    label = models.CharField(max_length=100, blank=True)
    registered_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-registered_at"]

    def __str__(self) -> str:
        return f"{self.user} key {self.key_id[:12]}"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class Decision(AppendOnlyModel):
    """A signed approve / reject / waive-check decision, exactly as the reviewer signed it."""

    class Type(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"
        WAIVE = "waive"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="decisions")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    key = models.ForeignKey(ReviewerKey, on_delete=models.PROTECT, related_name="decisions")
    decision = models.CharField(max_length=10, choices=Type.choices)
    check_key = models.CharField(max_length=64, blank=True)  # the waived check
    rationale = models.TextField()
    conditions = models.JSONField(default=list, blank=True)
    evidence_digest = models.CharField(max_length=64)  # what the signature covers
    statement = models.JSONField()
    envelope = models.JSONField()
    payload_sha256 = models.CharField(max_length=64)
    signed_at = models.DateTimeField()
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["recorded_at"]

    def __str__(self) -> str:
        return f"{self.decision} by {self.reviewer_id} on {self.release_id}"


class Lens(ProtectedFieldsModel):
    """An SAE or transcoder in SAELens's on-disk format, registered for one model version."""

    class Status(models.TextChoices):
        PENDING = "pending"  # registered; a job validates it against the model
        READY = "ready"
        FAILED = "failed"
        TRAINING = "training"

    IMMUTABLE_FIELDS = (
        "id",
        "model_version",
        "name",
        "source_path",
        "registered_by",
        "registered_at",
    )
    WRITE_ONCE_FIELDS = ("digest",)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="lenses")
    name = models.SlugField(max_length=100)
    source_path = models.CharField(max_length=1000)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    hook_name = models.CharField(max_length=100, blank=True)
    architecture = models.CharField(max_length=40, blank=True)
    d_in = models.PositiveIntegerField(null=True, blank=True)
    d_sae = models.PositiveIntegerField(null=True, blank=True)
    digest = models.CharField(max_length=64, blank=True)
    training = models.JSONField(default=dict, blank=True)  # config, corpus digest, seed, fidelity
    registered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    registered_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model_version", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_version", "name"], name="unique_lens_name_per_model"
            )
        ]

    def __str__(self) -> str:
        return f"lens {self.name} of {self.model_version}"


class CatalogFeature(models.Model):
    """A labelled feature of a lens, proposed by discovery or carried over by drift matching,
    and confirmed (or changed) by a person."""

    class Status(models.TextChoices):
        PROPOSED = "proposed"
        CONFIRMED = "confirmed"
        REJECTED = "rejected"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    lens = models.ForeignKey(Lens, on_delete=models.PROTECT, related_name="features")
    index = models.PositiveIntegerField()
    label = models.CharField(max_length=200, blank=True)
    risk_axis = models.CharField(max_length=40, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PROPOSED)
    evidence = models.JSONField(default=dict, blank=True)  # the numbers behind the proposal
    proposed_by_run = models.ForeignKey(
        CheckRun, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    carried_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="carried_to"
    )
    match_cosine = models.FloatField(null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["lens", "index"]
        constraints = [
            models.UniqueConstraint(fields=["lens", "index"], name="unique_feature_per_lens")
        ]

    def __str__(self) -> str:
        return f"{self.lens.name}#{self.index} {self.label}"
