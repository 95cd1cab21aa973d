"""Which model architectures the engine understands, and where their parts live.

Hooks address blocks, attention and MLP by attribute path, so every supported family must
lay its modules out the same way inside a family. Llama, Mistral, Qwen2/3 and SmolLM share
the Llama layout; GPT-2 has its own. Anything else is refused up front rather than hooked
at the wrong place, which would produce plausible-looking but meaningless evidence.
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
)

SUPPORTED_MODEL_TYPES = tuple(t for family in FAMILIES for t in family.model_types)


def family_for(model_type: str | None) -> Family:
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise PermanentEngineError(
        f"Unsupported model architecture {model_type!r}. The engine supports the Llama family "
        f"and GPT-2 (model_type one of: {', '.join(SUPPORTED_MODEL_TYPES)}). Register a model "
        "of a supported architecture, or convert it first."
    )


def get_path(root, dotted: str):
    """Follow a dotted attribute path such as 'model.layers' from ``root``."""
    obj = root
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def check_layout(model, family: Family, n_layers: int) -> None:
    """Refuse a model whose modules are not where the family says, before any hook is set."""
    try:
        blocks = get_path(model, family.blocks)
        get_path(model, family.final_norm)
        for block in blocks:
            for attr in (family.attn, family.mlp, family.mid_norm):
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
