"""Pagination with a bounded page: ?limit above MAX_LIMIT is refused, not served."""

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination


class BoundedPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500

    def get_limit(self, request):
        raw = request.query_params.get(self.limit_query_param)
        if raw is not None and (not raw.isdigit() or not 1 <= int(raw) <= self.max_limit):
            raise ValidationError({"limit": f"must be an integer from 1 to {self.max_limit}"})
        return super().get_limit(request)

    def get_offset(self, request):
        raw = request.query_params.get(self.offset_query_param)
        if raw is not None and (not raw.isdigit() or len(raw) > 12):
            raise ValidationError({"offset": "must be a non-negative integer"})
        return super().get_offset(request)
