"""Perceptual distance for training autoencoders: LPIPS-style feature differences in a frozen net.

LDM's autoencoders add LPIPS (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric", CVPR 2018) to their L1 loss. LPIPS needs ImageNet VGG/AlexNet weights and its
own learned linear layers, none of which can be downloaded here, so we keep its form (paper Eq. 1)
and change the network:

    d(x, y) = sum_l w_l * mean_{h,w} || n(F_l(x))_{hw} - n(F_l(y))_{hw} ||_2^2,

with n(.) the unit normalisation over channels at each position, and uniform w_l = 1 (LPIPS'
"baseline" without the learned per-channel weights). F_l are the feature maps of a frozen network:

- "shapes" (default): the small classifier `zoo.metrics.generation.load_feature_net()` trained on
  the procedural class images (shipped weights): its last feature map at each resolution (32, 16
  and 8 px for a 32-px input), the input kept at its size;
- "timm:<name>": a timm network (e.g. "timm:vgg16") with `features_only=True` and weights from a
  LOCAL file (`weights=PATH`), inputs normalised with the network's own mean/std;
- "random": a stand-in, a fixed random conv net (seeded), used when neither is available; a weak
  prior, but it still penalises blur and misplaced edges beyond what L1 does;
- any nn.Module (injected) whose forward returns a list of feature maps.

The network stays frozen and in eval mode whatever mode the training loop sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


def normalize_channels(features: Tensor, eps: float = 1e-10) -> Tensor:
    """Unit length over the channel axis at each position (LPIPS' n(.))."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class FeatureDistance(nn.Module):
    """d(pred, target) per image, shape (B,), images float (B, 3, H, W) in [0, 1].

    net: a module mapping images in [0, 1] to a list of feature maps (B, C_l, H_l, W_l).
    layer_weights: w_l (default 1 for every layer)."""

    def __init__(self, net: nn.Module, layer_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.layer_weights = None if layer_weights is None else tuple(float(w) for w in layer_weights)

    def train(self, mode: bool = True) -> FeatureDistance:
        super().train(mode)
        self.net.eval()  # frozen: BatchNorm statistics and dropout never follow the loop's mode
        return self

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        feats_pred = list(self.net(pred))
        with torch.no_grad():
            feats_target = list(self.net(target))
        weights = self.layer_weights or (1.0,) * len(feats_pred)
        if len(weights) != len(feats_pred):
            raise ValueError(f"{len(weights)} layer weights for {len(feats_pred)} feature maps")
        total = pred.new_zeros(pred.shape[0])
        for w, a, b in zip(weights, feats_pred, feats_target):
            diff = (normalize_channels(a) - normalize_channels(b.detach())).pow(2).sum(dim=1)
            total = total + w * diff.mean(dim=(1, 2))
        return total


class RandomConvFeatures(nn.Module):
    """Stand-in feature net: three stride-2 conv stages with fixed random (seeded) weights."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128), seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        stages, c_in = [], 3
        for c_out in widths:
            conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2.0 / (9 * c_in)) ** 0.5)
                conv.bias.zero_()
            stages.append(nn.Sequential(conv, nn.ReLU()))
            c_in = c_out
        self.stages = nn.ModuleList(stages)

    def forward(self, images: Tensor) -> list[Tensor]:
        x, out = images * 2 - 1, []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


class TimmFeatures(nn.Module):
    """A timm `features_only` network with its own input normalisation; images in [0, 1]."""

    def __init__(self, name: str, weights: str | None = None, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        import timm

        kwargs: dict[str, Any] = {"features_only": True}
        if out_indices is not None:
            kwargs["out_indices"] = tuple(out_indices)
        self.net = timm.create_model(name, **kwargs)  # random init: weights come only from the local file below
        if weights:
            from pathlib import Path

            from zoo.weights import read_state

            if not Path(weights).is_file():
                raise FileNotFoundError(f"perceptual network weights {weights} not found (a local file is needed: no downloads)")
            # the classifier's checkpoint (safetensors, or torch.load with weights_only) onto the
            # features_only network: the same module names, without the classifier head
            state, _ = read_state(Path(weights))
            own = self.net.state_dict()
            missing = [k for k in own if k not in state]
            if missing:
                raise ValueError(f"{weights} lacks {len(missing)} of {name}'s feature weights, e.g. {missing[:3]}")
            self.net.load_state_dict({k: state[k] for k in own})
        cfg = self.net.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> list[Tensor]:
        return list(self.net((images - self.mean) / self.std))


class StageFeatures(nn.Module):
    """Multi-layer features of a classifier whose `body` is an nn.Sequential (zoo's `ShapesFeatureNet`):
    the output of the last block at each resolution (before each pooling, and the last), as LPIPS
    takes VGG's last ReLU of each stage. Images in [0, 1] are normalised with the net's own
    `config.mean` / `config.std` and kept at their size (the body is fully convolutional)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.body = net.body
        config = getattr(net, "config", None)
        self.mean = float(getattr(config, "mean", 0.5))
        self.std = float(getattr(config, "std", 0.25))
        blocks = list(self.body)
        pools = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
        self.taps = sorted({i - 1 for i, b in enumerate(blocks) if isinstance(b, pools) and i > 0} | {len(blocks) - 1})

    def forward(self, images: Tensor) -> list[Tensor]:
        x, out = (images - self.mean) / self.std, []
        for i, block in enumerate(self.body):
            x = block(x)
            if i in self.taps:
                out.append(x)
        return out


def shapes_feature_net() -> nn.Module:
    """zoo's small classifier on procedural class images (`zoo.metrics.generation.load_feature_net()`,
    shipped weights) as a multi-layer feature net."""
    from zoo.metrics.generation import load_feature_net  # shipped weights, no download

    return StageFeatures(load_feature_net())


def build_feature_net(spec: str = "shapes", weights: str | None = None) -> nn.Module:
    """The frozen network named by `spec` ("shapes", "timm:<name>", "random"); see the module docstring."""
    if spec == "shapes":
        return shapes_feature_net()
    if spec == "random":
        return RandomConvFeatures()
    if spec.startswith("timm:"):
        return TimmFeatures(spec.split(":", 1)[1], weights or None)
    raise ValueError(f"unknown perceptual network {spec!r}: use 'shapes', 'random' or 'timm:<model name>' (with local weights)")


def build_perceptual(spec: str = "shapes", weights: str | None = None) -> tuple[FeatureDistance | None, str]:
    """(distance, the network actually used). "none" gives (None, "none"). "shapes" falls back to the
    "random" stand-in, and says so, when the shipped classifier cannot be loaded."""
    if spec == "none":
        return None, "none"
    if spec == "shapes":
        try:
            return FeatureDistance(shapes_feature_net()), "shapes"
        except (ImportError, FileNotFoundError, AttributeError) as err:
            import logging

            logging.getLogger(__name__).warning("shapes feature net unavailable (%s): perceptual term uses the random stand-in", err)
            return FeatureDistance(RandomConvFeatures()), "random (shapes feature net unavailable)"
    return FeatureDistance(build_feature_net(spec, weights)), spec
