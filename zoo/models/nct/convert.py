"""Weights for the diffusers base (`create_model(..., weights=FOLDER)`): a local diffusers pipeline folder (`unet/`, `vae/`, optionally
`controlnet/`; what `save_pretrained` writes for an SD-Turbo / DMD2-style one-step model), read by
`zoo.weights.read_state` into `unet.*`, `vae.*`, `controlnet.*` keys, mapped here onto ours:
`unet.*` (frozen generator), `codec.vae.*` (+ SD's latent scaling), `adapter.*` (the ControlNetModel).

Without a `controlnet/` folder the adapter starts as ControlNet starts (`ControlNetModel.from_unet`):
the UNet's conv_in, time embedding, down and middle blocks copied, the condition embedding freshly
initialised with its last conv at zero, and the zero convs at zero. A `text_encoder/` is not used (the
family runs the base with an empty prompt; its embedding buffer starts at zero) and is dropped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

SHARED_WITH_UNET = ("conv_in.", "time_embedding.", "down_blocks.", "mid_block.")


def _fresh_controlnet_parts(config: Any) -> dict[str, Tensor]:
    """ControlNet's own modules as it initialises them (condition embedding; zero convs at zero)."""
    from .model import DiffusersControlModel

    with torch.device("meta"):
        shapes = DiffusersControlModel(config).adapter.state_dict()
    from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

    unet = config.unet
    first = (unet.get("block_out_channels") or (320, 640, 1280, 1280))[0]
    embedding = ControlNetConditioningEmbedding(first, block_out_channels=tuple(config.hint_channels))
    out = {f"controlnet_cond_embedding.{k}": v for k, v in embedding.state_dict().items()}
    for key, value in shapes.items():
        if key.startswith(("controlnet_down_blocks.", "controlnet_mid_block.")):
            out[key] = torch.zeros(value.shape)
    return out


def convert_state_dict(state: dict[str, Any], config: Any) -> dict[str, Tensor]:
    """A diffusers pipeline folder's state (unet.*, vae.*, controlnet.*) -> our DiffusersControlModel keys."""
    if getattr(config, "base", None) != "diffusers":
        raise ValueError("NCT's lct-based variants load our own weights files only (train one with `zoo train`); "
                         "a diffusers folder goes with the sd15 variant")
    unet = {k[5:]: v for k, v in state.items() if k.startswith("unet.")}
    vae = {k[4:]: v for k, v in state.items() if k.startswith("vae.")}
    if not unet or not vae:
        raise ValueError(f"a diffusers one-step base needs unet/ and vae/ folders; found components: "
                         f"{sorted({k.split('.')[0] for k in state})}")
    out: dict[str, Tensor] = {f"unet.{k}": v for k, v in unet.items()}
    out.update({f"codec.vae.{k}": v for k, v in vae.items()})
    controlnet = {k[11:]: v for k, v in state.items() if k.startswith("controlnet.")}
    if not controlnet:
        controlnet = {k: v.clone() for k, v in unet.items() if k.startswith(SHARED_WITH_UNET)}
        controlnet.update(_fresh_controlnet_parts(config))
    out.update({f"adapter.{k}": v for k, v in controlnet.items()})
    from zoo.diffusion.autoencoder import preset_config

    vae_config = preset_config(config.autoencoder_variant)
    out["codec.scaling"] = torch.full((vae_config.latent_channels,), float(vae_config.scaling_factor))
    out["codec.shift"] = torch.zeros(vae_config.latent_channels)
    out["prompt_embeds"] = torch.zeros(1, 77, int(config.unet.get("cross_attention_dim", 1280)))
    return out
