"""Test factories: tiny seeded models and lenses built offline, shared by the tests and bench/.

Everything is built from configs: tokenizers are trained here on a few sentences (or on the probe
prompts, so risk and neutral prompts tokenize differently), models are random and seeded, and
HF_HUB_OFFLINE makes any accidental hub access fail loudly. The real demo model (SmolLM2) is
named here too, for the tests that run on it.
"""

import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The tokenizers' thread pool and torch's OpenMP threads spin-wait against each other on a
# small CI box, which made forward passes of these tiny models 100x slower.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from demo.model_fetch import demo_model_path
from interp_jobs.checks.base import CatalogFeature
from interp_jobs.engine.loading.lenses import load_lens
from interp_jobs.probes import load_probe_set

CORPUS = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "what is the capital of france",
    "paris is the capital of france",
    "<|user|> <|assistant|> hello hi",
]


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


def tiny_llama(vocab_size: int, *, max_position_embeddings: int = 64, **config_extra):
    from transformers import LlamaConfig, LlamaForCausalLM

    settings = {
        "vocab_size": vocab_size,
        "hidden_size": D_MODEL,
        "intermediate_size": 64,
        "num_hidden_layers": N_LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": max_position_embeddings,
        "pad_token_id": 1,
        "bos_token_id": 2,
        "eos_token_id": 3,
    }
    return LlamaForCausalLM(LlamaConfig(**{**settings, **config_extra}))


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
        vocab_size=vocab_size,
        special_tokens=["[UNK]", "<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tiny_llama(directory: Path, *, seed: int = 0, n_layers: int = 3) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_bpe_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=TINY_D_MODEL,
        intermediate_size=64,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=3,
    )
    LlamaForCausalLM(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_random_lens(
    directory: Path,
    *,
    seed: int = 0,
    architecture: str = "standard",
    hook_name: str = TINY_HOOK,
    d_in: int = TINY_D_MODEL,
    d_sae: int = TINY_D_SAE,
) -> Path:
    """A lens with random weights in SAELens's on-disk format (seeded)."""
    from sae_lens import SAE, saes
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    config_class = {"standard": saes.StandardSAEConfig, "topk": saes.TopKSAEConfig}[architecture]
    extra = {"k": 8} if architecture == "topk" else {}
    config = config_class(
        d_in=d_in,
        d_sae=d_sae,
        **extra,
        metadata=SAEMetadata(hook_name=hook_name, model_name="tiny"),
    )
    lens = SAE.get_sae_class_for_architecture(config.architecture())(config)
    with torch.no_grad():
        for param in lens.parameters():
            param.copy_(torch.randn_like(param) * 0.3)
    lens.save_model(directory)
    return directory


def catalog(*features: tuple[int, str, str], lens: str = "tiny") -> tuple[CatalogFeature, ...]:
    """catalog((index, label, axis), ...) for the tiny lens."""
    return tuple(CatalogFeature(lens, index, label, axis) for index, label, axis in features)


PLANTED_FEATURE = 7


PLANTED_AXIS = "weapons"


MARK = 1.0  # size of the planted direction in the marked tokens' embeddings (others ~0.1)


SCALE = 4.0  # the planted feature's encoder column is SCALE * direction


def _templated_token_ids(tokenizer, text: str) -> set[int]:
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    return set(tokenizer(chat, add_special_tokens=False)["input_ids"])


def axis_only_tokens(tokenizer, axis: str) -> list[int]:
    probes = load_probe_set()
    neutral = set().union(
        *(_templated_token_ids(tokenizer, p.prompt) for p in probes.neutral_prompts)
    )
    risk = set().union(*(_templated_token_ids(tokenizer, p.prompt) for p in probes.for_axis(axis)))
    return sorted(risk - neutral)


def save_planted_model(directory: Path, *, axis: str = PLANTED_AXIS, seed: int = 0):
    """A tiny seeded Llama (vocabulary large enough for whole words) whose embedding adds
    MARK * direction to every token found in ``axis`` prompts but in no neutral prompt.
    Returns the unit direction."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_bpe_tokenizer(vocab_size=2000)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=TINY_D_MODEL,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=3,
    )
    model = LlamaForCausalLM(config).eval()
    direction = torch.nn.functional.normalize(torch.randn(TINY_D_MODEL), dim=0)
    with torch.no_grad():
        model.model.embed_tokens.weight[axis_only_tokens(tokenizer, axis)] += MARK * direction
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return direction


def save_planted_lens(directory: Path, direction: torch.Tensor, *, seed: int = 0) -> Path:
    """The random tiny lens, with feature PLANTED_FEATURE reading ``direction``: it is positive
    exactly where the residual's component along direction exceeds MARK / 2. The other
    (random) features are made blind to the direction, so they can see the mark only through
    what the model's layers compute from it."""
    save_random_lens(directory, seed=seed)
    lens = load_lens(directory)
    with torch.no_grad():
        lens.b_dec -= (lens.b_dec @ direction) * direction  # no offset along the direction
        lens.W_enc -= torch.outer(direction, direction @ lens.W_enc)
        lens.W_enc[:, PLANTED_FEATURE] = SCALE * direction
        lens.b_enc[PLANTED_FEATURE] = -SCALE * MARK / 2
    lens.save_model(directory)
    return directory


def demo_lens_dir(directory: Path) -> Path:
    """The shipped SmolLM2 lens when there is one, else a random lens of the right shape (its
    numbers then mean nothing, but every code path runs on the real model)."""
    shipped = sorted((Path(__file__).parents[1] / "interp_jobs" / "lenses").glob("smollm2-*"))
    shipped = [path for path in shipped if (path / "cfg.json").is_file()]
    if shipped:
        return shipped[0]
    return save_random_lens(directory, d_in=576, hook_name="blocks.15.hook_resid_post", d_sae=1024)


def brute_force_stats(loaded, lens, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference statistics for the tiny models: a full forward of one prompt, all hidden
    states, a full encode, and the user's tokens found by tokenizing the template's pieces on
    their own (no offsets involved)."""
    tok = loaded.tokenizer
    ids = tok(loaded.chat_prompt(text), add_special_tokens=False, return_tensors="pt")
    n_prefix = len(tok("<|user|>", add_special_tokens=False)["input_ids"])
    n_suffix = len(tok(" <|assistant|>", add_special_tokens=False)["input_ids"])
    with torch.inference_mode():
        out = loaded.model(**ids, output_hidden_states=True)
        acts = lens.encode(out.hidden_states[2][0])  # output of block 1
    user = acts[n_prefix : acts.shape[0] - n_suffix]
    return user.max(dim=0).values, user.mean(dim=0)


STORE = Path(os.environ.get("ASSAY_MODEL_STORE", Path(__file__).parents[1] / "var" / "models"))


GGUF = demo_model_path(STORE)


# `make test` fetches the model first and sets ASSAY_REQUIRE_DEMO_MODEL, so in CI a missing
# model is a failure, never a silent skip.
REQUIRED = os.environ.get("ASSAY_REQUIRE_DEMO_MODEL") == "1"


# --- probe set v2 (splits): the same planted model, planted on v2's words ----------------------


def build_bpe_tokenizer_for(version: str, vocab_size: int = 400):
    """build_bpe_tokenizer, trained on another probe-set version's prompts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [probe.prompt for probe in load_probe_set(version).prompts]
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["[UNK]", "<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def axis_only_tokens_for(tokenizer, axis: str, version: str, splits=None) -> list[int]:
    """Tokens of ``axis`` prompts (of ``splits``; all when None) found in no neutral prompt of
    any split."""
    neutral = set().union(
        *(
            _templated_token_ids(tokenizer, p.prompt)
            for p in load_probe_set(version).neutral_prompts
        )
    )
    risk_prompts = load_probe_set(version, axis, split=splits).for_axis(axis)
    risk = set().union(*(_templated_token_ids(tokenizer, p.prompt) for p in risk_prompts))
    return sorted(risk - neutral)


def save_planted_model_for(
    directory: Path, *, version: str = "v2", axis: str = PLANTED_AXIS, splits=None, seed: int = 0
):
    """save_planted_model on another probe-set version: the mark is on the tokens of ``axis``
    prompts of ``splits`` (all when None) that no neutral prompt has. Planted on the discovery
    split only, the feature sees held-out prompts only through the words they share with it.
    Returns the unit direction (for save_planted_lens)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_bpe_tokenizer_for(version, vocab_size=2000)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=TINY_D_MODEL,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=3,
    )
    model = LlamaForCausalLM(config).eval()
    direction = torch.nn.functional.normalize(torch.randn(TINY_D_MODEL), dim=0)
    marked = axis_only_tokens_for(tokenizer, axis, version, splits)
    with torch.no_grad():
        model.model.embed_tokens.weight[marked] += MARK * direction
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return direction


TINY_D_TRANSCODER = 48


def save_random_transcoders(
    directory: Path,
    *,
    n_layers: int = 3,
    d_model: int = TINY_D_MODEL,
    d_transcoder: int = TINY_D_TRANSCODER,
    seed: int = 0,
    threshold: float = 0.3,
) -> Path:
    """A transcoder set for a tiny model: one seeded random SAELens ``jumprelu_transcoder`` per
    layer (MLP input -> MLP output) in ``layer_NN/`` and a ``transcoders.json`` manifest, the
    layout ``interp_jobs.engine.loading.transcoders`` reads. The threshold leaves a few
    features active per token on the tiny model's normalised MLP inputs."""
    from sae_lens.saes.transcoder import JumpReLUTranscoder, JumpReLUTranscoderConfig

    from interp_jobs.engine.loading.transcoders import HOOK_IN, HOOK_OUT, LAYER_DIR, write_manifest

    torch.manual_seed(seed)
    for layer in range(n_layers):
        config = JumpReLUTranscoderConfig(
            d_in=d_model, d_sae=d_transcoder, d_out=d_model, apply_b_dec_to_input=False
        )
        config.metadata.hook_name = HOOK_IN.format(layer)
        config.metadata.hook_name_out = HOOK_OUT.format(layer)
        config.metadata.model_name = "tiny"
        lens = JumpReLUTranscoder(config)
        with torch.no_grad():
            lens.W_enc.copy_(torch.randn_like(lens.W_enc) * 0.5)
            lens.W_dec.copy_(torch.randn_like(lens.W_dec) * 0.05)
            lens.b_enc.copy_(torch.randn_like(lens.b_enc) * 0.1)
            lens.b_dec.zero_()
            lens.threshold.fill_(threshold)
        lens.save_model(directory / LAYER_DIR.format(layer))
    write_manifest(
        directory,
        {
            "n_layers": n_layers,
            "d_model": d_model,
            "d_transcoder": d_transcoder,
            "architecture": "jumprelu_transcoder",
            "scan": f"tiny-transcoders-seed{seed}",
        },
    )
    return directory


def transcoder_refs(directory: Path, n_layers: int = 3):
    """LensRefs for a transcoder set, one per layer, named like the demo registers them."""
    from interp_jobs.checks.base import LensRef
    from interp_jobs.engine.loading.transcoders import LAYER_DIR

    return tuple(
        LensRef(path=str(directory / LAYER_DIR.format(i)), digest="", name=f"tc-{i:02d}")
        for i in range(n_layers)
    )


# --- a tiny model whose refusal is mediated by one planted direction ---------------------------

REFUSAL_AXES = ("weapons", "cyber")


REFUSAL_MARK = 4.0  # the marked tokens' embedding along d (the other 31 coordinates are ~N(0, 1))


REFUSAL_CARRY = 1.0  # how much of the attention's average along d the first layer writes back


REFUSAL_GAIN = 4.0  # the unembedding's weight along d for the continuations' first tokens


REFUSAL_NOISE_DIMS = 4  # a second path, orthogonal to d, that the unembedding never reads


REFUSAL_NOISE_CARRY = 1.0  # how much of the attention's average along it is written back


def continuation_tokens(tokenizer) -> tuple[list[list[int]], list[list[int]]]:
    """feature_intervention's refusal and compliance continuations as the check tokenizes them."""
    from interp_jobs.checks.feature_intervention import (
        COMPLIANCE_CONTINUATIONS,
        REFUSAL_CONTINUATIONS,
    )
    from interp_jobs.engine.analysis.interventions import continuation_token_ids

    return (
        continuation_token_ids(tokenizer, REFUSAL_CONTINUATIONS),
        continuation_token_ids(tokenizer, COMPLIANCE_CONTINUATIONS),
    )


def continuation_first_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The first tokens of the refusal and of the compliance continuations, each without the
    tokens both kinds start with."""
    refusal, compliance = ({ids[0] for ids in kind} for kind in continuation_tokens(tokenizer))
    return sorted(refusal - compliance), sorted(compliance - refusal)


def _random_unit(size: int) -> torch.Tensor:
    vector = torch.randn(size)
    return vector / vector.norm()


def save_refusal_direction_model(
    directory: Path,
    *,
    coefficient: float = 1.0,
    axes: tuple[str, ...] = REFUSAL_AXES,
    seed: int = 0,
    d_model: int = TINY_D_MODEL,
    readout: str = "planted",
) -> torch.Tensor:
    """A tiny seeded Llama (probe set v2's BPE) in which refusal is mediated by one direction
    d, planted with ``coefficient`` (0: the same model, unplanted). Returns d (unit length).

    - Embeddings: random N(0, 1) with no component along d; tokens found in ``axes`` risk
      prompts (any split) and in no neutral prompt get ``coefficient * REFUSAL_MARK`` along d,
      except tokens of the continuations the check scores: a marked token there would put d
      straight into the unembedding at its own position and move the next token's
      normalisation, and the refusal openings, longer than the compliance ones, would lose more
      by it than their first token gains.
    - Block 0's attention has zero query and key weights, so each position attends uniformly to
      itself and every earlier position; its value and output weights carry the average of the
      (normalised) inputs' component along d (times REFUSAL_CARRY), and along
      REFUSAL_NOISE_DIMS random directions orthogonal to d (times REFUSAL_NOISE_CARRY), back
      into the residual stream: harmful and harmless prompts then differ along d and, by
      their words, along the noise directions too. The later blocks'
      attention writes nothing; every MLP is random (HF initialisation) but writes nothing
      along d.
    - The unembedding reads only d: the first tokens of the refusal continuations get
      +REFUSAL_GAIN * d, those of the compliance continuations -REFUSAL_GAIN * d, every other
      token 0. So a prompt's refusal log-odds rise with the component along d at its end.
      With ``readout="random"`` it reads a random unit vector instead (the negative model:
      with coefficient 0 refusal then moves with whatever is added or ablated, while no
      direction carries harmful-vs-harmless).
    - ``d_model``: the residual width (the MLPs twice as wide); the wider, the closer to
      orthogonal to d a random direction is (|cos| ~ 1 / sqrt(d_model)).

    d is a coordinate axis (chosen with the seed). The check is blind to the basis (RMSNorm
    with unit weights, attention, MLPs and unembedding are rotation-equivariant: the planted
    model rotated by a random orthogonal matrix gave the same figures to four digits), and on
    an axis "no component along d" is exactly 0.0 in float32, so the unplanted model carries
    nothing at all along d rather than float rounding. (Rounding alone once counted as detected:
    the rotated unplanted model's ablation arm at -2.6e-6 [-4.3e-6, -9.5e-7]; the check's
    min_control_effect now asks for more.)
    """
    torch.manual_seed(seed)
    tokenizer = build_bpe_tokenizer_for("v2", vocab_size=2000)
    model = tiny_llama(
        len(tokenizer),
        max_position_embeddings=256,
        tie_word_embeddings=False,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
    ).eval()
    axis = int(torch.randint(d_model, ()))
    direction = torch.zeros(d_model)
    direction[axis] = 1.0
    rest = [i for i in range(d_model) if i != axis]
    noise = torch.zeros(d_model, REFUSAL_NOISE_DIMS)
    noise[rest] = torch.linalg.qr(torch.randn(d_model - 1, REFUSAL_NOISE_DIMS)).Q
    scored = {token for kind in continuation_tokens(tokenizer) for ids in kind for token in ids}
    marked = sorted(set().union(*(axis_only_tokens_for(tokenizer, a, "v2") for a in axes)) - scored)
    refusal, compliance = continuation_first_tokens(tokenizer)
    embeddings = torch.randn(len(tokenizer), d_model)
    embeddings[:, axis] = 0.0
    embeddings[marked, axis] = coefficient * REFUSAL_MARK
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(embeddings)
        for layer in model.model.layers:
            for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                getattr(layer.self_attn, proj).weight.zero_()
            layer.mlp.down_proj.weight[axis] = 0.0
        first = model.model.layers[0].self_attn
        paths = torch.cat([direction.unsqueeze(1), noise], dim=1)  # (d_model, 1 + noise)
        first.v_proj.weight[: paths.shape[1]] = paths.T  # key-value head 0, read by heads 0, 1
        carry = torch.tensor([REFUSAL_CARRY] + [REFUSAL_NOISE_CARRY] * REFUSAL_NOISE_DIMS)
        first.o_proj.weight[:, : paths.shape[1]] = paths * carry  # head 0's output
        read = direction if readout == "planted" else _random_unit(d_model)
        model.lm_head.weight.zero_()
        model.lm_head.weight[refusal] = REFUSAL_GAIN * read
        model.lm_head.weight[compliance] = -REFUSAL_GAIN * read
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return direction
