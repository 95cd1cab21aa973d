"""The standalone tools, imported from their files as a reviewer or auditor would run them."""

import importlib.util
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def review():
    return load_tool("assay_review")


@pytest.fixture(scope="session")
def ledger_tool():
    return load_tool("assay_ledger")


@pytest.fixture
def token_for():
    """An API token a person makes for themselves (as their login would)."""

    def make(user) -> str:
        from knox.models import get_token_model

        from audits import current_actor

        with current_actor.acting_as(user):
            return get_token_model().objects.create(user=user)[1]

    return make
