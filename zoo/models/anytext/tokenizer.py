"""CLIP BPE tokenisation as Stable Diffusion 1.5's text encoder takes it: <start>, ids (truncated to 75),
<end>, padded with <end> to 77 (the CLIP tokenizer of SD's pipeline pads with its end token). The
vocabulary is open_clip's bundled copy of CLIP's (offline); `*` is one token, id 265."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

CONTEXT_LENGTH = 77
SOT, EOT = 49406, 49407


@lru_cache(maxsize=1)
def _tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=CONTEXT_LENGTH)


@lru_cache(maxsize=8192)
def _ids(text: str) -> tuple[int, ...]:
    body = _tokenizer().encode(text)[: CONTEXT_LENGTH - 2]
    ids = [SOT, *body, EOT]
    return tuple(ids + [EOT] * (CONTEXT_LENGTH - len(ids)))


def tokenize(texts: Sequence[str]) -> torch.Tensor:
    """(N, 77) int64 ids."""
    if isinstance(texts, str):
        raise TypeError("tokenize takes a list of strings")
    if not texts:
        return torch.zeros(0, CONTEXT_LENGTH, dtype=torch.int64)
    return torch.tensor([_ids(str(t)) for t in texts], dtype=torch.int64)


def token_count(text: str) -> int:
    """BPE tokens of `text` (without <start>/<end>)."""
    return len(_tokenizer().encode(text))
