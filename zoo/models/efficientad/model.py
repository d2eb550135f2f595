"""EfficientAD networks: patch description networks (PDN), autoencoder and the inference graph.

Batzner, Heckler, König, "EfficientAD: Accurate Visual Anomaly Detection at Millisecond-Level
Latencies", WACV 2024 (arXiv:2303.14535). Layer sizes follow the paper's appendix and
nelson1425/EfficientAD (`common.py`); the map post-processing follows anomalib's
`EfficientAdModel` exactly (see `EfficientAD.combine`), so converted anomalib checkpoints give
the same maps and scores.

Section references:
- Sec. 3.1 "Efficient patch descriptors": PDN-S / PDN-M (`PDNSmall`, `PDNMedium`).
- Sec. 3.2 "Lightweight student-teacher": teacher outputs normalised by channel mean/std,
  student with 2C channels, map_st = mean_c (T - S[:C])^2.
- Sec. 3.3 "Logical anomaly detection": the autoencoder (`Autoencoder`) and
  map_ae = mean_c (A - S[C:])^2.
- Sec. 3.4 "Anomaly map normalization": 0.1 (m - q_a) / (q_b - q_a) with q_a, q_b the 0.9 and
  0.995 quantiles on validation maps, then 0.5 map_st + 0.5 map_ae; image score = max of the map.

Choices where the paper is silent or our sizes differ:
- `micro` is a PDN-S-shaped net with small widths for CPU tests and demos.
- The autoencoder's bottleneck conv has kernel 8 at 256x256 (paper, 1x1 bottleneck). For images
  under 256 the kernel shrinks to image_size // 32 so the bottleneck stays 1x1 (anomalib would
  fail there); at 256 and above it stays 8, as in anomalib, so its checkpoints load.
- Normalisation statistics default to the identity (teacher mean 0, std 1; quantiles 0 and 0.1,
  so 0.1 (m - 0) / 0.1 = m) until calibrated on the user's data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PDN_S_WIDTHS = (128, 256, 256)  # paper's PDN-S hidden widths
PDN_M_WIDTHS = (256, 512, 512)  # paper's PDN-M hidden widths
SIZES = ("micro", "s", "m")



@dataclass
class EfficientADConfig:
    """Sizes of one EfficientAD variant.

    `size` picks the PDN: "s" (PDN-S), "m" (PDN-M) or "micro" (PDN-S shape, `pdn_widths` widths).
    The autoencoder's upsampling sizes are computed from `image_size`, which ties the whole graph
    to square `image_size` x `image_size` inputs.
    """

    size: str = "s"  # "micro" | "s" | "m"
    out_channels: int = 384  # teacher channels C; student has 2C
    image_size: int = 256  # square input H=W the autoencoder is tied to
    padding: bool = False  # conv padding (True only for teacher pretraining at 64x64 out)
    pad_maps: bool = True  # pad maps by 4 each side before resizing (as the reference)
    ae_channels: int = 64  # autoencoder width (micro uses fewer)
    pdn_widths: tuple[int, ...] = ()  # only for micro: widths of a PDN-S-shaped net; empty = paper widths

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {self.size!r}")
        if self.pdn_widths and self.size != "micro":
            raise ValueError("pdn_widths is only used with size='micro'")
        if self.pdn_widths and len(self.pdn_widths) != 3:
            raise ValueError(f"pdn_widths needs 3 widths (PDN-S shape), got {self.pdn_widths}")
        if self.ae_channels % 2:
            raise ValueError("ae_channels must be even (the first two encoder convs use half of it)")
        if self.image_size < 128:
            raise ValueError("image_size must be at least 128 (the decoder's first upsample is image_size//64 - 1)")
        self.pdn_widths = tuple(self.pdn_widths)


def preset_config(name: str) -> EfficientADConfig:
    """The config of a named variant: "micro" (CPU tests and demos, ~187k params), "s" or "m" (paper)."""
    if name == "micro":
        # PDN-S shape at 16/32/32 widths, C=64, a 16-wide AE, 128x128 input: 187,104 params.
        return EfficientADConfig(size="micro", out_channels=64, image_size=128, ae_channels=16, pdn_widths=(16, 32, 32))
    if name in ("s", "m"):
        return EfficientADConfig(size=name)
    raise ValueError(f"unknown EfficientAD variant {name!r}; known: micro, s, m")


def pdn_output_size(image_size: int, padding: bool) -> int:
    """Spatial side of the PDN output (both S and M): 256 -> 56 without padding, 64 with.

    conv k4 (pad 3p), avgpool 2/2 (pad p), conv k4 (pad 3p), avgpool 2/2 (pad p), conv k3 (pad p),
    conv k4 (pad 0); PDN-M's extra 1x1 convs keep the size.
    """
    p = 1 if padding else 0
    side = image_size + 6 * p - 3
    side = (side + 2 * p - 2) // 2 + 1
    side = side + 6 * p - 3
    side = (side + 2 * p - 2) // 2 + 1
    side = side + 2 * p - 2
    return side - 3


class PDNSmall(nn.Module):
    """PDN-S (Sec. 3.1): four convs, two average pools; 33x33 receptive field per output feature.

    Input is ImageNet-normalised; with padding=False a 256x256 image gives a 56x56 map.
    `widths` are the three hidden widths (paper: 128, 256, 256); micro passes smaller ones.
    """

    def __init__(self, out_channels: int, padding: bool = False, widths: tuple[int, ...] = PDN_S_WIDTHS) -> None:
        super().__init__()
        p = 1 if padding else 0
        w1, w2, w3 = widths
        self.conv1 = nn.Conv2d(3, w1, kernel_size=4, padding=3 * p)
        self.pool1 = nn.AvgPool2d(kernel_size=2, stride=2, padding=p)
        self.conv2 = nn.Conv2d(w1, w2, kernel_size=4, padding=3 * p)
        self.pool2 = nn.AvgPool2d(kernel_size=2, stride=2, padding=p)
        self.conv3 = nn.Conv2d(w2, w3, kernel_size=3, padding=p)
        self.conv4 = nn.Conv2d(w3, out_channels, kernel_size=4)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool2(F.relu(self.conv2(x)))
        x = F.relu(self.conv3(x))
        return self.conv4(x)


class PDNMedium(nn.Module):
    """PDN-M (Sec. 3.1): PDN-S widened (256/512/512) plus a 1x1 conv before and after the last k4.

    Same 33x33 receptive field and output size as PDN-S.
    """

    def __init__(self, out_channels: int, padding: bool = False) -> None:
        super().__init__()
        p = 1 if padding else 0
        w1, w2, w3 = PDN_M_WIDTHS
        self.conv1 = nn.Conv2d(3, w1, kernel_size=4, padding=3 * p)
        self.pool1 = nn.AvgPool2d(kernel_size=2, stride=2, padding=p)
        self.conv2 = nn.Conv2d(w1, w2, kernel_size=4, padding=3 * p)
        self.pool2 = nn.AvgPool2d(kernel_size=2, stride=2, padding=p)
        self.conv3 = nn.Conv2d(w2, w3, kernel_size=1)
        self.conv4 = nn.Conv2d(w3, w3, kernel_size=3, padding=p)
        self.conv5 = nn.Conv2d(w3, out_channels, kernel_size=4)
        self.conv6 = nn.Conv2d(out_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool2(F.relu(self.conv2(x)))
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        x = F.relu(self.conv5(x))
        return self.conv6(x)


def build_pdn(config: EfficientADConfig, out_channels: int) -> nn.Module:
    """The PDN of `config.size` with `out_channels` outputs (C for the teacher, 2C for the student)."""
    if config.size == "m":
        return PDNMedium(out_channels, config.padding)
    widths = config.pdn_widths if (config.size == "micro" and config.pdn_widths) else PDN_S_WIDTHS
    return PDNSmall(out_channels, config.padding, widths)


def decoder_sizes(image_size: int, padding: bool) -> list[int]:
    """The decoder's seven bilinear upsampling sides; 256 -> [3, 8, 15, 32, 63, 127, 56].

    Same rule as anomalib (the first six scale with the input; nelson1425 hard-codes the 256 ones);
    the last one is the PDN output side so that the AE output lines up with the student's.
    """
    s = image_size
    return [s // 64 - 1, s // 32, s // 16 - 1, s // 8, s // 4 - 1, s // 2 - 1, pdn_output_size(s, padding)]


class Autoencoder(nn.Module):
    """The autoencoder of Sec. 3.3 (logical anomalies).

    Encoder: five strided convs (k4, s2, p1; widths a/2, a/2, a, a, a with a = ae_channels) and a
    conv to a 1x1 bottleneck (k8 at 256x256). Decoder: six times bilinear upsample, conv k4 p2, ReLU,
    dropout 0.2; then upsample to the PDN output size, conv k3 + ReLU, conv k3 to C channels.
    Input is ImageNet-normalised; output is (B, C, h, w) at the PDN output size.
    """

    def __init__(self, config: EfficientADConfig) -> None:
        super().__init__()
        a = config.ae_channels
        widths = [3, a // 2, a // 2, a, a, a]
        layers = [nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1) for cin, cout in zip(widths[:-1], widths[1:])]
        # Bottleneck conv: k8 on the 8x8 map of a 256 image; smaller images keep a 1x1 bottleneck.
        layers.append(nn.Conv2d(a, a, kernel_size=min(8, config.image_size // 32)))
        self.encoder = nn.ModuleList(layers)
        dec = [nn.Conv2d(a, a, kernel_size=4, padding=2) for _ in range(6)]
        dec.append(nn.Conv2d(a, a, kernel_size=3, padding=1))
        dec.append(nn.Conv2d(a, config.out_channels, kernel_size=3, padding=1))
        self.decoder = nn.ModuleList(dec)
        self.upsample_sizes = decoder_sizes(config.image_size, config.padding)
        self.dropout = 0.2

    def forward(self, x: Tensor) -> Tensor:
        for i, conv in enumerate(self.encoder):
            x = conv(x)
            if i < len(self.encoder) - 1:  # no ReLU on the bottleneck
                x = F.relu(x)
        for i, side in enumerate(self.upsample_sizes[:6]):
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
            x = F.dropout(F.relu(self.decoder[i](x)), self.dropout, self.training)
        side = self.upsample_sizes[6]
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        x = F.relu(self.decoder[6](x))
        return self.decoder[7](x)


def normalize_map(m: Tensor, q_start: Tensor, q_end: Tensor) -> Tensor:
    """Sec. 3.4 quantile normalisation: 0.1 (m - q_a) / (q_b - q_a), so q_a -> 0 and q_b -> 0.1."""
    return 0.1 * (m - q_start) / (q_end - q_start)


class EfficientAD(nn.Module):
    """Teacher PDN, student PDN (2C outputs) and autoencoder, with the inference graph.

    `forward(image in [0, 1]) -> (anomaly_map (B, 1, H, W), score (B,))` stands alone: ImageNet
    normalisation, the teacher's channel mean/std and the map quantiles are buffers.
    """

    def __init__(self, config: EfficientADConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or EfficientADConfig()
        c = config.out_channels
        self.teacher = build_pdn(config, c)
        self.student = build_pdn(config, 2 * c)
        self.ae = Autoencoder(config)
        # The teacher is frozen during AD training (Sec. 3.2); it is trained only by pretraining.
        self.teacher.requires_grad_(False)
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("teacher_mean", torch.zeros(1, c, 1, 1))
        self.register_buffer("teacher_std", torch.ones(1, c, 1, 1))
        # Identity until calibrated: 0.1 (m - 0) / (0.1 - 0) = m.
        self.register_buffer("q_st_start", torch.tensor(0.0))
        self.register_buffer("q_st_end", torch.tensor(0.1))
        self.register_buffer("q_ae_start", torch.tensor(0.0))
        self.register_buffer("q_ae_end", torch.tensor(0.1))

    @property
    def map_size(self) -> int:
        """Side of the raw maps (PDN output): 56 for 256x256 inputs."""
        return pdn_output_size(self.config.image_size, self.config.padding)

    def normalize_input(self, image01: Tensor) -> Tensor:
        """ImageNet mean/std normalisation, inside the graph so exported models take [0, 1] images."""
        return (image01 - self.image_mean) / self.image_std

    def features(self, image01: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(teacher normalised by its channel mean/std (Sec. 3.2), student (2C channels), autoencoder)."""
        x = self.normalize_input(image01)
        teacher = (self.teacher(x) - self.teacher_mean) / self.teacher_std
        return teacher, self.student(x), self.ae(x)

    def raw_maps(self, image01: Tensor) -> tuple[Tensor, Tensor]:
        """(map_st, map_ae), each (B, 1, h, w) at PDN output resolution, before quantile normalisation.

        map_st = mean_c (T - S[:C])^2 (Sec. 3.2), map_ae = mean_c (A - S[C:])^2 (Sec. 3.3).
        """
        teacher, student, ae = self.features(image01)
        c = self.config.out_channels
        map_st = ((teacher - student[:, :c]) ** 2).mean(dim=1, keepdim=True)
        map_ae = ((ae - student[:, c:]) ** 2).mean(dim=1, keepdim=True)
        return map_st, map_ae

    def resize_map(self, m: Tensor, size: tuple[int, int]) -> Tensor:
        """Pad by 4 with zeros (the PDN's unpadded border, 56 -> 64) when pad_maps, then bilinear to `size`.

        Like anomalib, the pad is applied whenever pad_maps is set, also with padding=True (64 -> 72).
        """
        if self.config.pad_maps:
            m = F.pad(m, (4, 4, 4, 4))
        return F.interpolate(m, size=size, mode="bilinear", align_corners=False)

    def calibration_maps(self, image01: Tensor) -> tuple[Tensor, Tensor]:
        """The maps whose quantiles fill q_*: raw maps padded and resized to the input size.

        This is what anomalib computes its quantiles on (`get_maps(normalize=False)`); nelson1425
        takes them on the unpadded 56x56 maps instead (see `combine`).
        """
        size = (image01.shape[-2], image01.shape[-1])
        map_st, map_ae = self.raw_maps(image01)
        return self.resize_map(map_st, size), self.resize_map(map_ae, size)

    def combine(
        self, map_st: Tensor, map_ae: Tensor, size: tuple[int, int], use_st: bool = True, use_ae: bool = True
    ) -> Tensor:
        """Raw maps (B, 1, h, w) -> anomaly map (B, 1, *size), anomalib's order of operations.

        Each map is zero-padded by 4 and resized bilinearly to `size`, then quantile-normalised
        (Sec. 3.4), then averaged 0.5/0.5. Normalising after the pad means the border takes the
        value normalize(0) = -0.1 q_a / (q_b - q_a), as in anomalib; nelson1425 normalises and
        combines at 56x56, pads the combined map with 0 and resizes to the original image size
        (bilinear resizing commutes with the affine normalisation, so only the border band
        differs). `use_st` / `use_ae` keep one branch for ablations (that map alone, weight 1).
        """
        if not (use_st or use_ae):
            raise ValueError("at least one of use_st, use_ae must be set")
        st = normalize_map(self.resize_map(map_st, size), self.q_st_start, self.q_st_end)
        ae = normalize_map(self.resize_map(map_ae, size), self.q_ae_start, self.q_ae_end)
        if use_st and use_ae:
            return 0.5 * st + 0.5 * ae
        return st if use_st else ae

    def forward(self, image01: Tensor) -> tuple[Tensor, Tensor]:
        """image (B, 3, S, S) in [0, 1] -> (anomaly map (B, 1, S, S), image score (B,) = max of the map)."""
        side = self.config.image_size
        if image01.shape[-2] != side or image01.shape[-1] != side:
            got = tuple(image01.shape[-2:])
            raise ValueError(f"expected {side}x{side} images (the autoencoder is tied to it), got {got}")
        map_st, map_ae = self.raw_maps(image01)
        anomaly_map = self.combine(map_st, map_ae, (side, side))
        score = anomaly_map.amax(dim=(1, 2, 3))
        return anomaly_map, score


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (works on the meta device)."""
    return sum(p.numel() for p in module.parameters())

