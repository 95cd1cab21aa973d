"""API authentication classes. A leaf module: DRF imports these while it loads its views, so
nothing here may import a view."""

from django.utils import timezone
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.signals import token_expired
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

    def _cleanup_token(self, auth_token) -> bool:
        """The presented token's own expiry only. knox (5.x, pinned) also walks every other
        token of the user on every request to delete the expired ones: one more query per API
        call, growing with the user's tokens, for housekeeping that does not decide who gets
        in. The operations queue's beat task purge_expired_tokens deletes those instead. An
        expired token is refused either way, when it is presented."""
        if auth_token.expiry is None or auth_token.expiry >= timezone.now():
            return False
        username = auth_token.user.get_username()
        auth_token.delete()
        token_expired.send(sender=self.__class__, username=username, source="auth_token")
        return True
