"""Loading InterLCM's parts from the layouts they ship in, into `InterLCMModel` keys
(`unet.*`, `vae.*`, `clip.*`, `visual_encoder.*`, `controlnet.*`, `latent_scale`):

- the LCM: a diffusers pipeline folder (LCM_Dreamshaper_v7's `save_pretrained` layout: `unet/`, `vae/`,
  `text_encoder/` (unused: the Visual Module replaces the text), `scheduler/`, ...). `zoo.weights.read_state`
  merges its components under `unet.` / `vae.` / `controlnet.` / `image_encoder.`; `latent_scale` comes from
  `vae/config.json`'s scaling_factor (0.18215 for SD's VAE);
- CLIP ViT-B/16: a transformers folder (`CLIPVisionModel` or a whole `CLIPModel`; keys with or without the
  `vision_model.` prefix; the text tower, projections and `position_ids` are dropped), or an `image_encoder/`
  component of the pipeline folder;
- the official InterLCM checkpoints (sen-mao/InterLCM `weights/InterLCM/Step{2,4}/visual_encoder.pth` and
  `spatial_encoder.pth`): BasicSR files `{"params": ..., "params_ema": ...}`; `params_ema` is taken (the
  official inference loads it). The visual encoder keeps the official names (`blocks.N...`), the spatial
  encoder is a diffusers `ControlNetModel` state dict (`from_unet` of SD1.5's UNet: no `cond_proj`).

`load_official(pipeline, lcm=, clip=, visual_encoder=, spatial_encoder=)` merges whichever are given onto the
pipeline's current weights; `convert_state_dict` (the card's converter, used by `create_model(weights=PATH)`)
takes one merged state: a pipeline folder that holds all of them, or our own layout. A part missing from a
pipeline folder is named in the error; without `controlnet/`, the Spatial Encoder starts as ControlNet does,
a copy of the UNet with zero convolutions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zoo.weights import WeightsError, load_into, meta_shapes, preview_names, read_state

PARAM_KEYS = ("params_ema", "params")
CLIP_DROPPED = ("text_model.", "visual_projection.", "text_projection.", "logit_scale")


def clip_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A transformers CLIP(Vision)Model state -> CLIPVisionModel keys (transformers 5: no `vision_model.`)."""
    out = {}
    for key, value in state.items():
        if key.startswith(CLIP_DROPPED) or key.endswith("position_ids"):
            continue
        out[key[len("vision_model."):] if key.startswith("vision_model.") else key] = value
    return out


def basicsr_params(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The `params_ema` (else `params`) entry of a flattened BasicSR checkpoint, or the state as it is."""
    for head in PARAM_KEYS:
        sub = {k[len(head) + 1:]: v for k, v in state.items() if k.startswith(head + ".")}
        if sub:
            return sub
    return state


def _controlnet_from_unet(unet: dict[str, Tensor], config: Any) -> dict[str, Tensor]:
    """ControlNet's start (model.spatial_encoder_from_unet) from a UNet state, without building a UNet of it."""
    from .model import InterLCMModel

    with torch.device("meta"):
        shapes = InterLCMModel(config).controlnet.state_dict()
    from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

    first = int((config.unet.get("block_out_channels") or (320, 640, 1280, 1280))[0])
    out = {f"controlnet_cond_embedding.{k}": v for k, v in
           ControlNetConditioningEmbedding(first, block_out_channels=tuple(config.hint_channels)).state_dict().items()}
    for key, value in shapes.items():
        if key.startswith(("controlnet_down_blocks.", "controlnet_mid_block.")):
            out[key] = torch.zeros(value.shape)
        elif key.startswith(("conv_in.", "time_embedding.", "down_blocks.", "mid_block.")) and key in unet:
            out[key] = unet[key].clone()
    return out


def _check(part: str, state: dict[str, Tensor], expected: dict[str, torch.Size]) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shaped = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k])}" for k in expected if k in state and state[k].shape != expected[k]]
    if missing or unexpected or shaped:
        parts = [f"{len(missing)} missing: {preview_names(missing, 5)}" if missing else "",
                 f"{len(unexpected)} unexpected: {preview_names(unexpected, 5)}" if unexpected else "",
                 f"{len(shaped)} mis-shaped: {preview_names(shaped, 5)}" if shaped else ""]
        raise WeightsError(f"InterLCM {part} does not match the variant: " + "; ".join(p for p in parts if p))


def _expected(config: Any) -> dict[str, dict[str, torch.Size]]:
    from .model import InterLCMModel

    shapes = meta_shapes(lambda: InterLCMModel(config))
    parts: dict[str, dict[str, torch.Size]] = {}
    for key, shape in shapes.items():
        head, _, rest = key.partition(".")
        parts.setdefault(head, {})[rest] = shape
    return parts


def convert_state_dict(state: dict[str, Any], config: Any) -> dict[str, Tensor]:
    """A merged state (module docstring) -> InterLCMModel keys, every part checked against the variant."""
    if "visual_encoder.blocks.0.weight" in state and "latent_scale" in state:
        return state  # our own layout
    expected = _expected(config)
    components = {head: {k[len(head) + 1:]: v for k, v in state.items() if k.startswith(head + ".")}
                  for head in ("unet", "vae", "controlnet", "image_encoder", "clip", "visual_encoder")}
    for need in ("unet", "vae"):
        if not components[need]:
            raise WeightsError(f"an LCM pipeline folder needs unet/ and vae/; found components: {sorted({k.split('.')[0] for k in state})}")
    clip = clip_state(components["image_encoder"] or components["clip"])
    if not clip:
        raise WeightsError("no CLIP vision weights: put the CLIP ViT-B/16 transformers folder as image_encoder/ in the "
                           "pipeline folder, or use zoo.models.interlcm.load_official(pipeline, lcm=..., clip=...)")
    visual = basicsr_params(components["visual_encoder"])
    if not visual:
        raise WeightsError("no visual encoder weights (visual_encoder.*): load the official visual_encoder.pth with load_official")
    controlnet = basicsr_params(components["controlnet"]) or _controlnet_from_unet(components["unet"], config)
    out: dict[str, Tensor] = {}
    for name, part in (("unet", components["unet"]), ("vae", components["vae"]), ("clip", clip), ("visual_encoder", visual),
                       ("controlnet", controlnet)):
        _check(name, part, expected[name])
        out.update({f"{name}.{k}": v for k, v in part.items()})
    out["latent_scale"] = torch.tensor(float(state.get("latent_scale", config.latent_scale)))
    return out


def _vae_scaling(folder: Path) -> float | None:
    for candidate in (folder / "vae" / "config.json", folder / "config.json"):
        if candidate.is_file():
            value = json.loads(candidate.read_text()).get("scaling_factor")
            return float(value) if value is not None else None
    return None


def load_official(pipeline: Any, lcm: str | Path | None = None, clip: str | Path | None = None,
                  visual_encoder: str | Path | None = None, spatial_encoder: str | Path | None = None) -> dict[str, int]:
    """Load any of: an LCM diffusers pipeline folder (unet/ + vae/), a CLIP ViT-B/16 transformers folder, the
    official visual_encoder.pth and spatial_encoder.pth, onto the pipeline's current weights (strict per part).
    Returns the number of tensors loaded per part."""
    model = pipeline.model
    expected = _expected(pipeline.config)
    current = model.state_dict()
    loaded: dict[str, int] = {}

    def put(part: str, tensors: dict[str, Tensor]) -> None:
        _check(part, tensors, expected[part])
        current.update({f"{part}.{k}": v.to(current[f"{part}.{k}"].dtype) for k, v in tensors.items()})
        loaded[part] = len(tensors)

    if lcm is not None:
        state, _ = read_state(Path(lcm))
        for part in ("unet", "vae"):
            tensors = {k[len(part) + 1:]: v for k, v in state.items() if k.startswith(part + ".")}
            if not tensors:
                raise WeightsError(f"{lcm}: no {part}/ component (an LCM diffusers pipeline folder)")
            put(part, tensors)
        scaling = _vae_scaling(Path(lcm))
        if scaling is not None:
            current["latent_scale"] = torch.tensor(scaling)
        if spatial_encoder is None:  # a new LCM: the Spatial Encoder restarts as its copy
            put("controlnet", _controlnet_from_unet({k[5:]: v for k, v in state.items() if k.startswith("unet.")}, pipeline.config))
    if clip is not None:
        state, _ = read_state(Path(clip))
        put("clip", clip_state(state))
    if visual_encoder is not None:
        state, _ = read_state(Path(visual_encoder))
        put("visual_encoder", basicsr_params(state))
    if spatial_encoder is not None:
        state, _ = read_state(Path(spatial_encoder))
        put("controlnet", basicsr_params(state))
    load_into(model, current)
    return loaded
