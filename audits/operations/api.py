"""The webhooks' API (thin: validate, act, answer). Mounted under /api/v1/ by urls.py.

    GET/POST   /api/v1/webhooks/                       list; create (the secret is shown once)
    GET/PATCH  /api/v1/webhooks/<id>/                  read; change name, url, states, is_active
    POST       /api/v1/webhooks/<id>/rotate-secret/    a new secret, shown once
    GET        /api/v1/webhook-deliveries/             the delivery log (?webhook= ?release=
                                                       ?status=)
    GET        /api/v1/webhook-deliveries/<id>/        one delivery: body and every attempt
    POST       /api/v1/webhook-deliveries/<id>/redeliver/   one more attempt

Admins manage webhooks; admins and auditors read them and the delivery log. Nobody reads a
secret after the response that created it.
"""

import urllib.parse
from typing import ClassVar

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response

from audits.api import filters
from audits.api.views import UUID_PATTERN
from audits.models import Release
from audits.operations import webhook_secrets, webhooks
from audits.operations.models import Webhook, WebhookDelivery
from audits.roles import Role, has_role


class AdminsManageAuditorsRead(BasePermission):
    message = "webhooks and their deliveries are for admins (and, to read, auditors)"

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return has_role(request.user, Role.ADMIN, Role.AUDITOR)
        return has_role(request.user, Role.ADMIN)


def _validate_url(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    allowed = ("https", "http") if settings.ASSAY_WEBHOOK_ALLOW_HTTP else ("https",)
    if parts.scheme not in allowed:
        raise serializers.ValidationError(
            "the URL must use https (plain http only with ASSAY_WEBHOOK_ALLOW_HTTP=true)"
        )
    if parts.username or parts.password:
        raise serializers.ValidationError(
            "put no credentials in the URL: receivers authenticate deliveries by their signature"
        )
    return value


class WebhookSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True)
    states = serializers.ListField(
        child=serializers.ChoiceField(choices=Release.State.values),
        required=False,
        help_text="release states that trigger a delivery; empty or absent: every change",
    )

    class Meta:
        model = Webhook
        fields: tuple[str, ...] = (
            "id",
            "name",
            "url",
            "states",
            "is_active",
            "created_by",
            "created_at",
            "secret_rotated_at",
        )
        read_only_fields = ("id", "created_by", "created_at", "secret_rotated_at")

    def validate_url(self, value: str) -> str:
        return _validate_url(value)

    def validate_states(self, value: list) -> list:
        return sorted(set(value))


class WebhookWithSecretSerializer(WebhookSerializer):
    secret = serializers.CharField(
        read_only=True, help_text="shown in this response only: keep it in your receiver"
    )

    class Meta(WebhookSerializer.Meta):
        fields = (*WebhookSerializer.Meta.fields, "secret")


class WebhookDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = (
            "id",
            "webhook",
            "release",
            "event",
            "status",
            "attempt_count",
            "attempts",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "created_at",
            "finished_at",
            "body",
        )
        read_only_fields = fields


class WebhookViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Outgoing webhooks on release state changes (admins manage, auditors read)."""

    queryset = Webhook.objects.select_related("created_by")
    serializer_class = WebhookSerializer
    lookup_value_regex = UUID_PATTERN
    permission_classes = (AdminsManageAuditorsRead,)
    http_method_names = ("get", "post", "patch", "head", "options")

    @extend_schema(responses={201: WebhookWithSecretSerializer})
    def create(self, request, *args, **kwargs):
        serializer = WebhookSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        secret = webhook_secrets.new_secret()
        hook = serializer.save(
            created_by=request.user, secret_encrypted=webhook_secrets.encrypt(secret)
        )
        hook.secret = secret
        return Response(WebhookWithSecretSerializer(hook).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=WebhookWithSecretSerializer)
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        """A new secret (the old one stops signing at once), shown in this response only."""
        hook = self.get_object()
        secret = webhook_secrets.new_secret()
        with transaction.atomic():
            Webhook.objects.filter(pk=hook.pk).update(
                secret_encrypted=webhook_secrets.encrypt(secret),
                secret_rotated_at=timezone.now(),
            )
        hook.refresh_from_db()
        hook.secret = secret
        return Response(WebhookWithSecretSerializer(hook).data)


class WebhookDeliveryViewSet(viewsets.ReadOnlyModelViewSet):
    """The delivery log: every event sent to every webhook, with each attempt's outcome."""

    queryset = WebhookDelivery.objects.all()
    serializer_class = WebhookDeliverySerializer
    lookup_value_regex = UUID_PATTERN
    permission_classes = (AdminsManageAuditorsRead,)
    list_filters: ClassVar[dict[str, filters.Filter]] = {
        "webhook": filters.Filter("webhook", filters.as_uuid),
        "release": filters.Filter("release", filters.as_uuid),
        "status": filters.Filter("status", filters.one_of(WebhookDelivery.Status.values)),
    }

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        if self.action != "list":
            return queryset
        return filters.apply(queryset, self.request.query_params, self.list_filters)

    @extend_schema(request=None, responses=WebhookDeliverySerializer)
    @action(detail=True, methods=["post"])
    def redeliver(self, request, pk=None):
        """One more attempt now (after the receiver was down past the last one)."""
        delivery = webhooks.redeliver(self.get_object())
        return Response(WebhookDeliverySerializer(delivery).data)
