"""Loading official checkpoints into HF-Diff's modules.

Layouts (all plain state dicts, saved with `torch.save(model.state_dict())`, possibly under
`module.` (DDP), `_orig_mod.` (torch.compile) or a `state_dict` / `model` entry):
- ResShift (`resshift_realsrx4_s15_v1.pth`), SinSR (`SinSR_v1.pth`) and HF-Diff (`HF-Diff.pth`) U-Nets:
  `UNetModelSwin` keys. Ours keep the official module names, so the map is the identity except the
  Swin buffers the official model saves (`relative_position_index`, `attn_mask`), which we compute and
  drop after checking them against ours. (The current ResShift release's U-Net with `lq_size` adds a
  `feature_extractor` that is empty for x4 SR; nothing to map.)
- ResShift's VQGAN f4 (`autoencoder_vq_f4.pth`, LDM `VQModelTorch`): LDM names (`encoder.down.0.block.0`,
  `encoder.mid.attn_1`, ...) mapped to diffusers' `VQModel` by diffusers' own `convert_ldm_vae_checkpoint`;
  `quantize.embedding.weight`, `quant_conv`, `post_quant_conv` keep their names.
- DINOv2 in transformers layout (`Dinov2Model.save_pretrained` folder): `load_dino_folder`.

`merge_official(student=, teacher=, autoencoder=)` builds one state dict in our layout (parts not given
keep the values of `base`, e.g. a fresh model) and `load_official(pipeline, ...)` loads it;
`convert_state_dict` (the card's converter, what `create_model(weights=PATH)` calls on a foreign file)
accepts such a merged dict with `unet.` / `teacher.` / `autoencoder.` prefixes, or our own layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from zoo.weights import WeightsError, preview_names

from .model import HFDiffConfig, HFDiffModel

SWIN_BUFFERS = ("relative_position_index", "attn_mask")
WRAPPERS = ("module.", "_orig_mod.", "model.", "state_dict.")


def _unwrap(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out = dict(state)
    changed = True
    while changed and out:
        changed = False
        for prefix in WRAPPERS:
            if all(k.startswith(prefix) for k in out):
                out = {k[len(prefix):]: v for k, v in out.items()}
                changed = True
    return out


def convert_unet(state: Mapping[str, Tensor], own: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An official `UNetModelSwin` state dict -> our `SwinUNet`'s (`own`: our state dict, for names
    and shapes). Official Swin buffers are checked against ours where we hold them, then dropped."""
    state = _unwrap(state)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf in SWIN_BUFFERS or key.startswith("feature_extractor."):
            continue
        out[key] = value
    missing = sorted(k for k in own if k not in out)
    unexpected = sorted(k for k in out if k not in own)
    shapes = [f"{k} {tuple(out[k].shape)} != {tuple(own[k].shape)}" for k in own if k in out and out[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise WeightsError("not a UNetModelSwin checkpoint for this configuration: "
                           f"missing {preview_names(missing)}; unexpected {preview_names(unexpected)}; shapes {preview_names(shapes)}")
    return out


def convert_vq(state: Mapping[str, Tensor], vq: Any) -> dict[str, Tensor]:
    """ResShift's LDM VQGAN f4 (or a diffusers VQModel) state dict -> diffusers `VQModel` names."""
    state = _unwrap(state)
    if any(k.startswith(("encoder.down.", "decoder.up.", "encoder.mid.", "decoder.mid.")) for k in state):
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        converted = convert_ldm_vae_checkpoint(state, dict(vq.config))
        for key in ("quantize.embedding.weight",):
            if key in state:
                converted[key] = state[key]
        state = converted
    own = vq.state_dict()
    # LDM keeps attention projections as 1x1 convs; diffusers as linears
    state = {k: (v[:, :, 0, 0] if k in own and v.dim() == 4 and own[k].dim() == 2 else v) for k, v in state.items()}
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    if missing or unexpected:
        raise WeightsError(f"not a VQGAN f4 checkpoint: missing {preview_names(missing)}; unexpected {preview_names(unexpected)}")
    return state


def merge_official(config: HFDiffConfig, student: Mapping[str, Tensor] | None = None, teacher: Mapping[str, Tensor] | None = None,
                   autoencoder: Mapping[str, Tensor] | None = None, base: HFDiffModel | None = None) -> dict[str, Tensor]:
    """Our model's state dict with the given official parts converted in (the rest from `base`, or a
    fresh model: the INN at its identity-coupling initialisation) and their `ready` flags set."""
    model = base if base is not None else HFDiffModel(config)
    out = {k: v.clone() for k, v in model.state_dict().items()}
    ready = out["ready"].clone()
    unet_own = model.unet.state_dict()
    for part, given in (("unet", student), ("teacher", teacher)):
        if given is not None:
            out.update({f"{part}.{k}": v for k, v in convert_unet(given, unet_own).items()})
            ready[HFDiffModel.READY.index("student" if part == "unet" else "teacher")] = True
    if autoencoder is not None:
        if config.autoencoder_kind != "vq":
            from zoo.diffusion.autoencoder import convert_vae_state_dict

            codec = convert_vae_state_dict(dict(autoencoder), config.autoencoder, model.codec)  # type: ignore[arg-type]
            out.update({f"codec.{k}": v for k, v in codec.items()})
        else:
            out.update({f"codec.vq.{k}": v for k, v in convert_vq(autoencoder, model.codec.vq).items()})
        ready[0] = True
    out["ready"] = ready
    return out


def convert_state_dict(state: dict[str, Tensor], config: HFDiffConfig) -> dict[str, Tensor]:
    """The card's converter: ours as is; a merged official bundle (`unet.` = the one-step SinSR / HF-Diff
    U-Net, `teacher.` = ResShift's, `autoencoder.` = the VQGAN f4); a bare U-Net is refused with advice."""
    state = _unwrap(state)
    if "ready" in state:
        return state
    parts: dict[str, dict[str, Tensor]] = {}
    for prefix in ("unet.", "teacher.", "autoencoder."):
        parts[prefix[:-1]] = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not any(parts.values()):
        if any(k.startswith("input_blocks.") for k in state):
            raise WeightsError("this is one U-Net (ResShift / SinSR / HF-Diff); HF-Diff needs its codec too: "
                               "zoo.models.hfdiff.convert.load_official(pipeline, student=..., teacher=..., autoencoder=...)")
        raise WeightsError(f"not an HF-Diff checkpoint: keys {preview_names(sorted(state))}")
    return merge_official(config, parts["unet"] or None, parts["teacher"] or None, parts["autoencoder"] or None)


def _read(path: str | Path) -> dict[str, Tensor]:
    from zoo.weights import read_state

    return read_state(Path(path))[0]


def load_official(pipeline: Any, student: str | Path | None = None, teacher: str | Path | None = None,
                  autoencoder: str | Path | None = None) -> Any:
    """Load official files (any subset) into `pipeline.model` (or a bare HFDiffModel); returns it."""
    model = getattr(pipeline, "model", pipeline)
    state = merge_official(model.config, _read(student) if student else None, _read(teacher) if teacher else None,
                           _read(autoencoder) if autoencoder else None, base=model)
    model.load_state_dict(state)
    return pipeline


def load_autoencoder_into(model: HFDiffModel, path: str | Path) -> None:
    """The codec from a file: an official VQGAN f4 / LDM / diffusers / our autoencoder-kl weights."""
    state = merge_official(model.config, autoencoder=_strip_codec(_read(path)), base=model)
    model.load_state_dict(state)


def _strip_codec(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our autoencoder-kl files hold `vae.*` + statistics; an HF-Diff file holds `codec.*`."""
    if any(k.startswith("codec.") for k in state):
        return {k[len("codec."):]: v for k, v in state.items() if k.startswith("codec.")}
    return state


def load_dino_folder(path: str | Path) -> nn.Module:
    """transformers `Dinov2Model` from a local `save_pretrained` folder (config.json + weights); no hub."""
    from transformers import Dinov2Model

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json (a transformers Dinov2Model folder is needed)")
    return Dinov2Model.from_pretrained(str(folder), local_files_only=True).eval()


__all__ = ["convert_state_dict", "convert_unet", "convert_vq", "load_autoencoder_into", "load_dino_folder", "load_official",
           "merge_official"]
