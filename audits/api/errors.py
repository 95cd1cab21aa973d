"""API errors are JSON with a message a person can act on; never a traceback page."""

import logging

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from audits.actions import ActionError, ConflictError, ForbiddenError
from audits.checkkinds import CheckSpecError
from audits.ledger import LedgerIntegrityError
from audits.models import EvidenceIntegrityError
from audits.signing import SignatureError

logger = logging.getLogger(__name__)


def _messages(exc: DjangoValidationError) -> str:
    return "; ".join(exc.messages)


def exception_handler(exc, context):
    response = drf_exception_handler(exc, context)
    if response is not None:
        return response
    if isinstance(exc, ConflictError | EvidenceIntegrityError | LedgerIntegrityError):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, ForbiddenError):
        return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
    if isinstance(exc, ActionError | CheckSpecError | SignatureError):
        return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DjangoValidationError):
        return Response({"detail": _messages(exc)}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, IntegrityError):
        logger.warning("integrity error answered as 409: %s", exc)
        return Response(
            {"detail": "the request conflicts with an existing record; reload and retry"},
            status=status.HTTP_409_CONFLICT,
        )
    return None
