"""Load weights into PVD from the layouts it builds on.

- transformers BERT (`load_text_encoder`, `bert_state_dict`): a local folder or file in transformers
  layout (`BertModel` keys `embeddings.*`, `encoder.layer.N.*`, optionally `pooler.*`; or a task model
  such as `BertForMaskedLM` with everything under `bert.` and heads `cls.*`) fills our
  `text_encoder.*`; the pooler and task heads are dropped (PVD uses the last hidden states). A folder's
  `config.json` must match the variant's text sizes (checked, with the mismatching fields named), and
  its `vocab.txt` is what the tokenizer must use with it (returned, for `config.vocab`).
- our own checkpoint (`convert_state_dict`, the card's converter): a PVD state dict saved by other
  code or by training scripts: nested under "model" / "state_dict" / "ema", DDP `module.` prefixes
  stripped; a bare BERT state dict (text encoder only) is refused with a pointer to
  `load_text_encoder`, since the rest of the network would stay random.
No official PVD checkpoint exists (no code was released), so there is no official layout to map.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zoo.weights import WeightsError, preview_names, read_state, unnest

BERT_PREFIX = "text_encoder."
HEADS = ("cls.", "pooler.", "qa_outputs.", "classifier.")
NESTED = ("ema", "model", "state_dict", "net")
CONFIG_FIELDS = {"vocab_size": "vocab_size", "hidden_size": "text_hidden", "num_hidden_layers": "text_layers",
                 "num_attention_heads": "text_heads", "intermediate_size": "text_intermediate",
                 "max_position_embeddings": "text_max_positions"}


def bert_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A transformers BERT state dict (BertModel or a Bert*For* task model) -> our `text_encoder.*` keys."""
    out = {}
    for key, value in state.items():
        if key.startswith("bert."):
            key = key[len("bert."):]
        if key.startswith(HEADS) or key.endswith("position_ids"):
            continue
        if not key.startswith(("embeddings.", "encoder.")):
            raise WeightsError(f"not a BERT key: {key!r} (expected embeddings.*, encoder.*, pooler.* or bert.*)")
        out[BERT_PREFIX + key] = value
    if not out:
        raise WeightsError("no BERT weights found (embeddings.*, encoder.*)")
    return out


def check_bert_config(folder: Path, config: Any) -> None:
    """A transformers config.json against the variant's text sizes; mismatches named."""
    path = folder / "config.json"
    if not path.is_file():
        return
    theirs = json.loads(path.read_text())
    wrong = [f"{k}={theirs[k]} (variant {ours}={getattr(config, ours)})" for k, ours in CONFIG_FIELDS.items()
             if k in theirs and int(theirs[k]) != int(getattr(config, ours))]
    if wrong:
        raise WeightsError(f"{folder}: BERT config does not match the variant's text encoder: {', '.join(wrong)}")


def load_text_encoder(pipeline: Any, source: str | Path) -> str | None:
    """Fill `pipeline.model.text_encoder` from a transformers BERT folder or file; returns the
    folder's vocab.txt path (None if it has none), which `config.vocab` should then name."""
    path = Path(source).expanduser()
    if path.is_dir():
        check_bert_config(path, pipeline.config)
    state, _ = read_state(path)
    ours = bert_state_dict(state)
    own = pipeline.model.state_dict()
    expected = {k for k in own if k.startswith(BERT_PREFIX)}
    missing = sorted(expected - set(ours))
    unexpected = sorted(set(ours) - expected)
    shaped = [k for k in ours if k in own and ours[k].shape != own[k].shape]
    if missing or unexpected or shaped:
        raise WeightsError(f"{path}: BERT weights do not fit the text encoder: missing {preview_names(missing)}; "
                           f"unexpected {preview_names(unexpected)}; mis-shaped {preview_names(shaped)}")
    pipeline.model.load_state_dict({**own, **ours})
    vocab = path / "vocab.txt" if path.is_dir() else path.parent / "vocab.txt"
    return str(vocab) if vocab.is_file() else None


def convert_state_dict(state: dict[str, Any], config: Any) -> dict[str, Tensor]:
    """A PVD checkpoint written elsewhere (nested, DDP-prefixed) -> our state dict (see module docstring)."""
    state = unnest(state, NESTED)
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        if key.startswith("module."):
            key = key[len("module."):]
        out[key] = value
    if out and all(k.startswith(("embeddings.", "encoder.", "pooler.", "bert.", "cls.")) for k in out):
        raise WeightsError("this is a BERT checkpoint (text encoder only): load it with "
                           "zoo.models.pvd.convert.load_text_encoder(pipeline, folder) on top of PVD weights")
    return out
