"""JSON log lines that carry the request id, and the id's round trip through a request."""

import json
import logging

import pytest

from audits.operations.logs import JsonFormatter, request_id

pytestmark = pytest.mark.django_db


def _line(record: logging.LogRecord) -> dict:
    return json.loads(JsonFormatter().format(record))


def test_a_log_line_is_one_json_object_with_the_request_id_and_extra_fields():
    token = request_id.set("req-42")
    try:
        record = logging.makeLogRecord(
            {"name": "assay.test", "levelname": "INFO", "msg": "hello %s", "args": ("you",)}
        )
        record.status = 201
        line = _line(record)
    finally:
        request_id.reset(token)
    assert line["message"] == "hello you"
    assert line["request_id"] == "req-42"
    assert line["status"] == 201
    assert line["level"] == "INFO"
    assert line["logger"] == "assay.test"


def test_exceptions_are_kept_in_the_line():
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        record = logging.makeLogRecord({"msg": "failed", "exc_info": sys.exc_info()})
    assert "ValueError: bad" in _line(record)["exc"]


def test_a_sane_client_request_id_is_kept_and_echoed(client, settings, caplog):
    settings.ASSAY_ACCESS_LOG = True
    with caplog.at_level(logging.INFO, logger="assay.access"):
        response = client.get("/healthz", HTTP_X_REQUEST_ID="pipeline-run-7.3")
    assert response["X-Request-ID"] == "pipeline-run-7.3"
    [access] = [r for r in caplog.records if r.name == "assay.access"]
    assert (access.method, access.path, access.status) == ("GET", "/healthz", 200)
    assert json.loads(JsonFormatter().format(access))["request_id"] == "pipeline-run-7.3"


@pytest.mark.parametrize("given", ["", "has space", "x" * 200, "new\nline", "<script>"])
def test_an_unsafe_request_id_is_replaced(client, given):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=given)
    assert response["X-Request-ID"] != given
    assert len(response["X-Request-ID"]) == 32


def test_query_strings_never_reach_the_access_log(client, settings, caplog):
    settings.ASSAY_ACCESS_LOG = True
    with caplog.at_level(logging.INFO, logger="assay.access"):
        client.get("/healthz?token=secret-value")
    assert "secret-value" not in caplog.text
