"""Prompt families for validating attribution graphs: many prompts of one form, each with a
single-token target (and, for two-hop prompts, the intermediate entity the prompt never names).

Shipped under ``prompt_families/`` (written for Assay, CC0), each file pinned by the sha256 in
``MANIFEST.json`` and checked on every load. They are never used to train lenses, and the probe
sets (``interp_jobs/probes``) are never used here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from interp_jobs.engine.errors import PermanentEngineError

FAMILIES_DIR = Path(__file__).with_name("prompt_families")
MANIFEST = "MANIFEST.json"


@dataclass(frozen=True)
class FamilyPrompt:
    id: str
    prompt: str
    target: str
    subject: str = ""
    entity: str = ""  # two-hop: the intermediate entity


@dataclass(frozen=True)
class PromptFamily:
    name: str
    prompts: tuple[FamilyPrompt, ...]
    sha256: str
    description: str

    def describe(self) -> dict:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "count": len(self.prompts),
            "description": self.description,
        }


def family_names() -> list[str]:
    manifest = json.loads((FAMILIES_DIR / MANIFEST).read_text(encoding="utf-8"))
    return sorted(manifest["families"])


def load_family(name: str) -> PromptFamily:
    manifest = json.loads((FAMILIES_DIR / MANIFEST).read_text(encoding="utf-8"))
    entry = manifest["families"].get(name)
    if entry is None:
        raise PermanentEngineError(
            f"Unknown prompt family {name!r}; shipped families: {', '.join(family_names())}."
        )
    raw = (FAMILIES_DIR / entry["file"]).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != entry["sha256"]:
        raise PermanentEngineError(
            f"Prompt family {name} is corrupt (sha256 {digest}, manifest {entry['sha256']}); "
            "restore it from the repository."
        )
    prompts = tuple(
        FamilyPrompt(**json.loads(line)) for line in raw.decode("utf-8").splitlines() if line
    )
    return PromptFamily(name, prompts, digest, entry["description"])


def multi_token_words(tokenizer, name: str) -> list[str]:
    """The family's targets and intermediate entities that this tokenizer splits into several
    tokens (validation needs each as one token; an empty list means the family fits)."""
    words = {w for p in load_family(name).prompts for w in (p.target, p.entity) if w}
    return sorted(w for w in words if len(tokenizer.encode(w, add_special_tokens=False)) != 1)
