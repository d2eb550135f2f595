"""Load official SeaBird KITTI-360 checkpoints (abhi1kumar/SeaBird `PanopticBEV`, `model_19.pth`).

The official `save_snapshot` writes {"config": str, "state_dict": {"body", "transformer", "sem_head",
"det_head", "optimizer"}, "training_meta"}; `zoo.weights` flattens it to `state_dict.body....` keys.
Our modules keep the official names, so the map is:
- `state_dict.` (and a DDP `module.`) stripped; `optimizer.*` dropped;
- `body.backbone_net.model.*` (zylo117's copy of lukemelas' EfficientNet, flat `_blocks.N`) ->
  `body.backbone.*` (timm's `tf_efficientnet_b3`, `blocks.stage.index`): the same layers in the same
  order, renamed by `backbone_key_map` (checked against the official module's own state dict);
- everything else one to one; BatchNorm `num_batches_tracked` counters that inplace_abn's ABN
  does not keep are filled with 0.
Shapes are checked key by key; missing and unexpected keys are named.

What does not map: nothing of the KITTI-360 network's parameters. The computation differs where
model.py says (level camera instead of the 5 degree pitch in the official IPM homography, IPM by
grid_sample, BEV cell centres), so official weights run on a slightly different flat-branch
geometry. The nuScenes pipeline (HoP-BEVDet + SeaBird MapHead, mmdet3d layout) is not ported.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zoo.weights import WeightsError, preview_names

from .model import SeaBird, SeaBirdConfig

_IR = {"conv_pw": "_expand_conv.conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv.conv", "bn2": "_bn1",
       "se.conv_reduce": "_se_reduce.conv", "se.conv_expand": "_se_expand.conv", "conv_pwl": "_project_conv.conv", "bn3": "_bn2"}
_DS = {"conv_dw": "_depthwise_conv.conv", "bn1": "_bn1", "se.conv_reduce": "_se_reduce.conv", "se.conv_expand": "_se_expand.conv",
       "conv_pw": "_project_conv.conv", "bn2": "_bn2"}


def backbone_key_map(our_keys: list[str]) -> dict[str, str]:
    """timm EfficientNet keys (without `body.backbone.`) -> zylo117/lukemelas keys (without `body.backbone_net.model.`)."""
    blocks = sorted({tuple(int(p) for p in k.split(".")[1:3]) for k in our_keys if k.startswith("blocks.")})
    flat = {b: i for i, b in enumerate(blocks)}
    out = {}
    for key in our_keys:
        if key.startswith("conv_stem."):
            out[key] = "_conv_stem.conv." + key.split(".", 1)[1]
        elif key.startswith("bn1."):
            out[key] = "_bn0." + key.split(".", 1)[1]
        elif key.startswith("blocks."):
            _, s, i, rest = key.split(".", 3)
            table = _DS if "conv_pwl" not in " ".join(k for k in our_keys if k.startswith(f"blocks.{s}.{i}.")) else _IR
            for ours, theirs in table.items():
                if rest.startswith(ours + "."):
                    out[key] = f"_blocks.{flat[(int(s), int(i))]}.{theirs}.{rest[len(ours) + 1:]}"
                    break
            else:
                raise KeyError(f"no official name for backbone key {key}")
        else:
            raise KeyError(f"no official name for backbone key {key}")
    return out


@functools.lru_cache(maxsize=4)
def _meta_shapes(config_repr: str, config: Any) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in SeaBird(config.config).state_dict().items()}


def meta_shapes(config: SeaBirdConfig) -> dict[str, torch.Size]:
    """Our state dict's shapes (built once per config on the meta device)."""
    return _meta_shapes(repr(config), _Frozen(config))


class _Frozen:
    """Hashable by the config's repr, so lru_cache can key on it."""

    def __init__(self, config: Any):
        self.config = config

    def __hash__(self) -> int:
        return hash(repr(self.config))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Frozen) and repr(self.config) == repr(other.config)


def official_names(config: SeaBirdConfig) -> dict[str, str]:
    """Our state-dict key -> the official (flattened snapshot, without `state_dict.`) key."""
    ours = list(meta_shapes(config))
    bb = [k[len("body.backbone."):] for k in ours if k.startswith("body.backbone.")]
    bmap = backbone_key_map(bb)
    return {k: ("body.backbone_net.model." + bmap[k[len("body.backbone."):]]) if k.startswith("body.backbone.") else k for k in ours}


def convert_state_dict(state: dict[str, Tensor], config: Any) -> dict[str, Tensor]:
    """An official snapshot (flat keys, `state_dict.` prefixed or not) -> our state dict."""
    stripped: dict[str, Tensor] = {}
    for key, value in state.items():
        for prefix in ("state_dict.", "module."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith(("optimizer.", "training_meta.")):
            continue
        stripped[key] = value
    names = official_names(config)
    shapes = meta_shapes(config)
    out: dict[str, Tensor] = {}
    missing = []
    for ours, theirs in names.items():
        if theirs in stripped:
            out[ours] = stripped.pop(theirs)
        elif ours.endswith("num_batches_tracked"):
            out[ours] = torch.tensor(0, dtype=torch.long)
        else:
            missing.append(theirs)
    unexpected = [k for k in stripped if not k.endswith("num_batches_tracked")]
    bad = [(k, tuple(v.shape), tuple(shapes[k])) for k, v in out.items() if tuple(v.shape) != tuple(shapes[k])]
    if missing or unexpected or bad:
        raise WeightsError("not an official SeaBird KITTI-360 checkpoint for this variant: "
                           f"missing {len(missing)} ({preview_names(missing)}); unexpected {len(unexpected)} ({preview_names(unexpected)}); "
                           f"mis-shaped {len(bad)} ({bad[:3]})")
    return out


def to_official(state: dict[str, Tensor], config: SeaBirdConfig) -> dict[str, Any]:
    """Our state dict -> the official snapshot structure (for round-trip tests and exporting back)."""
    names = official_names(config)
    nested: dict[str, dict[str, Tensor]] = {}
    for ours, theirs in names.items():
        part, _, rest = theirs.partition(".")
        nested.setdefault(part, {})[rest] = state[ours]
    return {"config": "", "state_dict": nested, "training_meta": {"epoch": 19}}


def load_official(pipeline: Any, path: str | Path) -> None:
    """Load an official checkpoint file into a SeaBird pipeline."""
    from zoo.weights import load_into, load_torch_file

    load_into(pipeline.model, convert_state_dict(load_torch_file(path), pipeline.config))
