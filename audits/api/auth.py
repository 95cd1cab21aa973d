"""Signing in to the API: a username and password buy an expiring token (django-rest-knox
stores only its digest; the token is shown once, here). Failed logins are throttled and, after
ASSAY_LOGIN_FAILURE_LIMIT in a row, lock the username (django-axes)."""

from django.contrib.auth import authenticate
from django.http import JsonResponse
from drf_spectacular.utils import extend_schema
from knox.models import get_token_model
from knox.views import LogoutView as KnoxLogoutView
from rest_framework import serializers, status
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from audits import current_actor
from audits.api.serializers import StrictSerializer
from audits.roles import roles_of


class LoginSerializer(StrictSerializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="send as: Authorization: Token <token>")
    token_id = serializers.CharField(help_text="names this token in the ledger")
    expiry = serializers.DateTimeField()


class TokenLoginView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "login"

    @extend_schema(request=LoginSerializer, responses=TokenSerializer)
    def post(self, request):
        data = LoginSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request=request._request, **data.validated_data)
        if user is None:
            raise AuthenticationFailed("wrong username or password (or the account is inactive)")
        with current_actor.acting_as(user):
            instance, token = get_token_model().objects.create(user=user)
        return Response(
            {"token": token, "token_id": instance.digest[:16], "expiry": instance.expiry},
            status=status.HTTP_201_CREATED,
        )


class LogoutView(KnoxLogoutView):
    """Ends the token this request was made with."""

    @extend_schema(request=None, responses={204: None})
    def post(self, request, format=None):
        return super().post(request, format)


class MeView(APIView):
    """Who you are signed in as: your username, printed name, roles and active signing keys."""

    permission_classes: list = []

    @extend_schema(responses=dict)
    def get(self, request):
        from rest_framework.permissions import IsAuthenticated

        if not IsAuthenticated().has_permission(request, self):
            raise AuthenticationFailed("sign in first (Authorization: Token <token>)")
        user = request.user
        return Response(
            {
                "username": user.get_username(),
                "name": user.get_full_name() or user.get_username(),
                "roles": sorted(roles_of(user)),
                "keys": list(
                    user.reviewer_keys.filter(revoked_at__isnull=True).values_list(
                        "key_id", flat=True
                    )
                ),
            }
        )


def locked_out(request, credentials=None, *args, **kwargs):
    """django-axes' answer to a locked-out login: JSON with what to do, never a page."""
    return JsonResponse(
        {
            "detail": "too many failed logins for this username; it is locked for an hour. "
            "An admin can unlock it with: manage.py axes_reset_username <username>"
        },
        status=429,
    )
