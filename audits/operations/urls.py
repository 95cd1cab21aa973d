"""Operational endpoints (mounted at the site root)."""

urlpatterns: list = []
