"""API authentication classes. A leaf module: DRF imports these while it loads its views, so
nothing here may import a view."""

from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework.exceptions import AuthenticationFailed


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's token authentication, telling people who send a Bearer token what to send."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if header.split(" ", 1)[0].lower() == "bearer":
            raise AuthenticationFailed(
                "use `Authorization: Token <token>` (not Bearer); get a token with "
                "POST /api/v1/auth/token/"
            )
        return super().authenticate(request)

    def authenticate_header(self, request):
        return "Token"
