"""Fixtures shared by the audits tests."""

import pytest


@pytest.fixture
def ledger_key_files(settings, tmp_path):
    """This test's own checkpoint key and retired-keys file (the settings, for their paths)."""
    settings.ASSAY_LEDGER_KEY_FILE = tmp_path / "keys" / "ledger-ed25519.pem"
    settings.ASSAY_LEDGER_RETIRED_KEYS_FILE = tmp_path / "keys" / "ledger-retired-keys.json"
    return settings
