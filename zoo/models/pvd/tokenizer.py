"""Offline WordPiece tokenisation of referring expressions for PVD's BERT-style text encoder.

Choice (issue #18 offers CLIP BPE or a trained WordPiece): WordPiece, because the text encoder is
a BERT (transformers layout) and a real BERT checkpoint comes with its own WordPiece `vocab.txt`;
the same code reads either. The micro variant's vocabulary (`vocab/shapes.txt`) was
trained once with `tokenizers`' `BertWordPieceTokenizer.train_from_iterator` on every procedural
expression form of `zoo.data.shapes` (`train_vocab` rebuilds it; a test checks the file is what it
makes). Special tokens first, so [PAD] = 0, the id the encoder masks out. Lower-cased, BERT's
basic pre-tokeniser (whitespace and punctuation); words outside the vocabulary become [UNK].

A paper-size variant names `vocab="bert-base-uncased"`: that vocabulary is not bundled (nothing is
downloaded), so pass `vocab=PATH/vocab.txt` from the checkpoint folder (convert.load_text_encoder
does it for a transformers folder).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import torch

VOCAB_DIR = Path(__file__).parent / "vocab"
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class ExpressionError(ValueError):
    """An expression the model cannot take (empty, too long); the message names the input."""


def vocab_path(vocab: str) -> Path:
    """A bundled vocabulary name (vocab/NAME.txt) or a path to a vocab.txt."""
    bundled = VOCAB_DIR / f"{vocab}.txt"
    if bundled.is_file():
        return bundled
    path = Path(vocab).expanduser()
    if path.is_dir():
        path = path / "vocab.txt"
    if path.is_file():
        return path
    raise FileNotFoundError(f"WordPiece vocabulary {vocab!r} not found: not a bundled name ({', '.join(sorted(p.stem for p in VOCAB_DIR.glob('*.txt')))}) "
                            "nor a vocab.txt path (a BERT checkpoint folder has one)")


@lru_cache(maxsize=8)
def _tokenizer(path: str):
    from tokenizers import BertWordPieceTokenizer

    return BertWordPieceTokenizer(path, lowercase=True)


def vocab_size(vocab: str) -> int:
    return int(_tokenizer(str(vocab_path(vocab))).get_vocab_size())


def encode(texts: Sequence[str], vocab: str, max_tokens: int, field: str = "expression") -> torch.Tensor:
    """Expressions -> (B, max_tokens) int64 ids: [CLS] pieces [SEP] then [PAD] (0).
    An empty (or whitespace-only) expression, or one over max_tokens - 2 word pieces, is an
    `ExpressionError` naming `field`."""
    if isinstance(texts, str):
        raise TypeError("encode takes a list of strings, not one string")
    tok = _tokenizer(str(vocab_path(vocab)))
    rows = []
    for text in texts:
        if not isinstance(text, str):
            raise ExpressionError(f"input {field!r} expects text, got {type(text).__name__}")
        if not text.strip():
            raise ExpressionError(f"input {field!r} is empty: give a referring expression, e.g. 'the red circle'")
        ids = tok.encode(text).ids  # [CLS] ... [SEP]
        if len(ids) > max_tokens:
            raise ExpressionError(f"input {field!r} is too long: {len(ids) - 2} word pieces, at most {max_tokens - 2} "
                                  f"({text[:40]!r}...)")
        rows.append(ids + [0] * (max_tokens - len(ids)))
    return torch.tensor(rows, dtype=torch.int64).reshape(len(rows), max_tokens)


def expression_corpus() -> list[str]:
    """Every expression form the procedural data uses (attributes, locations, relations)."""
    from zoo.data.shapes import COLOURS, LOCATIONS, RELATIONS, SIZES, THING_CLASSES

    out = []
    for shape in THING_CLASSES:
        for colour in COLOURS:
            for size in SIZES:
                out.append(f"the {size} {colour} {shape}")
            for loc in LOCATIONS:
                out.append(f"the {colour} {shape} {loc}")
            for rel in RELATIONS:
                for other in THING_CLASSES:
                    out.append(f"the {colour} {shape} {rel} the {colour} {other}")
    return out


def train_vocab(texts: Iterable[str] | None = None, vocab_size: int = 128) -> list[str]:
    """A WordPiece vocabulary (list of tokens, id order) trained with `tokenizers` on `texts`
    (default: `expression_corpus()`)."""
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(list(texts or expression_corpus()), vocab_size=vocab_size, min_frequency=1,
                            special_tokens=list(SPECIALS), limit_alphabet=40)
    vocab = tok.get_vocab()
    return [token for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])]


def write_vocab(path: str | Path, tokens: Sequence[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path
