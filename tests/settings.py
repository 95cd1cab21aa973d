"""Test settings: the real settings module, with the variables a test run needs defaulted."""

import os
from pathlib import Path

os.environ.setdefault("ASSAY_SECRET_KEY", "test-only-secret-key-not-for-production-use-0123456789")
# The test client speaks plain http (a test of the production settings sets it back).
os.environ.setdefault("ASSAY_HTTPS", "false")
os.environ.setdefault("ASSAY_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))

from config.settings import *  # noqa: F403

# Personas are created for every test; the production hasher would dominate the suite's time.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
