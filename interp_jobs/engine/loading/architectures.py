"""Which model architectures the engine understands, and where their parts live.

Hooks address blocks, attention and MLP by attribute path, so every supported family must
lay its modules out the same way inside a family. Llama, Mistral, Qwen2/3 and SmolLM share
the Llama layout; GPT-2 has its own; Gemma 3 (text) has its own. Anything else is refused up
front rather than hooked at the wrong place, which would produce plausible-looking but
meaningless evidence.

Gemma 3 differs from Llama in three ways that matter to hooks and to reading a direction off
the residual stream:

- each sublayer is normalised on the way out as well as on the way in (``post_attention_
  layernorm`` after attention, ``post_feedforward_layernorm`` after the MLP), so what a
  sublayer *writes to the residual* is the output of that post-norm, not of ``self_attn`` or
  ``mlp``: ``attn_out`` and ``mlp_out`` name those modules (TransformerLens, Gemma Scope and
  circuit-tracer all put ``hook_attn_out`` / ``hook_mlp_out`` there);
- the norm in front of the MLP is ``pre_feedforward_layernorm`` (``post_attention_layernorm``
  is the attention's post-norm, not the MLP's pre-norm, as the Llama names would suggest);
- its RMSNorms scale by ``1 + weight``, not ``weight`` (``norm_weight_offset``).
"""

from __future__ import annotations

from dataclasses import dataclass

from interp_jobs.engine.errors import PermanentEngineError


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    blocks: str  # path from the CausalLM to the ModuleList of decoder blocks
    attn: str  # attribute of a block
    mlp: str  # attribute of a block
    mid_norm: str  # norm in front of the MLP; its input is the post-attention residual
    final_norm: str  # path from the CausalLM to the norm before the unembedding
    # The modules whose outputs are added to the residual stream (attribute of a block);
    # None: the attention / MLP module itself, as in Llama and GPT-2.
    attn_out: str | None = None
    mlp_out: str | None = None
    norm_weight_offset: float = 0.0  # an RMSNorm scales by (offset + weight)

    @property
    def attn_out_module(self) -> str:
        return self.attn_out or self.attn

    @property
    def mlp_out_module(self) -> str:
        return self.mlp_out or self.mlp


FAMILIES = (
    Family(
        name="llama",
        model_types=("llama", "mistral", "qwen2", "qwen3", "smollm3"),
        blocks="model.layers",
        attn="self_attn",
        mlp="mlp",
        mid_norm="post_attention_layernorm",
        final_norm="model.norm",
    ),
    Family(
        name="gpt2",
        model_types=("gpt2",),
        blocks="transformer.h",
        attn="attn",
        mlp="mlp",
        mid_norm="ln_2",
        final_norm="transformer.ln_f",
    ),
    Family(
        # Gemma3ForCausalLM only; the multimodal Gemma3ForConditionalGeneration ("gemma3")
        # nests its decoder under language_model and is refused.
        name="gemma3",
        model_types=("gemma3_text",),
        blocks="model.layers",
        attn="self_attn",
        mlp="mlp",
        mid_norm="pre_feedforward_layernorm",
        final_norm="model.norm",
        attn_out="post_attention_layernorm",
        mlp_out="post_feedforward_layernorm",
        norm_weight_offset=1.0,
    ),
)

SUPPORTED_MODEL_TYPES = tuple(t for family in FAMILIES for t in family.model_types)


def family_for(model_type: str | None) -> Family:
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise PermanentEngineError(
        f"Unsupported model architecture {model_type!r}. The engine supports the Llama family, "
        f"GPT-2 and Gemma 3 text models (model_type one of: {', '.join(SUPPORTED_MODEL_TYPES)}). "
        "Register a model of a supported architecture, or convert it first."
    )


def family_named(name: str) -> Family:
    """The family a LoadedModel records by name."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise PermanentEngineError(f"Unknown model family {name!r}.")


def get_path(root, dotted: str):
    """Follow a dotted attribute path such as 'model.layers' from ``root``."""
    obj = root
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def final_norm_scale(model, family: Family):
    """The per-dimension scale of the final norm as it multiplies the normalised residual
    (``offset + weight``), detached; None for a norm without a weight."""
    weight = getattr(get_path(model, family.final_norm), "weight", None)
    if weight is None:
        return None
    return weight.detach() + family.norm_weight_offset


def check_layout(model, family: Family, n_layers: int) -> None:
    """Refuse a model whose modules are not where the family says, before any hook is set."""
    attrs = dict.fromkeys(
        (family.attn, family.mlp, family.mid_norm, family.attn_out_module, family.mlp_out_module)
    )
    try:
        blocks = get_path(model, family.blocks)
        get_path(model, family.final_norm)
        for block in blocks:
            for attr in attrs:
                getattr(block, attr)
    except AttributeError as exc:
        raise PermanentEngineError(
            f"The model's modules do not have the {family.name} layout the engine expects "
            f"({exc}). The model class {type(model).__name__} is not supported as is."
        ) from exc
    if len(blocks) != n_layers:
        raise PermanentEngineError(
            f"The model config says {n_layers} layers but the model has {len(blocks)} blocks; "
            "the model directory is inconsistent."
        )
