"""Tiny, seeded, randomly initialised models saved to disk and loaded back through the engine.

Everything is built offline: the tokenizer is trained here on a few sentences, the models come
from configs, and HF_HUB_OFFLINE makes any accidental hub access fail loudly.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The tokenizers' thread pool and torch's OpenMP threads spin-wait against each other on a
# small CI box, which made forward passes of these tiny models 100x slower.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)  # tiny models gain nothing from threads; keeps timings stable

CORPUS = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "what is the capital of france",
    "paris is the capital of france",
    "<|user|> <|assistant|> hello hi",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
D_MODEL = 32
N_LAYERS = 3


@dataclass
class SavedModel:
    path: Path
    raw: torch.nn.Module  # the in-memory model that was saved, for comparison
    tokenizer: object


def build_tokenizer(*, chat_template: str | None = None):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(
        CORPUS, trainers.WordLevelTrainer(special_tokens=["[UNK]", "<pad>", "<s>", "</s>"])
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
    )
    if chat_template:
        fast.chat_template = chat_template
    return fast


def tiny_llama(vocab_size: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=D_MODEL,
        intermediate_size=64,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=3,
    )
    return LlamaForCausalLM(config)


def tiny_gpt2(vocab_size: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size,
        n_embd=D_MODEL,
        n_layer=N_LAYERS,
        n_head=4,
        n_positions=64,
        bos_token_id=2,
        eos_token_id=3,
    )
    return GPT2LMHeadModel(config)


def save_tiny(directory: Path, build, *, seed: int = 0, chat_template=None) -> SavedModel:
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(chat_template=chat_template)
    raw = build(len(tokenizer)).eval()
    raw.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return SavedModel(path=directory, raw=raw, tokenizer=tokenizer)


@pytest.fixture(scope="session")
def make_saved_model():
    """``make(directory, build, seed=..., chat_template=...)`` for tests that need their own."""
    return save_tiny


@pytest.fixture(scope="session")
def chat_template() -> str:
    return CHAT_TEMPLATE


@pytest.fixture(scope="session")
def llama_saved(tmp_path_factory) -> SavedModel:
    return save_tiny(tmp_path_factory.mktemp("llama"), tiny_llama, chat_template=CHAT_TEMPLATE)


@pytest.fixture(scope="session")
def gpt2_saved(tmp_path_factory) -> SavedModel:
    return save_tiny(tmp_path_factory.mktemp("gpt2"), tiny_gpt2, seed=1)


def _byte_level_bpe():
    """A GPT-2 style byte-level BPE (the tokenizer kind GGUF files can carry), as lists."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    spec = json.loads(tok.to_str())["model"]
    tokens = [token for token, _ in sorted(spec["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["merges"]]
    return tokens, merges


def _llama_cpp_permute(weight, n_head: int):
    # llama.cpp stores q/k rows interleaved for its rotary layout; the GGUF loader undoes this.
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _write_llama_header(writer, config, tokens, merges) -> None:
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types([3] + [1] * (len(tokens) - 1))  # token 0 is a control token
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)


def save_tiny_gguf(path: Path, *, seed: int = 0) -> SavedModel:
    """A tiny Llama written as a single F32 GGUF file the way llama.cpp's converter does."""
    import gguf
    import numpy as np

    tokens, merges = _byte_level_bpe()
    torch.manual_seed(seed)
    raw = tiny_llama(len(tokens)).eval()
    config = raw.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    writer = gguf.GGUFWriter(str(path), "llama")
    _write_llama_header(writer, config, tokens, merges)
    heads = {"q_proj": config.num_attention_heads, "k_proj": config.num_key_value_heads}
    for name, tensor in raw.state_dict().items():
        array = tensor.numpy().astype(np.float32)
        head_count = next((n for key, n in heads.items() if f"{key}.weight" in name), None)
        if head_count:
            array = _llama_cpp_permute(array, head_count)
        writer.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return SavedModel(path=path, raw=raw, tokenizer=None)


@pytest.fixture(scope="session")
def llama_gguf(tmp_path_factory) -> SavedModel:
    return save_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf")


@pytest.fixture(params=["llama", "gpt2"])
def saved(request, llama_saved, gpt2_saved) -> SavedModel:
    return {"llama": llama_saved, "gpt2": gpt2_saved}[request.param]


@pytest.fixture
def loaded(saved):
    """A fresh load per test, so hooks or state from one test can never leak into another."""
    from interp_jobs.engine.models import load_model

    return load_model(saved.path, "hf_dir")


@pytest.fixture
def llama_loaded(llama_saved):
    from interp_jobs.engine.models import load_model

    return load_model(llama_saved.path, "hf_dir")


@pytest.fixture
def batch(loaded):
    return loaded.encode(["the cat sat on the mat", "paris is the capital"])
