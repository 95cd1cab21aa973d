"""Fixtures for integration tests with real worker processes."""

import pytest

from config.celery import app as celery_app


@pytest.fixture
def broker(request, tmp_path):
    """Point this process's Celery app at the broker under test; restore it afterwards."""
    saved = (celery_app.conf.broker_url, celery_app.conf.broker_transport_options)
    yield
    celery_app.conf.broker_url, celery_app.conf.broker_transport_options = saved
