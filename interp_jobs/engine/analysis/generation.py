"""Greedy generation for probes: deterministic answers to chat prompts, in small batches."""

from collections.abc import Callable, Sequence
from contextlib import contextmanager

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
    answers: list[str] = []
    with _left_padding(loaded.tokenizer), torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            batch = list(prompts[start : start + batch_size])
            enc = loaded.encode(batch, chat=chat)
            out = loaded.model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=loaded.tokenizer.pad_token_id,
            )
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            answers += loaded.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            if progress:
                progress(min(start + batch_size, len(prompts)) / len(prompts))
    return answers
