"""Load official DocDiff checkpoints (Royalvice/DocDiff) into our modules.

The reference saves the two U-Nets separately (`src/trainer.py`):
`torch.save(network.init_predictor.state_dict(), "model_init_N.pth")` and
`torch.save(network.denoiser.state_dict(), "model_denoiser_N.pth")` (the released
`checksave/init.pth` and `checksave/denoiser.pth`). Our `DocDiff` keeps their module names
(`image_proj`, `time_emb.lin1`, `down.i.res.conv1`, `down.i.conv`, `middle.res1`, `middle.dia1`,
`up.i.res.shortcut`, `final`, ...) under `init_predictor.` and `denoiser.`, so the map is a prefix.

Accepted by `convert_state_dict` (what `create_model(..., weights=PATH)` calls):
- one file holding both, `{"init_predictor": sd, "denoiser": sd}` (flattened with those prefixes),
  or the whole `DocDiff` network's state dict, optionally under `module.` (DataParallel);
- our own layout (the same keys).
For the two official files use `load_official(pipeline_or_model, init_path, denoiser_path)`, or
`merge_official` once and save the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zoo.weights import meta_shapes, preview_names

from .model import DocDiff, DocDiffConfig

PARTS = ("init_predictor", "denoiser")


def expected_shapes(config: DocDiffConfig) -> dict[str, torch.Size]:
    """Our state dict's names and shapes, built on the meta device."""
    return meta_shapes(lambda: DocDiff(config))


def _strip(state: Mapping[str, Any]) -> dict[str, Any]:
    flat = dict(state)
    if "state_dict" in flat and isinstance(flat["state_dict"], Mapping):
        flat = dict(flat["state_dict"])
    for prefix in ("module.", "_orig_mod.", "network."):
        if flat and all(k.startswith(prefix) for k in flat):
            flat = {k[len(prefix):]: v for k, v in flat.items()}
    return flat


def merge_official(init_state: Mapping[str, Tensor], denoiser_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The reference's two state dicts -> one dict with our prefixes."""
    out = {f"init_predictor.{k}": v for k, v in _strip(init_state).items()}
    out.update({f"denoiser.{k}": v for k, v in _strip(denoiser_state).items()})
    return out


def convert_state_dict(state: Mapping[str, Any], config: DocDiffConfig) -> dict[str, Tensor]:
    """Map a (merged) official or our own checkpoint onto `DocDiff(config).state_dict()` names.
    Raises ValueError naming missing, unexpected and mis-shaped keys."""
    flat = _strip(state)
    if flat and not any(k.startswith(tuple(f"{p}." for p in PARTS)) for k in flat):
        part = "denoiser" if any(k.startswith("time_emb.") for k in flat) else "init_predictor"
        raise ValueError(
            f"this checkpoint holds one U-Net only (it looks like the reference's {part} state dict); "
            "DocDiff needs both: use zoo.models.docdiff.convert.load_official(model, init_path, denoiser_path) "
            "or merge_official(init_sd, denoiser_sd) and save that"
        )
    shapes = expected_shapes(config)
    not_tensors = sorted(k for k, v in flat.items() if not isinstance(v, Tensor))
    missing = sorted(set(shapes) - set(flat))
    unexpected = sorted(set(flat) - set(shapes))
    misshaped = [f"{k}: got {tuple(flat[k].shape)}, expected {tuple(s)}" for k, s in shapes.items()
                 if k in flat and isinstance(flat[k], Tensor) and flat[k].shape != s]
    if missing or unexpected or misshaped or not_tensors:
        parts = [f"cannot load DocDiff checkpoint into base_channels={config.base_channels}, "
                 f"channel_mults={tuple(config.channel_mults)}"]
        for label, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped),
                             ("not tensors", not_tensors)):
            if names:
                parts.append(f"{label} ({len(names)}): {preview_names(names)}")
        raise ValueError("; ".join(parts))
    return {k: flat[k] for k in shapes}


def _read(path: str | Path) -> dict[str, Tensor]:
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a state dict")
    return dict(obj)


def load_official(target: Any, init_path: str | Path, denoiser_path: str | Path) -> None:
    """Load the reference's `init.pth` (CP) and `denoiser.pth` (HRR) into a DocDiff model or a
    pipeline (its `.model`), with the same checks as `convert_state_dict`."""
    model = target.model if hasattr(target, "graph_specs") else target
    merged = merge_official(_read(init_path), _read(denoiser_path))
    model.load_state_dict(convert_state_dict(merged, model.config), strict=True)
