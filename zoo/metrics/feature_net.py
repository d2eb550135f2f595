"""A small classifier whose penultimate layer is the feature space of our sample-quality metrics.

FID and friends need a feature extractor trained on images like the ones judged. No Inception
weights can be fetched here, and Inception features of 32-px procedural shapes say little
anyway; so, as MNIST GAN papers measure FID with a LeNet trained on MNIST, zoo measures its
generators on `ClassImageSet` data with `ShapesFeatureNet`, a six-conv CNN trained by zoo on
ClassImageSet labels (the six shape classes and the four texture families, one 10-way head;
`python -m zoo.metrics.train_feature_net`). Its features are the global-average-pooled last conv
activations (128-d, post-ReLU, as Inception's pool3), taken before the linear classifier.

The net takes float images (B, 3, H, W) in [0, 1] of any size and resizes them to 32 px
(bilinear, antialiased) itself, so 32-, 48- and 64-px generators are judged in one space.
Features are comparable only between runs of the same named net: the name (with its version)
goes into every result (`feature_space`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_NET_NAME = "zoo-shapes-classifier-v1"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / f"{FEATURE_NET_NAME}.safetensors"


def _default_classes() -> tuple[str, ...]:
    from zoo.data.generation import class_names

    return tuple(f"shapes/{c}" for c in class_names("shapes")) + tuple(f"textures/{c}" for c in class_names("textures"))


@dataclass
class FeatureNetConfig:
    """Sizes of `ShapesFeatureNet`: input side, conv widths of the three stages, class names."""

    input_size: int = 32
    widths: tuple[int, int, int, int] = (16, 32, 64, 128)
    classes: tuple[str, ...] = field(default_factory=_default_classes)
    mean: float = 0.5
    std: float = 0.25

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["widths"], d["classes"] = list(self.widths), list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureNetConfig:
        d = dict(d)
        d["widths"], d["classes"] = tuple(d["widths"]), tuple(d["classes"])
        return cls(**d)


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ShapesFeatureNet(nn.Module):
    """conv16 x2 -> pool -> conv32 x2 -> pool -> conv64, conv128 -> global average pool (features) -> linear.

    `forward(images)` returns the features (the `FeatureExtractor` protocol); `logits(images)`
    the class scores. `feature_space` names the space, e.g. "zoo-shapes-classifier-v1 penultimate (128-d)".
    """

    def __init__(self, config: FeatureNetConfig | None = None, name: str = FEATURE_NET_NAME) -> None:
        super().__init__()
        self.config = config or FeatureNetConfig()
        self.name = name
        w1, w2, w3, w4 = self.config.widths
        self.body = nn.Sequential(
            _conv(3, w1), _conv(w1, w1), nn.MaxPool2d(2),
            _conv(w1, w2), _conv(w2, w2), nn.MaxPool2d(2),
            _conv(w2, w3), _conv(w3, w4),
        )
        self.head = nn.Linear(w4, len(self.config.classes))

    @property
    def dim(self) -> int:
        return self.config.widths[-1]

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes

    @property
    def feature_space(self) -> str:
        return f"{self.name} penultimate ({self.dim}-d)"

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """float (B, 3, H, W) in [0, 1] (uint8 accepted) -> normalised (B, 3, S, S) at the net's input size."""
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        images = images.float()
        s = self.config.input_size
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return (images - self.config.mean) / self.config.std

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare(images)).mean(dim=(2, 3))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)


def load_feature_net(path: str | Path | None = None, device: str | torch.device = "cpu") -> ShapesFeatureNet:
    """The shipped `zoo-shapes-classifier-v1` (or the net saved at `path` by `train_feature_net`),
    in eval mode, without gradients, ready to extract features."""
    from zoo.weights import WeightsError, load_into, read_metadata, read_state

    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"feature-net weights {path} not found; train them with "
            f"`python -m zoo.metrics.train_feature_net --out {path}`"
        )
    meta = read_metadata(path)
    if "config" not in meta:
        raise WeightsError(f"{path}: no JSON sidecar with the net's config next to it ({path.with_suffix('.json').name})")
    net = ShapesFeatureNet(FeatureNetConfig.from_dict(meta["config"]), name=meta.get("model", FEATURE_NET_NAME))
    state, _ = read_state(path)
    load_into(net, state)
    net.metadata = meta
    return net.eval().requires_grad_(False).to(device)
