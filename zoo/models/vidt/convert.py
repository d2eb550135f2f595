"""Load official ViDT / ViDT+ checkpoints and ImageNet Swin weights into our `ViDT`.

Layouts `convert_state_dict` recognises (after unwrapping `{"model": ...}` / `{"state_dict": ...}`
and a `module.` prefix):

1. official naver-ai/vidt detector checkpoints (`checkpoint["model"]`, keys `backbone.*`,
   `transformer.*`, `class_embed.*`, ...). Our modules keep the official names, so the map only
   - drops parameters the official forward never reads (`model.official_unused_parameters`):
     `backbone.layers.N.downsample.{expansion,norm2}.*`, `backbone.norm{1,2,3}.*`,
     `transformer.level_embed`, the top EPFF block's `smoothing` / `resConfUnit1`;
   - drops buffers (`relative_position_index`) and the alias `transformer.decoder.bbox_embed.*`
     (the official decoder holds the detector's box heads a second time for box refinement);
   - folds heads the official shares through a list of one module (`vector_embed.N`, and without
     box refinement `class_embed.N`, `bbox_embed.N`, `iou_embed.N`) into our single module.
2. the Swin ImageNet checkpoints the official code starts from (Microsoft's `swin_*_patch4_window7_224.pth`,
   naver-ai's `swin_nano`, key `model`): downsampling at the end of a stage, `layers.0.downsample`.
3. timm's Swin (`swin_tiny_patch4_window7_224` etc., timm >= 0.9): downsampling at the start of a
   stage (`layers.1.downsample` is our `layers.0.downsample`), classifier `head.fc`.
4. our own layout (returned after the same checks).

Layouts 2 and 3 hold the backbone's Swin weights only; the [DET] tokens, their position
embedding and projections, the last stage's 1/64 reduction and the neck and heads are taken from
`base` (default: a freshly initialised `ViDT(config)`), as the official fine-tuning from ImageNet
starts them. Any other mismatch raises ValueError naming the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.weights import meta_shapes, preview_names, read_state

from .model import ViDT, ViDTConfig

_BUFFERS = ("relative_position_index", "attn_mask")


def expected_shapes(config: ViDTConfig) -> dict[str, torch.Size]:
    """Our state dict's names and shapes, built on the meta device."""
    return meta_shapes(lambda: ViDT(config))


def _unwrap(state: Mapping[str, Any]) -> dict[str, Any]:
    """The weights inside a training checkpoint: nested {"model": sd} or flattened "model." keys."""
    flat = dict(state)
    for key in ("model", "state_dict"):
        if isinstance(flat.get(key), Mapping):
            flat = dict(flat[key])
            break
        prefixed = {k[len(key) + 1 :]: v for k, v in flat.items() if k.startswith(key + ".")}
        if prefixed and any(k.startswith(("backbone.", "patch_embed.", "layers.")) for k in prefixed):
            flat = prefixed
            break
    for prefix in ("module.", "_orig_mod."):
        if flat and all(k.startswith(prefix) for k in flat):
            flat = {k[len(prefix) :]: v for k, v in flat.items()}
    return flat


def detect_layout(state: Mapping[str, Any]) -> str:
    """'ours', 'official', 'swin' (Microsoft / naver-ai ImageNet Swin), 'timm' or 'unknown'."""
    keys = set(state)
    if any(k.startswith("backbone.") for k in keys):
        official = ("relative_position_index", ".downsample.expansion.", "transformer.level_embed")
        return "official" if any(m in k for k in keys for m in official) else "ours"
    if "patch_embed.proj.weight" in keys:
        return "swin" if "layers.0.downsample.reduction.weight" in keys else "timm"
    return "unknown"


def _official_key(key: str, config: ViDTConfig) -> str | None:
    """Our name for an official detector key (None: not part of our model)."""
    last_fusion = config.num_levels - 1
    drop = (
        any(b in key for b in _BUFFERS)
        or re.match(r"backbone\.layers\.\d+\.downsample\.(expansion|norm2)\.", key)
        or re.match(r"backbone\.norm\d+\.", key)
        or key == "transformer.level_embed"
        or key.startswith("transformer.decoder.bbox_embed.")
        or key.startswith("transformer.decoder.class_embed.")
        or key.startswith((f"fusion.multi_scaler.refinenet_{last_fusion}.smoothing.",
                           f"fusion.multi_scaler.refinenet_{last_fusion}.resConfUnit1."))
    )
    if drop:
        return None
    shared = ["vector_embed"] + ([] if config.box_refine else ["class_embed", "bbox_embed", "iou_embed"])
    for name in shared:
        m = re.match(rf"{name}\.(\d+)\.(.*)", key)
        if m:
            # every index holds the same module; keep index 0
            return f"{name}.{m.group(2)}" if m.group(1) == "0" else None
    return key


def _swin_key(key: str, layout: str) -> str | None:
    """Our backbone name for an ImageNet Swin key (Microsoft or timm layout); None: unused by ViDT."""
    if any(b in key for b in _BUFFERS) or key.startswith(("head.", "norm.")):
        return None
    if layout == "timm":
        m = re.match(r"layers\.(\d+)\.downsample\.(.*)", key)
        if m:  # timm merges at the start of stage i, the official at the end of stage i - 1
            return f"backbone.layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
    return "backbone." + key



def convert_state_dict(state: Mapping[str, Any], config: ViDTConfig,
                       base: Mapping[str, Tensor] | nn.Module | None = None) -> dict[str, Tensor]:
    """Our-layout state dict for `ViDT(config)` from any layout in the module docstring.

    `base` fills what an ImageNet Swin checkpoint lacks (default: a new `ViDT(config)`'s own
    initial weights). Raises ValueError naming missing, unexpected and mis-shaped keys."""
    flat = _unwrap(state)
    layout = detect_layout(flat)
    shapes = expected_shapes(config)
    if layout in ("official", "ours"):  # the official map leaves our own names unchanged
        mapped = {}
        for k, v in flat.items():
            ours = _official_key(k, config)
            if ours is not None:
                mapped[ours] = v
    elif layout in ("swin", "timm"):
        mapped = {}
        for k, v in flat.items():
            ours = _swin_key(k, layout)
            if ours is not None:
                mapped[ours] = v
    else:
        mapped = dict(flat)
    unexpected = sorted(k for k in mapped if k not in shapes)
    missing = sorted(k for k in shapes if k not in mapped)
    if layout in ("swin", "timm") and not unexpected:
        # a backbone-only checkpoint: the rest starts from `base`
        if base is None:
            base = ViDT(config)
        fill = base.state_dict() if isinstance(base, nn.Module) else base
        for k in missing:
            mapped[k] = fill[k]
        missing = sorted(k for k in shapes if k not in mapped)
    not_tensors = sorted(k for k, v in mapped.items() if not isinstance(v, Tensor))
    misshaped = [f"{k}: got {tuple(mapped[k].shape)}, expected {tuple(s)}" for k, s in shapes.items()
                 if k in mapped and isinstance(mapped[k], Tensor) and mapped[k].shape != s]
    if missing or unexpected or misshaped or not_tensors:
        parts = [f"cannot load a {layout!r}-layout checkpoint into ViDT(embed_dim={config.embed_dim}, depths={tuple(config.depths)}, "
                 f"det_tokens={config.det_tokens}, num_classes={config.num_classes}, plus={config.plus})"]
        for label, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped),
                             ("not tensors", not_tensors)):
            if names:
                parts.append(f"{label} ({len(names)}): {preview_names(names)}")
        raise ValueError("; ".join(parts))
    return {k: mapped[k] for k in shapes}


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's tensors without unpickling code (`zoo.weights.read_state`: safetensors, or
    `torch.load(weights_only=True)` with official training checkpoints' `args` allowed), nested
    keys flattened ("model.backbone...": `convert_state_dict` unwraps them)."""
    return read_state(Path(path))[0]


def load_official(path: str | Path, config: ViDTConfig, base: Mapping[str, Tensor] | nn.Module | None = None) -> dict[str, Tensor]:
    """Read an official ViDT / ViDT+ checkpoint (or an ImageNet Swin one) and convert it for `ViDT(config)`."""
    return convert_state_dict(read_checkpoint(path), config, base=base)
