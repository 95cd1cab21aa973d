"""Fixtures for check kinds: a tiny seeded Llama whose tokenizer knows the probe sets' words,
a random lens on its middle layer, and a CheckContext factory.

The tokenizer is a small BPE trained here on the probe prompts, so risk and neutral prompts
tokenize differently (a word-level tokenizer would map them all to [UNK] and make every
contrast meaningless).
"""

from pathlib import Path

import pytest

from interp_jobs.checks.base import CheckContext, LensRef, ModelRef
from tests.factories import save_random_lens, save_tiny_llama


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_lens_dir(tmp_path_factory) -> Path:
    return save_random_lens(tmp_path_factory.mktemp("tiny-lens"))


@pytest.fixture
def make_context(tiny_model_dir, tiny_lens_dir):
    """make_context(module, parameters=..., thresholds=..., **fields) -> CheckContext."""

    def make(module, parameters=None, thresholds=None, **fields) -> CheckContext:
        fields.setdefault(
            "model",
            ModelRef(
                path=str(tiny_model_dir),
                format="hf_dir",
                weights_digest="",
                file_digests={},
                name="tiny@1",
            ),
        )
        fields.setdefault("lenses", (LensRef(path=str(tiny_lens_dir), digest="", name="tiny"),))
        return CheckContext(
            parameters=module.Parameters.parse(parameters or {}, what="parameters"),
            thresholds=module.Thresholds.parse(thresholds or {}, what="thresholds"),
            **fields,
        )

    return make
