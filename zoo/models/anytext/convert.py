"""Weights in other layouts -> our AnyTextModel keys (`unet.*`, `controlnet.*`, `codec.*`, `text_encoder.*`,
`auxiliary.*`, `embedding.*`). Three layouts, told apart by their keys:

1. The official checkpoint (tyxsspa/AnyText `anytext_v1.1.ckpt`, a ControlLDM state dict, possibly under
   `state_dict`): `model.diffusion_model.*` (the locked UNet, LDM layout), `control_model.*` (cldm.py's
   ControlNet: LDM layout plus `glyph_block`, `position_block`, `fuse_block`), `first_stage_model.*` (VAE),
   `cond_stage_model.transformer.text_model.*` (CLIP), `embedding_manager.proj.*`. The LDM -> diffusers
   renaming of UNet, ControlNet and VAE is diffusers' own (`diffusers.loaders.single_file_utils`); the
   AnyText parts are mapped here.
2. diffusers' research project (examples/research_projects/anytext), a pipeline folder: `unet/`, `vae/`,
   `text_encoder/`, `controlnet/` (AnyTextControlNetModel: a ControlNetModel whose
   `controlnet_cond_embedding` holds glyph_block / position_block / fuse_block) and
   `text_embedding_module/` (the embedding manager's `proj.*`; optional).
3. An SD1.5 diffusers pipeline folder (`unet/`, `vae/`, `text_encoder/`): AnyText's starting point. The
   ControlNet starts as a copy of the UNet's encoder (ControlNet's initialisation), its zero convs, the
   fuse conv and the embedding projection at zero, the glyph / position convs freshly initialised.

Tests build all three layouts tiny (tests/models/test_anytext_convert.py). `zoo.weights.read_state` merges a pipeline folder's components into `unet.*`, `vae.*`, `controlnet.*`,
`text_encoder.*`, `text_embedding_module.*` keys. Missing components are named in the error.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

SHARED_WITH_UNET = ("conv_in.", "time_embedding.", "down_blocks.", "mid_block.")
OFFICIAL_PREFIXES = ("model.diffusion_model.", "control_model.", "first_stage_model.", "cond_stage_model.")


def _strip(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _fresh(config: Any) -> dict[str, Tensor]:
    """Our own freshly initialised state for the config (for the parts a layout does not hold)."""
    from .model import AnyTextModel

    torch.manual_seed(0)
    return AnyTextModel(config).state_dict()


def _text_encoder(state: dict[str, Any]) -> dict[str, Any]:
    out = {k.removeprefix("text_model."): v for k, v in state.items()}
    out.pop("embeddings.position_ids", None)  # a buffer older transformers versions saved
    return out


def _codec_buffers(config: Any) -> dict[str, Tensor]:
    from zoo.diffusion.autoencoder import preset_config

    vae = preset_config(config.autoencoder_variant)
    return {"codec.scaling": torch.full((vae.latent_channels,), float(vae.scaling_factor)),
            "codec.shift": torch.zeros(vae.latent_channels)}


def _assemble(config: Any, unet: dict[str, Any], vae: dict[str, Any], text: dict[str, Any], controlnet: dict[str, Any] | None,
              auxiliary: dict[str, Any] | None, embedding: dict[str, Any] | None) -> dict[str, Tensor]:
    fresh = _fresh(config)
    out: dict[str, Tensor] = {f"unet.{k}": v for k, v in unet.items()}
    out.update({f"codec.vae.{k}": v for k, v in vae.items()})
    out.update({f"text_encoder.{k}": v for k, v in text.items()})
    out.update(_codec_buffers(config))
    if controlnet is None:  # ControlNet's initialisation: the UNet's encoder copied, zero convs at zero
        controlnet = {k: v.clone() for k, v in unet.items() if k.startswith(SHARED_WITH_UNET)}
        controlnet.update({k[len("controlnet."):]: torch.zeros_like(v) for k, v in fresh.items()
                           if k.startswith(("controlnet.controlnet_down_blocks.", "controlnet.controlnet_mid_block."))})
    out.update({f"controlnet.{k}": v for k, v in controlnet.items() if not k.startswith("controlnet_cond_embedding.")})
    parts = {"auxiliary": auxiliary, "embedding": embedding}
    for name, given in parts.items():
        if given:
            out.update({f"{name}.{k}": v for k, v in given.items()})
        else:
            out.update({k: v for k, v in fresh.items() if k.startswith(name + ".")})
    return out


def _official(state: dict[str, Any], config: Any) -> dict[str, Tensor]:
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint, convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    from .model import AnyTextModel

    with torch.device("meta"):
        shapes = AnyTextModel(config)
    unet_config = dict(shapes.unet.config)
    unet = convert_ldm_unet_checkpoint(state, unet_config)
    controlnet = convert_controlnet_checkpoint(state, {**unet_config, **dict(shapes.controlnet.config)})
    vae = convert_ldm_vae_checkpoint(state, dict(shapes.codec.vae.config))
    text = _text_encoder(_strip(state, "cond_stage_model.transformer."))
    control = _strip(state, "control_model.")
    auxiliary = {k: v for k, v in control.items() if k.startswith(("glyph_block.", "position_block.", "fuse_block."))}
    embedding = _strip(state, "embedding_manager.")
    return _assemble(config, unet, vae, text, controlnet, auxiliary, embedding)


def convert_state_dict(state: dict[str, Any], config: Any) -> dict[str, Tensor]:
    """Any of the three layouts (module docstring) -> our keys."""
    state = {k.removeprefix("state_dict."): v for k, v in state.items()}
    if any(k.startswith(OFFICIAL_PREFIXES) for k in state):
        return _official(state, config)
    components = sorted({k.split(".")[0] for k in state})
    unet, vae, text = _strip(state, "unet."), _strip(state, "vae."), _strip(state, "text_encoder.")
    if not (unet and vae and text):
        raise ValueError("AnyText loads the official checkpoint (model.diffusion_model.*, control_model.*, ...) or a diffusers "
                         f"pipeline folder with unet/, vae/ and text_encoder/ (+ controlnet/); found components: {components}")
    controlnet = _strip(state, "controlnet.") or None
    auxiliary = _strip(controlnet, "controlnet_cond_embedding.") if controlnet else None
    embedding = {k.removeprefix("embedding_manager."): v for k, v in _strip(state, "text_embedding_module.").items()} or None
    return _assemble(config, unet, vae, _text_encoder(text), controlnet, auxiliary, embedding)
