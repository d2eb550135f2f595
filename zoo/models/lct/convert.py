"""Load the authors' sLCT checkpoints (quandao10/LCT) into our model (`denoiser.*` + `codec.*`).

The authors' networks keep EDM's and DiT's module names (`enc.32x32_conv`, `blocks.0.attn.qkv`,
...), which ours follow, so the key map is a prefix plus a few entries to drop:
- EDM's `resample_filter` buffers (our up/down sampling computes the same fixed filter);
- the fixed all-ones weights of Non-scaling LayerNorms (ours has no weight at all);
- DiT's sin-cos `pos_embed` (a buffer here, recomputed).
A training checkpoint nests the network under "ema" (preferred, what the authors evaluate) or
"model"; DDP's `module.` prefix is stripped. The checkpoint holds no autoencoder: the codec comes
from a VAE (an SD VAE folder for the paper's variants) through `load_official(pipeline, ckpt, vae)`,
or from a state dict that carries it under `vae.` / `first_stage_model.`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zoo.weights import WeightsError, preview_names, unnest

# Where a training checkpoint keeps the network, in order of preference.
NETWORK_KEYS = ("ema", "ema_model", "target_model", "model", "state_dict", "net")
VAE_PREFIXES = ("vae.", "first_stage_model.")
OURS = ("denoiser.", "codec.", "autoencoder_ready")


def _dropped(key: str, value: Tensor, expected: set[str]) -> bool:
    """Entries of the authors' networks that ours computes instead of storing."""
    if key in expected:
        return False
    if key.endswith("resample_filter") or key.split(".")[-1] == "pos_embed":
        return True
    # a Non-scaling LayerNorm's weight is fixed at 1: the authors keep it (frozen), ours has none
    return key.endswith(".weight") and value.dim() == 1 and bool((value == 1).all())


def network_state(state: dict[str, Any], expected: set[str]) -> dict[str, Tensor]:
    """The network's own keys from a flat checkpoint (nested dicts flattened with dots);
    `expected`: our network's keys (without the `denoiser.net.` prefix)."""
    state = unnest(state, NETWORK_KEYS)
    out = {}
    for key, value in state.items():
        if not isinstance(value, Tensor) or key.startswith(VAE_PREFIXES):
            continue
        for prefix in ("module.", "net.", "model."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if not _dropped(key, value, expected):
            out[key] = value
    return out


def convert_state_dict(state: dict[str, Any], config: Any, codec_state: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """An authors' checkpoint (flat) -> our state dict. The codec comes from `codec_state` (our
    LatentCodec keys), or from VAE keys in the checkpoint itself (diffusers or LDM names)."""
    if any(k.startswith(OURS) for k in state):
        return state
    from zoo.weights import meta_shapes

    from .model import build_network

    expected = set(meta_shapes(lambda: build_network(config.net)))
    ours: dict[str, Tensor] = {f"denoiser.net.{k}": v for k, v in network_state(state, expected).items()}
    if codec_state is None:
        vae = {}
        for prefix in VAE_PREFIXES:
            vae.update({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        if not vae:
            raise WeightsError("this sLCT checkpoint holds no autoencoder (keys under vae. or first_stage_model.); "
                               "load it with zoo.models.lct.load_official(pipeline, CHECKPOINT, vae=PATH) with the VAE "
                               "its latents came from (an SD VAE folder for the paper's variants). Keys seen: "
                               f"{preview_names(sorted(state))}")
        from zoo.diffusion.autoencoder import convert_vae_state_dict

        codec_state = convert_vae_state_dict(vae, config.autoencoder)
    ours.update({f"codec.{k}": v for k, v in codec_state.items()})
    ours["autoencoder_ready"] = torch.ones((), dtype=torch.bool)
    return ours


def load_official(pipeline: Any, checkpoint: str | Path, vae: str | Path) -> Any:
    """Load an authors' checkpoint and the VAE its latents came from into `pipeline` (in place).

    `vae`: anything `zoo.diffusion.autoencoder.load_autoencoder` reads (an SD VAE or pipeline folder,
    our autoencoder-kl file). Keep in mind that the authors standardise the SD latents with their
    dataset's statistics: set them with `pipeline.model.codec.set_statistics(mean, std)` (or `fit`)."""
    from zoo.diffusion.autoencoder import load_autoencoder
    from zoo.weights import load_into, read_state

    state, _ = read_state(Path(checkpoint))
    codec = load_autoencoder(vae, pipeline.config.autoencoder)
    load_into(pipeline.model, convert_state_dict(state, pipeline.config, codec.state_dict()))
    return pipeline
