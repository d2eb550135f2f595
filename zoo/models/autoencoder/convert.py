"""Load foreign VAE weights into the autoencoder card's model (`LatentCodec`: `vae.*` + `scaling`, `shift`).

`create_model("autoencoder-kl", VARIANT, weights=PATH)` reads PATH with `zoo.weights.read_state`
and calls `convert_state_dict(state, config)` for anything that is not our own file:
- a diffusers `AutoencoderKL` folder (its `diffusion_pytorch_model.safetensors`: names
  `encoder.down_blocks.0.resnets.0...`), e.g. a Stable Diffusion VAE folder with `--variant sd-f8`;
- an original LDM / Stable Diffusion checkpoint (`encoder.down.0.block.0...`, also a whole SD
  `.ckpt` whose VAE sits under `first_stage_model.`), mapped by diffusers' `convert_ldm_vae_checkpoint`.
The latent statistics are not in those weight files: they come from the variant's config
(`scaling_factor` x sigma_data). To keep a folder's own `latents_mean` / `latents_std` (our saved
folders carry them), open it with `zoo.diffusion.autoencoder.load_autoencoder(PATH)`, which also
reads SD pipeline folders (`vae/`). Mismatched architectures fail naming the missing, unexpected
and mis-shaped keys.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from zoo.diffusion.autoencoder import AutoencoderConfig, convert_vae_state_dict


def convert_state_dict(state: dict[str, Any], config: AutoencoderConfig) -> dict[str, Tensor]:
    """A diffusers or LDM VAE state dict -> our codec's state dict (statistics from `config`)."""
    return convert_vae_state_dict(state, config)
