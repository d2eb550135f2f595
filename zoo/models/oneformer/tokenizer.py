"""CLIP BPE tokenisation of OneFormer's task and text inputs (official `oneformer/data/tokenizer.py`).

OneFormer tokenises two kinds of strings with the CLIP byte-pair encoder (Radford et al. 2021;
vocabulary `bpe_simple_vocab_16e6`, 49 408 ids, start-of-text 49406, end-of-text 49407):

- the task input "The task is {task}" (paper Sec. 3.1, I_task), 77 ids, which the task MLP reads
  as a float vector (the official `self.task_mlp(tasks.float())`);
- during training, the text list "a photo with a {cls}" / "a {task} photo" (Sec. 3.2, T_pad),
  77 ids each, encoded by the text mapper.

Each string becomes [SOT] + BPE ids + [EOT], zero-padded to `context_length`, truncated with EOT
last, as the official `Tokenize`. We use open_clip's `SimpleTokenizer`, whose vocabulary ships in
its wheel (nothing is downloaded) and whose cleaning (ftfy, whitespace, lower case) and split
pattern are those of the official copy. open_clip is imported lazily: it costs seconds, and the
three task token rows are cached after the first call.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408
SOT_TOKEN = 49406
EOT_TOKEN = 49407
TASKS = ("semantic", "instance", "panoptic")


@lru_cache(maxsize=1)
def _tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=CONTEXT_LENGTH)


@lru_cache(maxsize=4096)
def _encode(text: str, context_length: int) -> tuple[int, ...]:
    """One string -> its `context_length` ids (cached: the training texts repeat a lot)."""
    return tuple(_tokenizer()([text], context_length=context_length)[0].tolist())


def tokenize(texts: Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """CLIP BPE ids `(N, context_length)` int64 of `texts` (SOT, ids, EOT, zeros)."""
    if isinstance(texts, str):
        raise TypeError("tokenize takes a list of strings, not one string")
    rows = [_encode(str(t), context_length) for t in list(texts)]
    if not rows:
        return torch.zeros(0, context_length, dtype=torch.int64)
    return torch.tensor(rows, dtype=torch.int64)


def task_text(task: str) -> str:
    """The task input string of the official mapper and inference: "The task is {task}"."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return f"The task is {task}"


def task_tokens(tasks: Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """Task tokens `(B, context_length)` int64 of "The task is {task}" for each task name."""
    if isinstance(tasks, str):
        tasks = [tasks]
    return tokenize([task_text(t) for t in tasks], context_length)


def text_tokens(texts: Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """Text-mapper tokens `(N, context_length)` int64 of the text list entries."""
    return tokenize(texts, context_length)
