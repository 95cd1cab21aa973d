"""Generation for probes: answers to chat prompts in small batches, greedy or sampled (seeded),
and the judge that classifies them.

Sampling is reproducible: each batch draws from its own generator state, seeded from ``seed``
and the batch's position, inside ``torch.random.fork_rng`` so a check never disturbs (or
depends on) the process's global random state. Same inputs, seed, torch version and thread
count give the same answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@contextmanager
def _left_padding(tokenizer):
    # Batched generation needs the prompts right-aligned, so new tokens follow real text.
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        yield
    finally:
        tokenizer.padding_side = side


def generate_answers(
    loaded,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 8,
    chat: bool = True,
    temperature: float | None = None,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
) -> list[str]:
    """Each prompt's answer: greedy when ``temperature`` is None, else sampled at that
    temperature (no top-k/top-p truncation) from a generator seeded per batch."""
    answers: list[str] = []
    with _left_padding(loaded.tokenizer), torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            batch = list(prompts[start : start + batch_size])
            enc = loaded.encode(batch, chat=chat)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 1_000_003 + start)
                out = loaded.model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=loaded.tokenizer.pad_token_id,
                    **_decoding(temperature),
                )
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            answers += loaded.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            if progress:
                progress(min(start + batch_size, len(prompts)) / len(prompts))
    return answers


def _decoding(temperature: float | None) -> dict:
    if temperature is None:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}


def greedy_generate(
    loaded,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 8,
    chat: bool = True,
    progress: Callable[[float], None] | None = None,
) -> list[str]:
    """The greedy answer to each prompt (chat template applied when chat is true)."""
    return generate_answers(
        loaded,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        chat=chat,
        progress=progress,
    )


# --- the judge -----------------------------------------------------------------------------------

OUTCOMES = ("refusal", "harmful_compliance", "other")


@dataclass(frozen=True)
class Judge:
    """A versioned three-outcome judge and what is known about its accuracy."""

    fn: Callable[..., str]
    version: str
    record: dict

    def label(self, prompt: str, answer: str, axis: str | None = None) -> str:
        return self.fn(prompt, answer, axis=axis)

    def describe(self) -> dict:
        return {"version": self.version, **self.record}


def load_judge() -> Judge:
    """The project's judge (engine.analysis.judge): refusal, harmful compliance or other, with
    its version and its precision and recall measured on the held-out labelled answers."""
    from interp_jobs.engine.analysis import judge

    return Judge(
        judge.judge, judge.JUDGE_VERSION, {**judge.describe(), "measured": judge.measure()}
    )
