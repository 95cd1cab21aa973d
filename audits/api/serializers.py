"""Serializers validate and shape; the workflows themselves live in audits.actions."""

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from audits.models import (
    AuditEvent,
    CatalogFeature,
    CheckPolicy,
    CheckRun,
    Decision,
    Evidence,
    LedgerCheckpoint,
    Lens,
    ModelVersion,
    PolicyAssignment,
    Release,
    RequiredCheck,
    ReviewerKey,
)


class StrictSerializer(serializers.Serializer):
    """Unknown fields are an error, not silently dropped; immutable ones say so by name."""

    immutable_fields: tuple[str, ...] = ()

    def to_internal_value(self, data):
        # Checked here rather than in validate() so nested serializers refuse unknown keys too.
        if isinstance(data, dict):
            immutable = sorted(set(data) & set(self.immutable_fields))
            if immutable:
                raise serializers.ValidationError(
                    {name: "this field is immutable once the record exists" for name in immutable}
                )
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                allowed = ", ".join(sorted(self.fields))
                raise serializers.ValidationError(
                    {name: f"unknown field; allowed: {allowed}" for name in unknown}
                )
        return super().to_internal_value(data)


# --- model versions -------------------------------------------------------------------------


class ModelVersionSerializer(serializers.ModelSerializer):
    registered_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "family",
            "version",
            "description",
            "source_path",
            "format",
            "parent",
            "digest_status",
            "digest_error",
            "weights_digest",
            "tokenizer_digest",
            "config_digest",
            "file_digests",
            "digested_at",
            "registered_by",
            "registered_at",
        ]
        read_only_fields = fields


def _inside(path: Path, roots) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _local_path(value: str, roots, setting: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise serializers.ValidationError("give an absolute path")
    path = path.resolve()
    if not _inside(path, roots):
        allowed = ", ".join(str(root) for root in roots)
        raise serializers.ValidationError(
            f"{path} is outside the model store; it must live under: {allowed} ({setting})"
        )
    return path


class ModelVersionCreateSerializer(StrictSerializer):
    family = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    version = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
    source_path = serializers.CharField(max_length=1000)
    format = serializers.ChoiceField(choices=ModelVersion.Format.choices)
    # A field named like a Field attribute (parent, label): the stubs object, DRF does not.
    parent = serializers.PrimaryKeyRelatedField(  # type: ignore[assignment]
        queryset=ModelVersion.objects.all(), required=False, allow_null=True
    )
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)

    def validate(self, attrs):
        try:
            path = _local_path(
                attrs["source_path"], settings.ASSAY_MODEL_ROOTS, "ASSAY_MODEL_ROOTS"
            )
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({"source_path": exc.detail}) from None
        _check_model_source(path, attrs["format"])
        attrs["source_path"] = str(path)
        return attrs


def _check_model_source(path: Path, fmt: str) -> None:
    if fmt == ModelVersion.Format.GGUF:
        if not path.is_file() or path.suffix != ".gguf":
            raise serializers.ValidationError(
                {"source_path": f"{path} is not an existing .gguf file"}
            )
    elif not path.is_dir():
        raise serializers.ValidationError({"source_path": f"{path} is not an existing directory"})
    elif not (path / "config.json").is_file():
        raise serializers.ValidationError(
            {"source_path": f"{path} has no config.json; is it a Hugging Face model directory?"}
        )


class ModelVersionUpdateSerializer(StrictSerializer):
    immutable_fields = (
        ModelVersion.IMMUTABLE_FIELDS
        + ModelVersion.WRITE_ONCE_FIELDS
        + (
            "digest_status",
            "digest_error",
            "digested_at",
        )
    )
    description = serializers.CharField(allow_blank=True, max_length=5000)


# --- policies -------------------------------------------------------------------------------


class RequiredCheckSerializer(serializers.ModelSerializer):
    class Meta:
        model = RequiredCheck
        fields = ["key", "kind", "parameters", "thresholds", "blocking"]


class RequiredCheckWriteSerializer(StrictSerializer):
    key = serializers.SlugField(max_length=64)
    kind = serializers.CharField(max_length=40)
    parameters = serializers.DictField(required=False, default=dict)
    thresholds = serializers.DictField(required=False, default=dict)
    blocking = serializers.BooleanField(required=False, default=True)


class PolicySerializer(serializers.ModelSerializer):
    required_checks = RequiredCheckSerializer(many=True, read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    published_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = CheckPolicy
        fields = [
            "id",
            "name",
            "version",
            "description",
            "status",
            "approvals_required",
            "approver_role",
            "submitter_may_approve",
            "digest",
            "required_checks",
            "created_by",
            "created_at",
            "published_by",
            "published_at",
        ]
        read_only_fields = fields


class PolicyCreateSerializer(StrictSerializer):
    name = serializers.SlugField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    approvals_required = serializers.IntegerField(min_value=1, max_value=20, default=2)
    submitter_may_approve = serializers.BooleanField(default=False)
    required_checks = RequiredCheckWriteSerializer(many=True, allow_empty=True)


class PolicyUpdateSerializer(StrictSerializer):
    immutable_fields = ("id", "name", "version", "status", "digest", "created_by", "created_at")
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    approvals_required = serializers.IntegerField(required=False, min_value=1, max_value=20)
    submitter_may_approve = serializers.BooleanField(required=False)
    required_checks = RequiredCheckWriteSerializer(many=True, required=False, allow_empty=True)


# --- releases, check runs, evidence ---------------------------------------------------------


class EvidenceSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Evidence
        fields = [
            "id",
            "check_run",
            "title",
            "media_type",
            "evidence_kind",
            "sha256",
            "size",
            "created_at",
            "download_url",
        ]
        read_only_fields = fields

    def get_download_url(self, evidence) -> str:
        return reverse("api:evidence-download", args=[evidence.pk])


class CheckRunSerializer(serializers.ModelSerializer):
    check_key = serializers.CharField(source="required_check.key", read_only=True)
    blocking = serializers.BooleanField(source="required_check.blocking", read_only=True)
    duration_seconds = serializers.FloatField(read_only=True)
    cancelled_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    evidence = EvidenceSerializer(many=True, read_only=True)

    class Meta:
        model = CheckRun
        fields = [
            "id",
            "release",
            "check_key",
            "kind",
            "blocking",
            "attempt",
            "status",
            "verdict",
            "metrics",
            "summary",
            "error",
            "progress",
            "stage",
            "deliveries",
            "worker",
            "provenance",
            "manifest_digest",
            "queued_at",
            "started_at",
            "finished_at",
            "duration_seconds",
            "cancelled_by",
            "evidence",
        ]
        read_only_fields = fields


class CheckRunLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = CheckRun
        fields = ["id", "status", "log"]
        read_only_fields = fields


class CheckRunBriefSerializer(serializers.ModelSerializer):
    check_key = serializers.CharField(source="required_check.key", read_only=True)

    class Meta:
        model = CheckRun
        fields = ["id", "check_key", "kind", "attempt", "status", "verdict", "progress"]
        read_only_fields = fields


class ReleaseSerializer(serializers.ModelSerializer):
    submitter = serializers.SlugRelatedField(slug_field="username", read_only=True)
    check_runs = CheckRunBriefSerializer(many=True, read_only=True)
    counting_runs = serializers.SerializerMethodField()
    # Computed from the records as they are now, never a stale stored "approved".
    state = serializers.SerializerMethodField()
    state_reasons = serializers.SerializerMethodField()

    class Meta:
        model = Release
        fields = [
            "id",
            "title",
            "model_version",
            "policy",
            "policy_digest",
            "purpose",
            "state",
            "state_reasons",
            "submitter",
            "opened_at",
            "withdrawn_at",
            "check_runs",
            "counting_runs",
        ]
        read_only_fields = fields

    def _answer(self, release):
        from audits import gate, queries

        cache = self.__dict__.setdefault("_gate_answers", {})  # one evaluation per release
        if release.pk not in cache:
            cache[release.pk] = gate.evaluate(queries.gate_facts(release))
        return cache[release.pk]

    def get_state(self, release) -> str:
        return self._answer(release).state

    def get_state_reasons(self, release) -> list[dict]:
        return self._answer(release).reasons

    def get_counting_runs(self, release) -> list[dict]:
        """Which attempt of each check the gate counts, and why."""
        from audits.queries import counting_runs

        return [
            {
                "check": run.required_check.key,
                "run": str(run.pk),
                "attempt": run.attempt,
                "why": "the latest attempt counts; earlier attempts and their evidence are kept"
                if run.attempt > 1
                else "the only attempt",
            }
            for run in counting_runs(release)
        ]


@extend_schema_field(OpenApiTypes.STR)
class PolicyReferenceField(serializers.Field):
    """A policy by id or as name@version (e.g. frontier-release@2)."""

    default_error_messages = {
        "unknown": "no policy {value!r}; give its id or name@version (GET /api/v1/policies/)",
    }

    def to_internal_value(self, data):
        if not isinstance(data, str) or not data:
            self.fail("unknown", value=data)
        name, at, version = data.partition("@")
        if at and version.isdigit():
            found = CheckPolicy.objects.filter(name=name, version=int(version)).first()
        else:
            try:
                found = CheckPolicy.objects.filter(pk=data).first()
            except (ValueError, DjangoValidationError):
                found = None
        if found is None:
            self.fail("unknown", value=data)
        return found

    def to_representation(self, value):
        return str(value.pk)


class ReleaseCreateSerializer(StrictSerializer):
    model_version = serializers.PrimaryKeyRelatedField(queryset=ModelVersion.objects.all())
    policy = PolicyReferenceField(
        required=False,
        allow_null=True,
        help_text="omit for a release (it takes the policy assigned to the model's family); "
        "an id or name@version",
    )
    purpose = serializers.ChoiceField(
        choices=Release.Purpose.choices, default=Release.Purpose.RELEASE
    )
    title = serializers.CharField(required=False, allow_blank=True, max_length=200)


class RerunSerializer(StrictSerializer):
    check = serializers.SlugField(max_length=64, help_text="the required check's key")


class WithdrawSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=2000)


class GateSerializer(serializers.Serializer):
    release = serializers.UUIDField()
    purpose = serializers.CharField()
    state = serializers.CharField()
    may_ship = serializers.BooleanField()
    reasons = serializers.ListField(child=serializers.DictField())
    blockers = serializers.ListField(child=serializers.DictField())
    trust_warnings = serializers.ListField(child=serializers.DictField())
    policy = serializers.DictField()
    model_version = serializers.DictField()


HEX64 = r"^[0-9a-f]{64}$"


class GateQuerySerializer(StrictSerializer):
    policy_digest = serializers.RegexField(
        HEX64, required=False, help_text="the policy digest the pipeline expects"
    )
    weights_digest = serializers.RegexField(
        HEX64, required=False, help_text="the model weights digest the pipeline expects"
    )


class PolicyAssignmentSerializer(serializers.ModelSerializer):
    assigned_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = PolicyAssignment
        fields = ["family", "policy_name", "assigned_by", "assigned_at"]
        read_only_fields = fields


class PolicyAssignmentCreateSerializer(StrictSerializer):
    family = serializers.CharField(
        max_length=100, allow_blank=True, help_text='a model family, or "" for the default'
    )
    policy_name = serializers.SlugField(max_length=100)


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        # body is the exact canonical JSON that entry_hash is the sha256 of, and the leaf
        # the Merkle tree hashes; prev_hash chains it to the event before.
        fields = [
            "seq",
            "at",
            "actor_label",
            "verb",
            "target_type",
            "target_id",
            "data",
            "prev_hash",
            "entry_hash",
            "body",
        ]
        read_only_fields = fields


# --- keys, decisions, the ledger ------------------------------------------------------------


class ReviewerKeySerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ReviewerKey
        fields = ["key_id", "user", "public_key", "label", "registered_at", "revoked_at"]
        read_only_fields = fields


class ReviewerKeyCreateSerializer(StrictSerializer):
    public_key = serializers.CharField(
        max_length=2000, help_text="Ed25519 public key: PEM or raw base64"
    )
    challenge = serializers.CharField(
        max_length=500, help_text="from GET /api/v1/reviewer-keys/challenge/"
    )
    proof = serializers.CharField(
        max_length=200,
        help_text="base64 Ed25519 signature by this key over the proof message "
        "(see the challenge endpoint)",
    )
    label = serializers.CharField(max_length=100, required=False, allow_blank=True)  # type: ignore[assignment]


class DecisionSerializer(serializers.ModelSerializer):
    reviewer = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Decision
        fields = [
            "id",
            "release",
            "reviewer",
            "key",
            "decision",
            "check_key",
            "rationale",
            "conditions",
            "evidence_digest",
            "payload_sha256",
            "signed_at",
            "recorded_at",
            "statement",
            "envelope",
        ]
        read_only_fields = fields


class DecisionCreateSerializer(StrictSerializer):
    envelope = serializers.JSONField(help_text="a DSSE envelope around the signed statement")


class StatementQuerySerializer(StrictSerializer):
    decision = serializers.ChoiceField(choices=Decision.Type.choices)
    check = serializers.SlugField(required=False, max_length=64)


class CheckpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = LedgerCheckpoint
        fields = ["tree_size", "root_hash", "timestamp", "key_id", "body", "signature"]
        read_only_fields = fields


class LedgerKeySpanSerializer(serializers.Serializer):
    min_tree_size = serializers.IntegerField()
    max_tree_size = serializers.IntegerField()


class RotationStatementSerializer(serializers.Serializer):
    """What both keys of a rotation signed (after the line `assay ledger key rotation v1`)."""

    origin = serializers.CharField()
    old_key_id = serializers.CharField()
    old_public_key = serializers.CharField()
    new_key_id = serializers.CharField()
    new_public_key = serializers.CharField()
    tree_size = serializers.IntegerField(help_text="the last tree the old key may sign")
    root_hash = serializers.CharField()


class RotationSignaturesSerializer(serializers.Serializer):
    old = serializers.CharField(help_text="the retired key's signature (base64)")
    new = serializers.CharField(help_text="the next key's signature (base64)")


class RetiredLedgerKeySerializer(serializers.Serializer):
    algorithm = serializers.CharField()
    key_id = serializers.CharField(help_text="sha256 (hex) of the raw public key")
    public_key = serializers.CharField(help_text="raw Ed25519 public key, base64")
    retired_at = serializers.DateTimeField(
        allow_null=True, help_text="when the ledger recorded the rotation"
    )
    rotation_event = serializers.IntegerField(
        allow_null=True, help_text="seq of the ledger.key_rotated event"
    )
    valid_for = LedgerKeySpanSerializer(
        allow_null=True,
        help_text="the checkpoints' tree sizes this key may have signed; null when the chain of "
        "rotations from it to the current key does not verify",
    )
    statement = RotationStatementSerializer()
    signatures = RotationSignaturesSerializer()


class LedgerKeysSerializer(serializers.Serializer):
    """The current checkpoint key (these first three fields, as always) and the retired ones."""

    algorithm = serializers.CharField()
    public_key = serializers.CharField(help_text="raw Ed25519 public key, base64")
    key_id = serializers.CharField(help_text="sha256 (hex) of the raw public key")
    retired = RetiredLedgerKeySerializer(many=True, help_text="oldest first")


# --- lenses and the catalog -----------------------------------------------------------------


class LensSerializer(serializers.ModelSerializer):
    registered_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Lens
        fields = [
            "id",
            "model_version",
            "name",
            "source_path",
            "status",
            "error",
            "hook_name",
            "architecture",
            "d_in",
            "d_sae",
            "digest",
            "training",
            "registered_by",
            "registered_at",
        ]
        read_only_fields = fields


class LensCreateSerializer(StrictSerializer):
    model_version = serializers.PrimaryKeyRelatedField(queryset=ModelVersion.objects.all())
    name = serializers.SlugField(max_length=100)
    source_path = serializers.CharField(max_length=1000)

    def validate_source_path(self, value):
        path = _local_path(value, settings.ASSAY_LENS_ROOTS, "ASSAY_LENS_ROOTS")
        missing = [n for n in ("cfg.json", "sae_weights.safetensors") if not (path / n).is_file()]
        if missing:
            raise serializers.ValidationError(
                f"{path} is not a lens in SAELens's on-disk format (missing {', '.join(missing)})"
            )
        return str(path)


class LensTrainSerializer(StrictSerializer):
    model_version = serializers.PrimaryKeyRelatedField(queryset=ModelVersion.objects.all())
    name = serializers.SlugField(max_length=100)
    hook_name = serializers.RegexField(r"^blocks\.\d{1,3}\.[a-z_.]{3,40}$", max_length=60)
    d_sae = serializers.IntegerField(min_value=8, max_value=1 << 17)
    architecture = serializers.ChoiceField(choices=["standard", "topk", "jumprelu"])
    n_tokens = serializers.IntegerField(min_value=1000, max_value=100_000_000)
    seed = serializers.IntegerField(default=0, min_value=0)
    seq_len = serializers.IntegerField(required=False, min_value=8, max_value=4096)
    batch_tokens = serializers.IntegerField(required=False, min_value=8, max_value=1 << 16)
    buffer_batches = serializers.IntegerField(required=False, min_value=1, max_value=4096)
    eval_sequences = serializers.IntegerField(required=False, min_value=1, max_value=4096)


class CatalogFeatureSerializer(serializers.ModelSerializer):
    reviewed_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = CatalogFeature
        fields = [
            "id",
            "lens",
            "index",
            "label",
            "risk_axis",
            "status",
            "evidence",
            "proposed_by_run",
            "carried_from",
            "match_cosine",
            "reviewed_by",
            "reviewed_at",
            "created_at",
        ]
        read_only_fields = fields


class FeatureReviewSerializer(StrictSerializer):
    immutable_fields = ("id", "lens", "index", "evidence", "proposed_by_run", "carried_from")
    label = serializers.CharField(max_length=200)  # type: ignore[assignment]
    risk_axis = serializers.SlugField(max_length=40)
    status = serializers.ChoiceField(
        choices=[CatalogFeature.Status.CONFIRMED, CatalogFeature.Status.REJECTED]
    )
