"""Fixtures for check kinds: a tiny seeded Llama whose tokenizer knows the probe sets' words,
a random lens on its middle layer, and a CheckContext factory.

The tokenizer is a small BPE trained here on the probe prompts, so risk and neutral prompts
tokenize differently (a word-level tokenizer would map them all to [UNK] and make every
contrast meaningless).
"""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from interp_jobs.checks.base import CatalogFeature, CheckContext, LensRef, ModelRef  # noqa: E402
from interp_jobs.probes import load_probe_set  # noqa: E402

TINY_HOOK = "blocks.1.hook_resid_post"
TINY_D_MODEL = 32
TINY_D_SAE = 64
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_bpe_tokenizer(vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [probe.prompt for probe in load_probe_set().prompts]
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["[UNK]", "<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="<pad>",
                                   bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tiny_llama(directory: Path, *, seed: int = 0, n_layers: int = 3) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_bpe_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=TINY_D_MODEL, intermediate_size=64,
        num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, pad_token_id=1, bos_token_id=2, eos_token_id=3,
    )
    LlamaForCausalLM(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_random_lens(directory: Path, *, seed: int = 0, architecture: str = "standard",
                     hook_name: str = TINY_HOOK, d_in: int = TINY_D_MODEL,
                     d_sae: int = TINY_D_SAE) -> Path:
    """A lens with random weights in SAELens's on-disk format (seeded)."""
    from sae_lens import SAE, saes
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    config_class = {"standard": saes.StandardSAEConfig, "topk": saes.TopKSAEConfig}[architecture]
    extra = {"k": 8} if architecture == "topk" else {}
    config = config_class(d_in=d_in, d_sae=d_sae, **extra,
                          metadata=SAEMetadata(hook_name=hook_name, model_name="tiny"))
    lens = SAE.get_sae_class_for_architecture(config.architecture())(config)
    with torch.no_grad():
        for param in lens.parameters():
            param.copy_(torch.randn_like(param) * 0.3)
    lens.save_model(directory)
    return directory


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
        fields.setdefault("model", ModelRef(path=str(tiny_model_dir), format="hf_dir",
                                            weights_digest="", file_digests={}, name="tiny@1"))
        fields.setdefault("lenses", (LensRef(path=str(tiny_lens_dir), digest="", name="tiny"),))
        return CheckContext(
            parameters=module.Parameters.parse(parameters or {}, what="parameters"),
            thresholds=module.Thresholds.parse(thresholds or {}, what="thresholds"),
            **fields,
        )

    return make


def catalog(*features: tuple[int, str, str], lens: str = "tiny") -> tuple[CatalogFeature, ...]:
    """catalog((index, label, axis), ...) for the tiny lens."""
    return tuple(CatalogFeature(lens, index, label, axis) for index, label, axis in features)
