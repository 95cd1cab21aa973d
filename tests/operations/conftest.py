"""Fixtures of the operations tests: a webhook receiver on loopback, webhooks, a checked and an
approved release (the attack tests' own steps)."""

import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.integration.conftest import broker  # noqa: F401
from tests.security.conftest import approved_release, checked, checked_release  # noqa: F401


@dataclass
class Received:
    headers: Message  # case-insensitive, as receivers' frameworks give them
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP endpoint that records every POST and answers with the next queued status."""

    url: str
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    redirect_to: str | None = None
    secret: str = ""


@contextmanager
def running_receiver():
    """A Receiver listening on loopback for as long as the block runs."""
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            state.requests.append(Received(self.headers, self.rfile.read(length)))
            if state.redirect_to:
                self.send_response(307)
                self.send_header("Location", state.redirect_to)
            else:
                self.send_response(state.statuses.pop(0) if state.statuses else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/assay-hook"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver():
    with running_receiver() as state:
        yield state


@pytest.fixture
def production_passwords(settings):
    """Passwords hashed as production hashes them (the suite's fast MD5 hasher is unknown to a
    process started with the production settings). Ask for it before `personas`."""
    from django.conf import global_settings

    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS


@pytest.fixture
def webhook_settings(settings):
    settings.ASSAY_WEBHOOK_ALLOW_HTTP = True
    settings.ASSAY_PUBLIC_URL = "https://assay.example.com"
    return settings


def create_webhook(personas, url: str, states=None) -> dict:
    body = {"name": "pipeline", "url": url}
    if states is not None:
        body["states"] = states
    response = personas.client("admin").post("/api/v1/webhooks/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()
