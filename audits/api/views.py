"""Thin API views: validate with a serializer, call an action, answer with the record."""

from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response

from audits import actions, gate, gate_cache, ledger, signing, statements
from audits.api import filters
from audits.api import serializers as s
from audits.api.permissions import ADMINS, DECIDERS, REVIEWERS, SUBMITTERS
from audits.canonical import json_digest
from audits.models import (
    AuditEvent,
    CatalogFeature,
    CheckPolicy,
    CheckRun,
    Evidence,
    EvidenceIntegrityError,
    Lens,
    ModelVersion,
    PolicyAssignment,
    Release,
    ReviewerKey,
)

UUID_PATTERN = r"[0-9a-fA-F-]{36}"


class RecordViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    lookup_value_regex = UUID_PATTERN
    write_roles: dict = {}
    list_filters: dict[str, filters.Filter] = {}

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        if self.action != "list":
            return queryset
        return filters.apply(queryset, self.request.query_params, self.list_filters)

    def validated(self, serializer_class, **kwargs):
        serializer = serializer_class(data=self.request.data, **kwargs)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def answer(self, instance, code=status.HTTP_200_OK, serializer_class=None):
        serializer_class = serializer_class or self.get_serializer_class()
        return Response(
            serializer_class(instance, context=self.get_serializer_context()).data, status=code
        )


class ModelVersionViewSet(RecordViewSet):
    """Model versions. Digests are computed by a worker after registration."""

    queryset = ModelVersion.objects.select_related("registered_by")
    serializer_class = s.ModelVersionSerializer
    write_roles = {"create": SUBMITTERS, "partial_update": SUBMITTERS}
    http_method_names = ["get", "post", "patch", "head", "options"]

    @extend_schema(request=s.ModelVersionCreateSerializer, responses=s.ModelVersionSerializer)
    def create(self, request):
        data = self.validated(s.ModelVersionCreateSerializer)
        model_version = actions.register_model_version(
            actor=request.user,
            family=data["family"],
            version=data["version"],
            source_path=data["source_path"],
            fmt=data["format"],
            parent=data.get("parent"),
            description=data.get("description", ""),
        )
        return self.answer(model_version, status.HTTP_201_CREATED)

    @extend_schema(request=s.ModelVersionUpdateSerializer, responses=s.ModelVersionSerializer)
    def partial_update(self, request, pk=None):
        data = self.validated(s.ModelVersionUpdateSerializer)
        model_version = actions.update_model_version(
            actor=request.user,
            model_version=self.get_object(),
            description=data.get("description", ""),
        )
        return self.answer(model_version)


class PolicyViewSet(RecordViewSet):
    """Release policies: drafts are editable; a published version is immutable."""

    queryset = CheckPolicy.objects.prefetch_related("required_checks").select_related(
        "created_by", "published_by"
    )
    serializer_class = s.PolicySerializer
    write_roles = {"create": ADMINS, "partial_update": ADMINS, "publish": ADMINS}
    http_method_names = ["get", "post", "patch", "head", "options"]

    list_filters = {
        "name": filters.Filter("name", filters.text),
        "status": filters.Filter("status", filters.one_of(CheckPolicy.Status.values)),
    }

    @extend_schema(request=s.PolicyCreateSerializer, responses=s.PolicySerializer)
    def create(self, request):
        data = self.validated(s.PolicyCreateSerializer)
        policy = actions.create_policy(
            actor=request.user,
            name=data["name"],
            checks=data["required_checks"],
            description=data.get("description", ""),
            approvals_required=data["approvals_required"],
            submitter_may_approve=data["submitter_may_approve"],
        )
        return self.answer(policy, status.HTTP_201_CREATED)

    @extend_schema(request=s.PolicyUpdateSerializer, responses=s.PolicySerializer)
    def partial_update(self, request, pk=None):
        data = dict(self.validated(s.PolicyUpdateSerializer))
        checks = data.pop("required_checks", None)
        policy = actions.update_draft_policy(
            actor=request.user, policy=self.get_object(), changes=data, checks=checks
        )
        return self.answer(policy)

    @extend_schema(request=None, responses=s.PolicySerializer)
    @action(detail=True, methods=["post"])
    def publish(self, request, pk=None):
        return self.answer(actions.publish_policy(actor=request.user, policy=self.get_object()))


class ReleaseViewSet(RecordViewSet):
    """Releases. Opening one queues a check run per required check of its policy."""

    queryset = Release.objects.select_related("submitter").prefetch_related(
        "check_runs__required_check"
    )
    serializer_class = s.ReleaseSerializer
    pipeline_actions = ("gate",)
    write_roles = {
        "create": SUBMITTERS,
        "withdraw": SUBMITTERS,
        "decisions": DECIDERS,
        "rerun": SUBMITTERS,
    }

    list_filters = {
        "state": filters.Filter("state", filters.one_of(Release.State.values)),
        "model_version": filters.Filter("model_version", filters.as_uuid),
        "purpose": filters.Filter("purpose", filters.one_of(Release.Purpose.values)),
    }

    def get_queryset(self):
        if self.action == "gate":
            # The gate reads the runs and decisions itself (queries.gate_facts, through
            # gate_cache) and answers with the model version and policy: join those, prefetch
            # nothing it would not use.
            return Release.objects.select_related("model_version", "policy")
        return super().get_queryset()

    @extend_schema(
        request=s.ReleaseCreateSerializer,
        responses=s.ReleaseSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="repeat a create safely: same key, same release",
            )
        ],
    )
    def create(self, request):
        data = self.validated(s.ReleaseCreateSerializer)
        key = request.headers.get("Idempotency-Key")
        if key is not None and not 1 <= len(key) <= 200:
            raise ValidationError({"Idempotency-Key": "must be 1 to 200 characters"})
        release, created = actions.open_release(
            actor=request.user,
            model_version=data["model_version"],
            policy=data.get("policy"),
            purpose=data["purpose"],
            title=data.get("title", ""),
            idempotency_key=key,
            request_digest=json_digest(
                {k: str(v.pk) if hasattr(v, "pk") else v for k, v in data.items()}
            ),
        )
        release = self.get_queryset().get(pk=release.pk)
        return self.answer(release, status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(parameters=[s.GateQuerySerializer], responses=s.GateSerializer)
    @action(detail=True, methods=["get"])
    def gate(self, request, pk=None):
        """May this release ship? Pin what you expect with ?policy_digest= and
        ?weights_digest=: a mismatch answers may_ship false with the reason."""
        query = s.GateQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        # Facts kept from an earlier request are used only if one query shows every row they
        # came from unchanged (audits/gate_cache.py): a pipeline polls this endpoint.
        release, facts = gate_cache.release_facts(pk, read_release=self.get_object)
        # get_object checked this when it read the release; kept facts skipped get_object.
        self.check_object_permissions(request, release)
        answer = gate.evaluate(facts, gate.Pins(**query.validated_data))
        model_version, policy = release.model_version, release.policy
        return Response(
            {
                "release": str(release.pk),
                "purpose": release.purpose,
                "state": answer.state,
                "may_ship": answer.may_ship,
                "reasons": answer.reasons,
                "blockers": answer.blockers,
                "trust_warnings": answer.trust_warnings,
                "policy": {
                    "id": str(policy.pk),
                    "name": policy.name,
                    "version": policy.version,
                    "digest": release.policy_digest,
                },
                "model_version": {
                    "id": str(model_version.pk),
                    "family": model_version.family,
                    "version": model_version.version,
                    "weights_digest": model_version.weights_digest,
                },
            }
        )

    @extend_schema(parameters=[s.StatementQuerySerializer], responses=dict)
    @action(detail=True, methods=["get"])
    def statement(self, request, pk=None):
        """The exact statement to sign: fill in rationale and conditions, sign, POST it back."""
        query = s.StatementQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        release = self.get_object()
        user = request.user
        keys = ReviewerKey.objects.filter(user=user, revoked_at__isnull=True)
        body = statements.build(
            release,
            decision=query.validated_data["decision"],
            check=query.validated_data.get("check", ""),
            signer_username=user.get_username(),
            signer_name=user.get_full_name() or user.get_username(),
            key_id=keys.values_list("key_id", flat=True).first() or "",
            signed_at=timezone.now(),
        )
        return Response(
            {
                "statement": body,
                "payload_type": signing.PAYLOAD_TYPE,
                "canonicalization": "RFC 8785 (JSON Canonicalization Scheme)",
                "summary": statements.summary_lines(body),
            }
        )

    @extend_schema(request=s.DecisionCreateSerializer, responses=s.DecisionSerializer)
    @action(detail=True, methods=["get", "post"])
    def decisions(self, request, pk=None):
        release = self.get_object()
        if request.method == "GET":
            return Response(s.DecisionSerializer(release.decisions.all(), many=True).data)
        if isinstance(request.successful_authenticator, SessionAuthentication):
            # A browser signs through the web UI, which makes the person enter their password
            # again; a script in a signed-in page must not sign without that.
            raise PermissionDenied(
                "sign decisions in the web UI (it asks for your password again) or with a "
                "token (tools/assay_review.py)"
            )
        data = self.validated(s.DecisionCreateSerializer)
        decision = actions.record_decision(
            actor=request.user, release=release, envelope=data["envelope"]
        )
        return self.answer(decision, status.HTTP_201_CREATED, s.DecisionSerializer)

    @extend_schema(request=s.RerunSerializer, responses=s.CheckRunSerializer)
    @action(detail=True, methods=["post"])
    def rerun(self, request, pk=None):
        """Run one required check again: a new attempt; the old one and its evidence stay."""
        data = self.validated(s.RerunSerializer)
        run = actions.rerun_check(
            actor=request.user, release=self.get_object(), check_key=data["check"]
        )
        return self.answer(
            CheckRun.objects.get(pk=run.pk), status.HTTP_201_CREATED, s.CheckRunSerializer
        )

    @extend_schema(request=s.WithdrawSerializer, responses=s.ReleaseSerializer)
    @action(detail=True, methods=["post"])
    def withdraw(self, request, pk=None):
        data = self.validated(s.WithdrawSerializer)
        release = actions.withdraw_release(
            actor=request.user, release=self.get_object(), reason=data["reason"]
        )
        return self.answer(self.get_queryset().get(pk=release.pk))


class PolicyAssignmentViewSet(RecordViewSet):
    """Which policy each model family's releases must satisfy (admins assign; family "" is
    the default). The newest published version of the named policy applies to new releases."""

    queryset = PolicyAssignment.objects.select_related("assigned_by")
    serializer_class = s.PolicyAssignmentSerializer
    write_roles = {"create": ADMINS}
    lookup_value_regex = r"\d+"

    @extend_schema(
        request=s.PolicyAssignmentCreateSerializer, responses=s.PolicyAssignmentSerializer
    )
    def create(self, request):
        data = self.validated(s.PolicyAssignmentCreateSerializer)
        assignment = actions.assign_policy(
            actor=request.user, family=data["family"], policy_name=data["policy_name"]
        )
        return self.answer(assignment, status.HTTP_201_CREATED)


class CheckRunViewSet(RecordViewSet):
    """Check runs: status, progress, verdict, metrics, timings; cancel a queued or running one."""

    queryset = CheckRun.objects.select_related("required_check", "cancelled_by").prefetch_related(
        "evidence"
    )
    serializer_class = s.CheckRunSerializer
    write_roles = {"cancel": SUBMITTERS}

    list_filters = {
        "release": filters.Filter("release", filters.as_uuid),
        "status": filters.Filter("status", filters.one_of(CheckRun.Status.values)),
        "kind": filters.Filter("kind", filters.text),
    }

    @extend_schema(request=None, responses=s.CheckRunSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        run = actions.cancel_check_run(actor=request.user, run=self.get_object())
        return self.answer(self.get_queryset().get(pk=run.pk))

    @extend_schema(responses=s.CheckRunLogSerializer)
    @action(detail=True, methods=["get"])
    def log(self, request, pk=None):
        return self.answer(self.get_object(), serializer_class=s.CheckRunLogSerializer)


class EvidenceViewSet(RecordViewSet):
    """Evidence of check runs; downloads are checked against their sha256 on every read."""

    queryset = Evidence.objects.all()
    serializer_class = s.EvidenceSerializer

    list_filters = {"check_run": filters.Filter("check_run", filters.as_uuid)}

    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        evidence = self.get_object()
        try:
            data = evidence.read_bytes()
        except EvidenceIntegrityError as exc:
            actions.record_evidence_integrity_failure(
                actor=request.user, evidence=evidence, message=str(exc)
            )
            raise
        response = HttpResponse(data, content_type=evidence.media_type)
        response["Content-Disposition"] = f'attachment; filename="{evidence.title}"'
        response["Digest"] = f"sha-256={evidence.sha256}"
        return response


class AuditEventViewSet(RecordViewSet):
    """The ledger, read-only: every state change in order."""

    queryset = AuditEvent.objects.all()
    serializer_class = s.AuditEventSerializer
    lookup_value_regex = r"\d+"

    list_filters = {
        "target_id": filters.Filter("target_id", filters.text),
        "target_type": filters.Filter("target_type", filters.text),
        "verb": filters.Filter("verb", filters.text),
    }


class ReviewerKeyViewSet(RecordViewSet):
    """Reviewers' Ed25519 public keys; the key id is the sha256 of the raw public key."""

    queryset = ReviewerKey.objects.select_related("user")
    serializer_class = s.ReviewerKeySerializer
    lookup_value_regex = r"[0-9a-f]{64}"
    write_roles = {"create": REVIEWERS, "revoke": REVIEWERS}

    @extend_schema(request=s.ReviewerKeyCreateSerializer, responses=s.ReviewerKeySerializer)
    def create(self, request):
        """Register a key with proof that you hold it: sign the proof message (see
        challenge/) with the new key."""
        data = self.validated(s.ReviewerKeyCreateSerializer)
        key = actions.register_reviewer_key(
            actor=request.user,
            public_key=data["public_key"],
            challenge=data["challenge"],
            proof=data["proof"],
            label=data.get("label", ""),
        )
        return self.answer(key, status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=dict)
    @action(detail=False, methods=["get"])
    def challenge(self, request):
        """A challenge (valid ten minutes, for you only) and what the new key must sign."""
        challenge = actions.issue_key_challenge(actor=request.user)
        return Response(
            {
                "challenge": challenge,
                "expires_in": actions.CHALLENGE_MAX_AGE,
                "sign": "the UTF-8 bytes of these four lines joined by \\n: "
                f"{signing.KEY_PROOF_CONTEXT!r}, your username, the key id (sha256 hex "
                "of the raw 32-byte public key), the challenge",
                "example_message": signing.key_proof_message(
                    username=request.user.get_username(), key_id="<key id>", challenge=challenge
                ).decode(),
            }
        )

    @extend_schema(request=None, responses=s.ReviewerKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        return self.answer(actions.revoke_reviewer_key(actor=request.user, key=self.get_object()))


def _int_param(request, name: str) -> int:
    value = request.query_params.get(name)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValidationError({name: "an integer is required"}) from None


class LedgerViewSet(viewsets.ViewSet):
    """The ledger's signed checkpoints and RFC 6962 proofs, for auditors and verifiers."""

    @extend_schema(responses=s.CheckpointSerializer)
    @action(detail=False, methods=["get"])
    def checkpoint(self, request):
        return Response(s.CheckpointSerializer(ledger.checkpoint()).data)

    @extend_schema(responses=s.LedgerKeysSerializer)
    @action(detail=False, methods=["get"], url_path="public-key")
    def public_key(self, request):
        """The current checkpoint key and the retired ones, each with the tree sizes it may
        have signed and the rotation statement that vouches for it."""
        return Response(ledger.published_keys())

    @extend_schema(
        responses=dict,
        parameters=[OpenApiParameter("seq", int), OpenApiParameter("tree_size", int)],
    )
    @action(detail=False, methods=["get"])
    def inclusion(self, request):
        try:
            return Response(
                ledger.inclusion(_int_param(request, "seq"), _int_param(request, "tree_size"))
            )
        except ValueError as exc:
            raise ValidationError({"detail": str(exc)}) from None

    @extend_schema(
        responses=dict, parameters=[OpenApiParameter("first", int), OpenApiParameter("second", int)]
    )
    @action(detail=False, methods=["get"])
    def consistency(self, request):
        try:
            return Response(
                ledger.consistency(_int_param(request, "first"), _int_param(request, "second"))
            )
        except ValueError as exc:
            raise ValidationError({"detail": str(exc)}) from None


class LensViewSet(RecordViewSet):
    """Lenses (SAEs, transcoders) registered for a model version; a job validates each."""

    queryset = Lens.objects.select_related("registered_by")
    serializer_class = s.LensSerializer
    write_roles = {"create": SUBMITTERS, "train": SUBMITTERS}

    list_filters = {"model_version": filters.Filter("model_version", filters.as_uuid)}

    @extend_schema(request=s.LensTrainSerializer, responses=s.LensSerializer)
    @action(detail=False, methods=["post"])
    def train(self, request):
        """Train a lens with SAELens's trainer on the shipped corpus, as a worker job."""
        data = dict(self.validated(s.LensTrainSerializer))
        model_version = data.pop("model_version")
        target = settings.ASSAY_LENS_STORE / str(model_version.pk) / data["name"]
        lens = actions.request_lens_training(
            actor=request.user,
            model_version=model_version,
            name=data["name"],
            target=str(target),
            request=data,
        )
        return self.answer(lens, status.HTTP_201_CREATED)

    @extend_schema(request=s.LensCreateSerializer, responses=s.LensSerializer)
    def create(self, request):
        data = self.validated(s.LensCreateSerializer)
        lens = actions.register_lens(
            actor=request.user,
            model_version=data["model_version"],
            name=data["name"],
            source_path=data["source_path"],
        )
        return self.answer(lens, status.HTTP_201_CREATED)


class CatalogFeatureViewSet(RecordViewSet):
    """The feature catalog: proposals from discovery and drift, confirmed by people."""

    queryset = CatalogFeature.objects.select_related("reviewed_by")
    serializer_class = s.CatalogFeatureSerializer
    write_roles = {"partial_update": REVIEWERS}
    http_method_names = ["get", "patch", "head", "options"]

    list_filters = {
        "lens": filters.Filter("lens", filters.as_uuid),
        "status": filters.Filter("status", filters.one_of(CatalogFeature.Status.values)),
        "risk_axis": filters.Filter("risk_axis", filters.text),
    }

    @extend_schema(request=s.FeatureReviewSerializer, responses=s.CatalogFeatureSerializer)
    def partial_update(self, request, pk=None):
        data = self.validated(s.FeatureReviewSerializer)
        feature = actions.review_feature(actor=request.user, feature=self.get_object(), **data)
        return self.answer(feature)
