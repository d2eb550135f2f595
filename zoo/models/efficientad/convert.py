"""Load EfficientAD checkpoints from anomalib, nelson1425/EfficientAD, or our own layout.

Layouts `convert_state_dict` recognises (after unwrapping a Lightning `{"state_dict": ...}` and
dropping its `model.` prefix and non-model entries):

1. anomalib `EfficientAdModel.state_dict()`: `teacher.conv1.weight`, ..., `ae.encoder.enconv1.weight`,
   `ae.decoder.deconv1.weight`, ..., `mean_std.mean` / `mean_std.std` and `quantiles.qa_st` etc.
   anomalib leaves those buffers at zero until computed and then skips the normalisation; an
   all-zero `mean_std` (or all-zero `quantiles`) therefore converts to our identity values
   (mean 0, std 1; quantiles 0 and 0.1).
2. nelson1425: `nn.Sequential` state dicts, either nested `{"teacher": sd, "student": sd,
   "autoencoder": sd}` or flat with `teacher.` / `student.` / `autoencoder.` prefixes. nelson1425
   does not save the teacher mean/std nor the quantiles; add them under our buffer names
   (`teacher_mean`, `teacher_std`, `q_st_start`, `q_st_end`, `q_ae_start`, `q_ae_end`) if you have
   them, otherwise the returned dict lacks them.
3. A lone PDN state dict (nelson1425's `teacher_small.pth` with `0.weight`..., or anomalib's
   `pretrained_teacher_small.pth` with `conv1.weight`...): returned as `teacher.*` entries only.
4. Our own `EfficientAD.state_dict()`: passed through after the same checks.

Cases 2 and 3 return partial dicts. Load them with `load_state(model, state)`, which keeps our
defaults for the absent entries and returns their names (then calibrate: teacher statistics and
`train.calibrate_quantiles`), or with `model.load_state_dict(sd, strict=False)`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from zoo.weights import meta_shapes, preview_names

from .model import EfficientAD, EfficientADConfig

BUFFER_NAMES = ("teacher_mean", "teacher_std", "q_st_start", "q_st_end", "q_ae_start", "q_ae_end")

# anomalib ParameterDict entries -> our buffers.
_ANOMALIB_MEAN_STD = {"mean_std.mean": "teacher_mean", "mean_std.std": "teacher_std"}
_ANOMALIB_QUANTILES = {
    "quantiles.qa_st": "q_st_start",
    "quantiles.qb_st": "q_st_end",
    "quantiles.qa_ae": "q_ae_start",
    "quantiles.qb_ae": "q_ae_end",
}
# Identity values used where anomalib's buffers are unset (all zero).
_IDENTITY = {"teacher_mean": 0.0, "teacher_std": 1.0, "q_st_start": 0.0, "q_st_end": 0.1, "q_ae_start": 0.0, "q_ae_end": 0.1}

# Positions of the convs inside nelson1425's nn.Sequential (common.py): ReLU, AvgPool2d, Upsample
# and Dropout take the other indices.
_NELSON_PDN_S = (0, 3, 6, 8)
_NELSON_PDN_M = (0, 3, 6, 8, 10, 12)
_NELSON_ENCODER = (0, 2, 4, 6, 8, 10)
_NELSON_DECODER = (12, 16, 20, 24, 28, 32, 36, 38)

_SEQ_KEY = re.compile(r"^(\d+)\.(weight|bias)$")
_CONV_KEY = re.compile(r"^conv\d+\.(weight|bias)$")


def expected_shapes(config: EfficientADConfig) -> dict[str, torch.Size]:
    """Names and shapes of our `EfficientAD(config).state_dict()`, built on the meta device."""
    return meta_shapes(lambda: EfficientAD(config))


def _unwrap(state: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten the containers checkpoints come in to one name -> tensor dict."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]  # Lightning checkpoint
    flat: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, Mapping):  # nelson1425 nested {"teacher": sd, ...}
            for sub, tensor in value.items():
                flat[f"{key}.{sub}"] = tensor
        else:
            flat[key] = value
    for prefix in ("module.", "_orig_mod."):  # DDP / torch.compile wrappers
        if flat and all(k.startswith(prefix) for k in flat):
            flat = {k[len(prefix) :]: v for k, v in flat.items()}
    if any(k.startswith("model.") for k in flat):
        # Lightning module: the network lives under `model.`; pre/post-processors and metrics are dropped.
        flat = {k[len("model.") :]: v for k, v in flat.items() if k.startswith("model.")}
    not_tensors = [k for k, v in flat.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise ValueError(f"checkpoint entries are not tensors: {preview_names(not_tensors)}")
    return flat


def detect_layout(state: Mapping[str, Tensor]) -> str:
    """One of "anomalib", "nelson", "ours", "pdn_sequential", "pdn_named" for an unwrapped dict."""
    keys = list(state)
    if any(k.startswith(("mean_std.", "quantiles.", "ae.encoder.enconv", "ae.decoder.deconv")) for k in keys):
        return "anomalib"
    if any(k.startswith("autoencoder.") or re.match(r"^(teacher|student)\.\d+\.", k) for k in keys):
        return "nelson"
    if any(k.startswith(("teacher.", "student.", "ae.")) or k in BUFFER_NAMES for k in keys):
        return "ours"
    if keys and all(_SEQ_KEY.match(k) for k in keys):
        return "pdn_sequential"
    if keys and all(_CONV_KEY.match(k) for k in keys):
        return "pdn_named"
    raise ValueError(f"unrecognised EfficientAD checkpoint layout; first keys: {preview_names(keys)}")


def _is_set(tensors: list[Tensor]) -> bool:
    """anomalib's `is_set`: a ParameterDict counts as computed once any entry sums to non-zero."""
    # Meta tensors (shape-only checks) carry no values: treat them as computed.
    return any(t.is_meta or bool(t.sum() != 0) for t in tensors)


def _from_anomalib(state: Mapping[str, Tensor], shapes: Mapping[str, torch.Size]) -> tuple[dict[str, Tensor], list[str]]:
    out: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key, value in state.items():
        m = re.match(r"^ae\.(encoder\.enconv|decoder\.deconv)(\d+)\.(weight|bias)$", key)
        if m:
            part = "encoder" if m.group(1).startswith("encoder") else "decoder"
            out[f"ae.{part}.{int(m.group(2)) - 1}.{m.group(3)}"] = value
        elif key.startswith(("teacher.conv", "student.conv")):
            out[key] = value  # same conv names as ours
        elif key not in _ANOMALIB_MEAN_STD and key not in _ANOMALIB_QUANTILES:
            unmapped.append(key)
    for group in (_ANOMALIB_MEAN_STD, _ANOMALIB_QUANTILES):
        absent = [k for k in group if k not in state]
        if absent:
            raise ValueError(f"cannot load anomalib checkpoint: missing {absent}")
        computed = _is_set([state[k] for k in group])
        for theirs, ours in group.items():
            # Unset buffers mean "no normalisation" in anomalib, i.e. our identity values.
            out[ours] = state[theirs] if computed else torch.full(shapes[ours], _IDENTITY[ours])
    return out, unmapped


def _nelson_pdn(prefix: str, state: Mapping[str, Tensor], indices: tuple[int, ...], out: dict, unmapped: list) -> None:
    """Map `{prefix}.{seq index}.{w|b}` of a nelson1425 PDN to our `conv{i}` names."""
    to_conv = {idx: i + 1 for i, idx in enumerate(indices)}
    for key, value in state.items():
        m = re.match(rf"^{prefix}\.(\d+)\.(weight|bias)$", key)
        if m and int(m.group(1)) in to_conv:
            out[f"{prefix}.conv{to_conv[int(m.group(1))]}.{m.group(2)}"] = value
        elif m:
            unmapped.append(key)


def _from_nelson(state: Mapping[str, Tensor], config: EfficientADConfig) -> tuple[dict[str, Tensor], list[str]]:
    out: dict[str, Tensor] = {}
    unmapped: list[str] = []
    pdn = _NELSON_PDN_M if config.size == "m" else _NELSON_PDN_S
    _nelson_pdn("teacher", state, pdn, out, unmapped)
    _nelson_pdn("student", state, pdn, out, unmapped)
    ae = {idx: f"ae.encoder.{i}" for i, idx in enumerate(_NELSON_ENCODER)}
    ae.update({idx: f"ae.decoder.{i}" for i, idx in enumerate(_NELSON_DECODER)})
    for key, value in state.items():
        if key in BUFFER_NAMES:
            out[key] = value
            continue
        m = re.match(r"^autoencoder\.(\d+)\.(weight|bias)$", key)
        if m and int(m.group(1)) in ae:
            out[f"{ae[int(m.group(1))]}.{m.group(2)}"] = value
        elif not re.match(r"^(teacher|student)\.\d+\.(weight|bias)$", key):
            unmapped.append(key)
    return out, unmapped


def _from_lone_pdn(state: Mapping[str, Tensor], config: EfficientADConfig, layout: str) -> tuple[dict[str, Tensor], list[str]]:
    """A single PDN state dict becomes the teacher (pretrained teachers are shipped this way)."""
    if layout == "pdn_named":
        return {f"teacher.{k}": v for k, v in state.items()}, []
    out: dict[str, Tensor] = {}
    unmapped: list[str] = []
    indices = _NELSON_PDN_M if config.size == "m" else _NELSON_PDN_S
    _nelson_pdn("teacher", {f"teacher.{k}": v for k, v in state.items()}, indices, out, unmapped)
    return out, [k[len("teacher.") :] for k in unmapped]


def convert_state_dict(state: Mapping[str, Any], config: EfficientADConfig) -> dict[str, Tensor]:
    """Map an anomalib, nelson1425 or our own checkpoint to `EfficientAD(config).state_dict()` names.

    Raises ValueError naming missing, unexpected and mis-shaped entries when it cannot map. Full
    layouts must give every weight; nelson1425 may omit the six normalisation buffers and a lone
    PDN gives only `teacher.*` (see the module docstring for loading partial dicts).
    """
    flat = _unwrap(state)
    layout = detect_layout(flat)
    shapes = expected_shapes(config)
    if layout == "anomalib":
        out, unmapped = _from_anomalib(flat, shapes)
        required = set(shapes)
    elif layout == "nelson":
        out, unmapped = _from_nelson(flat, config)
        required = set(shapes) - set(BUFFER_NAMES)
    elif layout == "ours":
        out, unmapped = dict(flat), []
        required = set(shapes)
    else:
        out, unmapped = _from_lone_pdn(flat, config, layout)
        required = {k for k in shapes if k.startswith("teacher.")}
    _check(out, unmapped, required, shapes, layout, config)
    return out


def _check(
    out: Mapping[str, Tensor],
    unmapped: list[str],
    required: set[str],
    shapes: Mapping[str, torch.Size],
    layout: str,
    config: EfficientADConfig,
) -> None:
    missing = sorted(required - set(out))
    unexpected = sorted(unmapped + [k for k in out if k not in shapes])
    misshaped = [
        f"{k}: got {tuple(v.shape)}, expected {tuple(shapes[k])}" for k, v in out.items() if k in shapes and v.shape != shapes[k]
    ]
    if missing or unexpected or misshaped:
        parts = [f"cannot load {layout} checkpoint into EfficientAD(size={config.size!r}, out_channels={config.out_channels})"]
        if missing:
            parts.append(f"missing ({len(missing)}): {preview_names(missing)}")
        if unexpected:
            parts.append(f"unexpected ({len(unexpected)}): {preview_names(unexpected)}")
        if misshaped:
            parts.append(f"mis-shaped ({len(misshaped)}): {preview_names(misshaped)}")
        raise ValueError("; ".join(parts))


def load_state(model: EfficientAD, state: Mapping[str, Any]) -> list[str]:
    """Convert `state` for `model.config` and load it; returns the entries left at their defaults.

    Anything unmappable raises ValueError (from `convert_state_dict`); entries a partial layout
    lacks (nelson1425's normalisation buffers, or all but the teacher) keep the model's values.
    """
    converted = convert_state_dict(state, model.config)
    result = model.load_state_dict(converted, strict=False)
    return sorted(result.missing_keys)
