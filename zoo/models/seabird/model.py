"""SeaBird's KITTI-360 network (official `PanopticBEV/`): EfficientDet body -> PanopticBEV dense
front-to-BEV transformer -> BEV semantic head (dice-trained foreground classes) -> per-class
occupancy collapsed to one channel -> CenterNet / BBAVectors BEV detection head.

Module names and shapes mirror the official code (`panoptic_bev/models/panoptic_bev.py`,
`modules/transformer.py`, `modules/heads/fpn.py`, `modules/heads/detection/ctrbox_net.py`,
`models/backbone_edet/efficientdet.py`) so that `convert.py` maps the official checkpoint
almost one to one; the code is our own.

Layouts (the official ones, named once here):
- front view (FV): (B, C, H, W) image features, scale s = 1/4 .. 1/32;
- "L_f": BEV rows = depth z near -> far, columns = x right -> left (where the vertical and flat
  branches merge, official `torch.flip(..., dims=[3])`);
- "L_sem": BEV rows = x left -> right, columns = z near -> far (the transformer's output, official
  `torch.rot90(k=1)`; the semantic head runs here);
- "L_det": BEV rows = z far -> near, columns = x left -> right (ego at the bottom; official second
  `rot90(k=1)` before the detection head). The graph returns both BEV outputs in L_det.

What we chose where the official code leaves room or depends on CUDA/kornia:
- Camera: rectified and level (pitch 0) at `camera_height` metres above a flat ground; the
  official IPM homography also takes a 5 degree pitch from its extrinsics. The IPM and its
  inverse are written as `grid_sample` over the ground-plane projection (kornia's
  `warp_perspective` with the same homography is a grid_sample too), so the graph is one
  ONNX-exportable tensor program whose only extra input is the intrinsics.
- BEV cell centres are used for the polar-to-Cartesian grid (official: cell corners, z = 0 on
  the first row, which divides by 1e-8).
- ABN (inplace_abn: BatchNorm then leaky ReLU 0.01) is `NormAct`, a BatchNorm with the same
  parameters followed by the activation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SEM_CLASSES = ("Building", "Car")
HEAD_CHANNELS = {"hm": 2, "wh": 10, "reg": 2, "cls_theta": 1, "h3d": 1, "y3d": 1, "yaw": 1}  # official det_params


@dataclass
class SeaBirdConfig:
    """Sizes of one variant (official `experiments/pbev_seabird_kitti360_val.ini` for the paper's)."""

    class_names: tuple[str, ...] = SEM_CLASSES  # [det] det_classes == the BEV segmentation classes
    image_size: tuple[int, int] = (384, 1408)  # [dataloader] front_resize (H, W)
    backbone: str = "tf_efficientnet_b3"  # efficientdet-d3's EfficientNet-B3 (timm, same layers)
    fpn_channels: int = 160  # BiFPN width of EfficientDet-D3 (the transformer's in_channels)
    fpn_repeats: int = 6  # BiFPN cells of D3
    tfm_channels: int = 128
    bev_channels: int = 256  # bev_ms_channels
    tfm_scales: tuple[int, ...] = (4, 8, 16, 32)
    bev_size: tuple[int, int] = (704, 768)  # (Z_out, W_out) bev_crop, full-resolution cells
    bev_resolution: float = 25.0 / 336.0  # metres a full-resolution cell: cam_z / f of [cameras] bev_params
    camera_height: float = 1.55  # extrinsics translation z (metres above the ground)
    default_camera: tuple[float, float, float, float] = (552.554261 / 1408, 552.554261 / 376, 682.049453 / 1408,
                                                          238.769549 / 376)  # (fx/W, fy/H, cx/W, cy/H) KITTI-360
    sem_hidden: int = 128
    det_widths: tuple[int, int, int, int] = (64, 128, 256, 512)  # the head's ResNet-18 stages
    det_blocks: tuple[int, int, int, int] = (2, 2, 2, 2)
    head_conv: int = 256
    app_feat: str = "bev"  # occupancy x2 + channel-max of the stride-4 BEV features (official app_feat)
    max_detections: int = 50  # [det] K
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    backbone_kwargs: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def det_grid(self) -> tuple[int, int]:
        """(rows, cols) of the detection grid in L_det: the stride-4 BEV (official det_down_ratio 4)."""
        z, w = self.bev_size
        s = self.tfm_scales[0]
        return int(w / s), int(z / s)  # L_sem (X, Z) sizes; L_det swaps them below

    @property
    def det_cell(self) -> float:
        return self.bev_resolution * self.tfm_scales[0]

    @property
    def bev_extent(self) -> tuple[float, float, float, float]:
        """(x_min, x_max, z_min, z_max) metres covered by the BEV (official extents)."""
        z, w = self.bev_size
        half = w * self.bev_resolution / 2
        return (-half, half, 0.0, z * self.bev_resolution)

    @property
    def head_channels(self) -> dict[str, int]:
        return dict(HEAD_CHANNELS, hm=self.num_classes)


# ---------------------------------------------------------------------------- building blocks


class NormAct(nn.modules.batchnorm._BatchNorm):
    """inplace_abn's ABN: BatchNorm (any rank >= 2) then leaky ReLU(0.01); parameters as BatchNorm's."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")

    def forward(self, input: Tensor) -> Tensor:
        return F.leaky_relu(super().forward(input), 0.01)


class _SameConv(nn.Module):
    """Conv2dStaticSamePadding of the official EfficientDet (stride 1 here: symmetric padding)."""

    def __init__(self, cin: int, cout: int, k: int, groups: int = 1, bias: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def _maxpool_same(x: Tensor) -> Tensor:
    """MaxPool2dStaticSamePadding(3, 2): TensorFlow 'same' zero padding (extra on bottom/right)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    ph = max((math.ceil(h / 2) - 1) * 2 + 3 - h, 0)
    pw = max((math.ceil(w / 2) - 1) * 2 + 3 - w, 0)
    x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
    return F.max_pool2d(x, 3, 2)


class SeparableConvBlock(nn.Module):
    """EfficientDet's depthwise 3x3 (no bias) + pointwise 1x1 + BatchNorm (momentum 0.01, eps 1e-3)."""

    def __init__(self, channels: int):
        super().__init__()
        self.depthwise_conv = _SameConv(channels, channels, 3, groups=channels, bias=False)
        self.pointwise_conv = _SameConv(channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels, momentum=0.01, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.pointwise_conv(self.depthwise_conv(x)))


def _down_channel(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(_SameConv(cin, cout, 1), nn.BatchNorm2d(cout, momentum=0.01, eps=1e-3))


class BiFPN(nn.Module):
    """One BiFPN cell with fast normalised fusion (EfficientDet, Tan et al. 2020, Sec. 3.3), in the
    official PanopticBEV variant: inputs at strides 4/8/16/32 (their P3..P6) plus P7 = maxpool(P6)."""

    def __init__(self, channels: int, in_channels: tuple[int, ...], first_time: bool, epsilon: float = 1e-4):
        super().__init__()
        self.epsilon = epsilon
        self.first_time = first_time
        for name in ("conv6_up", "conv5_up", "conv4_up", "conv3_up", "conv4_down", "conv5_down", "conv6_down", "conv7_down"):
            setattr(self, name, SeparableConvBlock(channels))
        if first_time:
            c3, c4, c5, c6 = in_channels
            self.p6_down_channel = _down_channel(c6, channels)
            self.p5_down_channel = _down_channel(c5, channels)
            self.p4_down_channel = _down_channel(c4, channels)
            self.p3_down_channel = _down_channel(c3, channels)
            self.p6_to_p7 = _down_channel(c6, channels)  # followed by the same-padded max pool
            self.p4_down_channel_2 = _down_channel(c4, channels)
            self.p5_down_channel_2 = _down_channel(c5, channels)
        for name, n in (("p6_w1", 2), ("p5_w1", 2), ("p4_w1", 2), ("p3_w1", 2), ("p4_w2", 3), ("p5_w2", 3), ("p6_w2", 3), ("p7_w2", 2)):
            setattr(self, name, nn.Parameter(torch.ones(n)))

    def _m(self, name: str) -> nn.Module:
        return cast(nn.Module, getattr(self, name))

    def _w(self, name: str) -> Tensor:
        w = F.relu(cast(Tensor, getattr(self, name)))
        return w / (w.sum(0) + self.epsilon)

    def forward(self, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        if self.first_time:
            p3, p4, p5, p6 = inputs
            p3_in, p4_in, p5_in, p6_in = (self._m("p3_down_channel")(p3), self._m("p4_down_channel")(p4), self._m("p5_down_channel")(p5),
                                          self._m("p6_down_channel")(p6))
            p7_in = _maxpool_same(self._m("p6_to_p7")(p6))
        else:
            p3_in, p4_in, p5_in, p6_in, p7_in = inputs
        up = lambda x, ref: F.interpolate(x, size=ref.shape[-2:], mode="nearest")  # noqa: E731
        w = self._w("p6_w1")
        p7_resized = F.interpolate(F.interpolate(p7_in, scale_factor=2.0, mode="nearest"), size=p6_in.shape[-2:],
                                   mode="bilinear", align_corners=True)
        p6_up = self._m("conv6_up")(F.silu(w[0] * p6_in + w[1] * p7_resized))
        w = self._w("p5_w1")
        p5_up = self._m("conv5_up")(F.silu(w[0] * p5_in + w[1] * up(p6_up, p5_in)))
        w = self._w("p4_w1")
        p4_up = self._m("conv4_up")(F.silu(w[0] * p4_in + w[1] * up(p5_up, p4_in)))
        w = self._w("p3_w1")
        p3_out = self._m("conv3_up")(F.silu(w[0] * p3_in + w[1] * up(p4_up, p3_in)))
        if self.first_time:
            p4_in, p5_in = self._m("p4_down_channel_2")(p4), self._m("p5_down_channel_2")(p5)
        w = self._w("p4_w2")
        p4_out = self._m("conv4_down")(F.silu(w[0] * p4_in + w[1] * p4_up + w[2] * _maxpool_same(p3_out)))
        w = self._w("p5_w2")
        p5_out = self._m("conv5_down")(F.silu(w[0] * p5_in + w[1] * p5_up + w[2] * _maxpool_same(p4_out)))
        w = self._w("p6_w2")
        p6_out = self._m("conv6_down")(F.silu(w[0] * p6_in + w[1] * p6_up + w[2] * _maxpool_same(p5_out)))
        w = self._w("p7_w2")
        p7_out = self._m("conv7_down")(F.silu(w[0] * p7_in + w[1] * _maxpool_same(p6_out)))
        return p3_out, p4_out, p5_out, p6_out, p7_out


class Body(nn.Module):
    """EfficientDet body: a timm EfficientNet (features at strides 4-32) and the BiFPN cells."""

    def __init__(self, config: SeaBirdConfig):
        super().__init__()
        import timm

        self.backbone = timm.create_model(config.backbone, pretrained=False, features_only=True, out_indices=(1, 2, 3, 4),
                                          **config.backbone_kwargs)
        chans = tuple(cast(Any, self.backbone).feature_info.channels())
        self.bifpn = nn.Sequential(*[BiFPN(config.fpn_channels, chans, i == 0) for i in range(config.fpn_repeats)])

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.bifpn(tuple(self.backbone(x)))


# ---------------------------------------------------------------------------- camera geometry


def _cell_centres(n: int, low: float, res: float, device: torch.device) -> Tensor:
    return low + (torch.arange(n, device=device, dtype=torch.float32) + 0.5) * res


def polar_grid(camera: Tensor, feat_w: int, x_extent: tuple[float, float], z_extent: tuple[float, float], rows: int, cols: int,
               res: float) -> Tensor:
    """Perspective2OrthographicWarper's sampling grid (PanopticBEV Sec. 3.2, vertical transformer):
    each BEV cell (x, z) (rows z near -> far, cols x left -> right) reads image column u = fx x / z + cx
    at depth bin (z - near) / (far - near). camera: (B, 4) (fx, _, cx, _) in this feature map's pixels."""
    z = _cell_centres(rows, z_extent[0], res, camera.device).view(1, rows, 1)
    x = _cell_centres(cols, x_extent[0], res, camera.device).view(1, 1, cols)
    fx, cx = camera[:, 0].view(-1, 1, 1), camera[:, 2].view(-1, 1, 1)
    u = (fx * x + cx * z) / z
    u = u / feat_w * 2 - 1
    zn = ((z - z_extent[0]) / (z_extent[1] - z_extent[0]) * 2 - 1).expand_as(u)
    return torch.stack([u, zn], -1).clamp(-1.1, 1.1)


def ipm_grid(camera: Tensor, height: float, feat_h: int, feat_w: int, x_extent: tuple[float, float], z_extent: tuple[float, float],
             rows: int, cols: int, res: float) -> Tensor:
    """Inverse perspective mapping of the flat ground y = height (PanopticBEV's flat transformer):
    BEV cell (x, z) in L_f (rows z near -> far, cols x right -> left) -> image (u, v)."""
    z = _cell_centres(rows, z_extent[0], res, camera.device).view(1, rows, 1)
    x = _cell_centres(cols, x_extent[0], res, camera.device).flip(0).view(1, 1, cols)
    fx, fy, cx, cy = (camera[:, i].view(-1, 1, 1) for i in range(4))
    u = fx * x / z + cx
    v = (fy * height / z + cy).expand_as(u)
    return torch.stack([u / feat_w * 2 - 1, v / feat_h * 2 - 1], -1).clamp(-2.0, 2.0)


def inverse_ipm_grid(camera: Tensor, height: float, feat_h: int, feat_w: int, x_extent: tuple[float, float],
                     z_extent: tuple[float, float]) -> Tensor:
    """Image pixel (u, v) -> its ground point's place in an L_f BEV map (normalised); pixels at or above
    the horizon get a point outside the map, so `grid_sample` returns 0 there (official: IPM-ignored region)."""
    v = (torch.arange(feat_h, device=camera.device, dtype=torch.float32) + 0.5).view(1, feat_h, 1)
    u = (torch.arange(feat_w, device=camera.device, dtype=torch.float32) + 0.5).view(1, 1, feat_w)
    fx, fy, cx, cy = (camera[:, i].view(-1, 1, 1) for i in range(4))
    below = (v - cy) > 1e-3
    z = fy * height / torch.clamp(v - cy, min=1e-3)
    x = (u - cx) * z / fx
    gx = 1 - (x - x_extent[0]) / (x_extent[1] - x_extent[0]) * 2  # columns run right -> left
    gz = (z - z_extent[0]) / (z_extent[1] - z_extent[0]) * 2 - 1
    gx = torch.where(below, gx, torch.full_like(gx, 3.0))
    gz = torch.where(below, gz, torch.full_like(gz, 3.0))
    return torch.stack([gx, gz.expand_as(gx)], -1).clamp(-3.0, 3.0)


def _sample(x: Tensor, grid: Tensor) -> Tensor:
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ---------------------------------------------------------------------------- front-to-BEV transformer


class VerticalTransformer(nn.Module):
    """PanopticBEV's vertical transformer: a volumetric lattice along depth (Conv3d 'depth extender'),
    a supervised depth attention, the height flattened (Conv3d over image rows), then the
    polar-to-Cartesian warp with the intrinsics."""

    def __init__(self, ch: int, v_ch: int, h_in: int, z_out: int):
        super().__init__()
        self.ch_mapper_in = nn.Sequential(nn.Conv2d(ch, v_ch, 1, bias=False), NormAct(v_ch))
        self.depth_extender = nn.Sequential(nn.Conv3d(1, z_out, 3, 1, 1), NormAct(z_out))
        self.height_flattener = nn.Sequential(nn.Conv3d(h_in, 1, 3, 1, 1), NormAct(1))
        self.ch_mapper_out = nn.Sequential(nn.Conv2d(v_ch, ch, 1, bias=False), NormAct(ch))
        self.depth_estimation = nn.Sequential(nn.Conv2d(ch, z_out, 3, 1, 1, bias=False), NormAct(z_out),
                                              nn.Conv2d(z_out, z_out, 3, 1, 1, bias=False), NormAct(z_out),
                                              nn.Conv2d(z_out, z_out, 3, 1, 1, bias=False), NormAct(z_out))
        self.v_region_estimation = nn.Sequential(nn.Conv2d(h_in, h_in, 3, padding=1), NormAct(h_in), nn.Conv2d(h_in, 1, 1))
        # the official "dummy" 1x1 convolutions (kept: they are in the checkpoint and act as learned mixes)
        self.depth_extender_dummy = nn.Conv3d(z_out, z_out, 1, bias=False)
        self.depth_estimation_dummy = nn.Conv2d(z_out, z_out, 1, bias=False)

    def forward(self, feat: Tensor, warp: Tensor) -> tuple[Tensor, Tensor]:
        depth = self.depth_estimation_dummy(self.depth_estimation(feat)).permute(0, 2, 1, 3)  # B, H, Z, W
        v_region_logits = self.v_region_estimation(depth)  # B, 1, Z, W
        attention = v_region_logits.sigmoid().unsqueeze(1)  # B, 1, 1, Z, W
        v = self.depth_extender_dummy(self.depth_extender(self.ch_mapper_in(feat).unsqueeze(1)))  # B, Z, C, H, W
        v = v.permute(0, 2, 3, 1, 4) * attention  # B, C, H, Z, W
        v = self.height_flattener(v.permute(0, 2, 1, 3, 4)).squeeze(1)  # B, C, Z, W
        v = self.ch_mapper_out(v)
        return _sample(v, warp).flip(3), _sample(v_region_logits, warp).flip(3)


class ErrorCorrectionModule(nn.Module):
    """Flat transformer's ECM: image rows -> channels -> depth bins, for regions where IPM is unsure."""

    def __init__(self, ch: int, h_in: int, depth_bins: int):
        super().__init__()
        self.feat_flatten = nn.Conv2d(h_in, ch, 3, padding=1, bias=False)
        self.bottleneck_conv = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.feat_expand = nn.Conv2d(ch, depth_bins, 3, padding=1, bias=False)
        self.bev_conv = nn.Conv2d(ch, ch, 3, padding=1, bias=False)

    def forward(self, f: Tensor) -> Tensor:
        f = self.feat_flatten(f.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        f = self.feat_expand(self.bottleneck_conv(f)).permute(0, 2, 1, 3)
        return self.bev_conv(f)


class FlatTransformer(nn.Module):
    """PanopticBEV's flat transformer: IPM of the flat-region features, an IPM-confidence map sent back
    to the image to pick the features IPM gets wrong, the ECM on those, and a residual refinement."""

    def __init__(self, ch: int, h_in: int, depth_bins: int):
        super().__init__()
        self.ch_mapper_in = nn.Sequential(nn.Conv2d(ch, ch, 1, bias=False), NormAct(ch))
        self.ch_mapper_out = nn.Sequential(nn.Conv2d(ch, ch, 1, bias=False), NormAct(ch))
        self.ecm = ErrorCorrectionModule(ch, h_in, depth_bins)
        self.f_region_estimation = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), NormAct(ch), nn.Conv2d(ch, 1, 1))
        self.ipm_confident_region_estimation = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), NormAct(ch), nn.Conv2d(ch, 1, 1))
        self.post_process_residual = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), NormAct(ch), nn.Conv2d(ch, ch, 3, padding=1),
                                                   NormAct(ch), nn.Conv2d(ch, ch, 3, padding=1))
        self.f_dummy = nn.Conv2d(ch, ch, 1, bias=False)

    def forward(self, feat: Tensor, ipm: Tensor, inv_ipm: Tensor, warp: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        feat = self.f_dummy(self.ch_mapper_in(feat))
        bev_ipm = _sample(feat, ipm)  # L_f
        incorrect = 1 - self.ipm_confident_region_estimation(bev_ipm).sigmoid()
        incorrect_fv = _sample(incorrect, inv_ipm)  # 0 above the horizon
        ignored = (incorrect_fv == 0).to(feat.dtype)
        ecm_in = feat * incorrect_fv + feat * ignored
        bev_ecm = _sample(self.ecm(ecm_in), warp)
        bev_ecm = F.interpolate(bev_ecm, size=size, mode="bilinear", align_corners=True).flip(3)
        f = bev_ecm + bev_ipm
        f = f + self.post_process_residual(f)
        return self.ch_mapper_out(f), self.f_region_estimation(f)


class MergeFeaturesVF(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.preprocess_v = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1, bias=False), NormAct(ch))
        self.preprocess_f = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1, bias=False), NormAct(ch))
        self.merge_vf = nn.Sequential(nn.Conv2d(2 * ch, ch, 3, 1, 1, bias=False), NormAct(ch))

    def forward(self, v: Tensor, f: Tensor) -> Tensor:
        return self.merge_vf(torch.cat([self.preprocess_v(v), self.preprocess_f(f)], 1))


class TransformerVF(nn.Module):
    """One scale of PanopticBEV's dense transformer (Gosala & Valada, RA-L 2022, Sec. III-B): a
    vertical/flat attention splits the image features; each part goes to BEV its own way; merged."""

    def __init__(self, config: SeaBirdConfig, scale: int):
        super().__init__()
        c = config
        ch = c.tfm_channels
        self.scale = scale
        self.h_in, self.w_in = int(c.image_size[0] / scale), int(c.image_size[1] / scale)
        self.z_out, self.w_out = int(c.bev_size[0] / scale), int(c.bev_size[1] / scale)
        self.res = c.bev_resolution * scale
        self.height = c.camera_height
        x0, x1, z0, z1 = c.bev_extent
        self.x_extent, self.z_extent = (x0, x1), (z0, z1)
        self.ch_mapper_in = nn.Sequential(nn.Conv2d(c.fpn_channels, ch, 1, bias=False), NormAct(ch))
        self.vf_estimation = nn.Sequential(nn.Conv2d(ch, ch // 2, 1, bias=False), NormAct(ch // 2),
                                           nn.Conv2d(ch // 2, ch // 2, 3, padding=1, bias=False), NormAct(ch // 2),
                                           nn.Conv2d(ch // 2, ch // 2, 3, padding=1, bias=False), NormAct(ch // 2),
                                           nn.Conv2d(ch // 2, 2, 1, bias=False))
        self.v_transform = VerticalTransformer(ch, ch // 2, self.h_in, self.z_out)
        # official: the ECM's depth bins are img_size_out[0] * scale with img_size_out = (W_out, Z_out)
        self.f_transform = FlatTransformer(ch, self.h_in, self.w_out)
        self.merge_feat_vf = MergeFeaturesVF(ch)
        self.ch_mapper_out = nn.Sequential(nn.Conv2d(ch, c.bev_channels, 1, bias=False), NormAct(c.bev_channels))
        self.dummy = nn.Conv2d(c.bev_channels, c.bev_channels, 1, bias=False)

    def forward(self, feat: Tensor, camera: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """feat (B, C, H/s, W/s), camera (B, 4) (fx, fy, cx, cy) in input pixels ->
        BEV features (B, C', X, Z) in L_sem, vf logits (FV), v / f region logits (L_sem)."""
        cam = camera / self.scale
        h, w = int(feat.shape[-2]), int(feat.shape[-1])
        warp = polar_grid(cam, w, self.x_extent, self.z_extent, self.z_out, self.w_out, self.res)
        ipm = ipm_grid(cam, self.height, h, w, self.x_extent, self.z_extent, self.z_out, self.w_out, self.res)
        inv_ipm = inverse_ipm_grid(cam, self.height, h, w, self.x_extent, self.z_extent)
        feat = self.ch_mapper_in(feat)
        vf_logits = self.vf_estimation(feat)
        att = vf_logits.softmax(1)
        feat_v, v_region = self.v_transform(feat * att[:, 0:1], warp)
        feat_f, f_region = self.f_transform(feat * att[:, 1:2], ipm, inv_ipm, warp, (self.z_out, self.w_out))
        size = (self.z_out, self.w_out)
        feat_v = F.interpolate(feat_v, size=size, mode="bilinear", align_corners=True)
        feat_f = F.interpolate(feat_f, size=size, mode="bilinear", align_corners=True)
        merged = self.dummy(self.ch_mapper_out(self.merge_feat_vf(feat_v, feat_f)))
        return rot90(merged), vf_logits, rot90(v_region), rot90(f_region)


def rot90(x: Tensor) -> Tensor:
    """torch.rot90(x, 1, (2, 3)) written as flip + transpose (the same op; exports everywhere)."""
    return x.flip(3).transpose(2, 3)


class MultiScaleTransformerVF(nn.Module):
    def __init__(self, config: SeaBirdConfig):
        super().__init__()
        self.transformer_list = nn.ModuleList([TransformerVF(config, s) for s in config.tfm_scales])

    def forward(self, feats: tuple[Tensor, ...], camera: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        out: tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]] = ([], [], [], [])
        for feat, transformer in zip(feats, self.transformer_list):
            for acc, t in zip(out, transformer(feat, camera)):
                acc.append(t)
        return out


# ---------------------------------------------------------------------------- BEV semantic head


class _SepConv(nn.Module):
    def __init__(self, cin: int, cout: int, dilation: tuple[int, int]):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, dilation=dilation, padding=dilation, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class _Box3x3(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1_3x3_1, self.conv1_3x3_1_bn = _SepConv(cin, cout, (1, 1)), NormAct(cout)
        self.conv1_3x3_2, self.conv1_3x3_2_bn = _SepConv(cout, cout, (1, 1)), NormAct(cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1_3x3_2_bn(self.conv1_3x3_2(self.conv1_3x3_1_bn(self.conv1_3x3_1(x))))


class _DPC(nn.Module):
    """Dense prediction cell (Chen et al. 2018) as EfficientPS / PanopticBEV use it. As the official
    forward, branch 4 runs `conv1_3x3_4` twice and `conv1_3x3_5` is never called (kept for the checkpoint)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        for i, d in enumerate(((1, 6), (1, 1), (6, 21), (18, 15), (6, 3)), start=1):
            setattr(self, f"conv1_3x3_{i}", _SepConv(cin, cin, d))
            setattr(self, f"conv1_3x3_{i}_bn", NormAct(cin))
        self.conv2 = nn.Conv2d(cin * 5, cout, 1, bias=False)
        self.bn2 = NormAct(cout)

    def _m(self, name: str) -> nn.Module:
        return cast(nn.Module, getattr(self, name))

    def forward(self, x: Tensor) -> Tensor:
        x = self._m("conv1_3x3_1_bn")(self._m("conv1_3x3_1")(x))
        x1 = self._m("conv1_3x3_2_bn")(self._m("conv1_3x3_2")(x))
        x2 = self._m("conv1_3x3_3_bn")(self._m("conv1_3x3_3")(x))
        x3 = self._m("conv1_3x3_4_bn")(self._m("conv1_3x3_4")(x))
        x4 = self._m("conv1_3x3_4_bn")(self._m("conv1_3x3_4")(x3))
        return self.bn2(self.conv2(torch.cat([x, x1, x2, x3, x4], 1)))


class FPNSemanticHeadDPC(nn.Module):
    """The BEV semantic head (EfficientPS's DPC head over the 4 BEV scales), with SeaBird's foreground
    classes as sigmoid channels (paper Sec. 4: BEV segmentation head trained with dice)."""

    def __init__(self, cin: int, hidden: int, num_classes: int, levels: int = 4):
        super().__init__()
        self.output_1 = nn.ModuleList([_DPC(cin, hidden) for _ in range(levels - 2)])
        self.output_2 = nn.ModuleList([_Box3x3(cin, hidden) for _ in range(2)])
        self.pre_process = nn.ModuleList([_Box3x3(hidden, hidden) for _ in range(2)])
        self.conv_sem = nn.Conv2d(hidden * levels, num_classes, 1)

    def forward(self, xs: list[Tensor]) -> Tensor:
        xs = list(xs)
        up = lambda x, ref: F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
        i = len(xs) - 1
        for output in self.output_1:
            xs[i] = output(xs[i])
            i -= 1
        interm = self.pre_process[0](xs[i + 1] + up(xs[i + 2], xs[i + 1]))
        for js, output in enumerate(self.output_2):
            xs[i] = output(xs[i])
            if js == 1:
                interm = self.pre_process[1](xs[i + 1])
            xs[i] = xs[i] + up(interm, xs[i])
            i -= 1
        xs = [xs[0]] + [up(x, xs[0]) for x in xs[1:]]
        return self.conv_sem(torch.cat(xs, 1))


# ---------------------------------------------------------------------------- BEV detection head


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + identity)


class ResNetBase(nn.Module):
    """torchvision's ResNet-18 layout with CTRBOX's change: conv1 and the max pool at stride 1, so the
    four stages come out at strides 1, 2, 4, 8 of the BEV input."""

    def __init__(self, widths: tuple[int, ...], blocks: tuple[int, ...], in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 1, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks), start=1):
            layers = [BasicBlock(cin, w, 1 if i == 1 else 2)] + [BasicBlock(w, w) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layers))
            cin = w

    def forward(self, x: Tensor) -> list[Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 1, 1)
        feats = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            feats.append(x)
        return feats


class CombinationModule(nn.Module):
    def __init__(self, c_low: int, c_up: int):
        super().__init__()
        self.up = nn.Sequential(nn.Conv2d(c_low, c_up, 3, padding=1), nn.BatchNorm2d(c_up), nn.ReLU())
        self.cat_conv = nn.Sequential(nn.Conv2d(c_up * 2, c_up, 1), nn.BatchNorm2d(c_up), nn.ReLU())

    def forward(self, x_low: Tensor, x_up: Tensor) -> Tensor:
        x_low = self.up(F.interpolate(x_low, size=x_up.shape[-2:], mode="bilinear", align_corners=False))
        return self.cat_conv(torch.cat([x_up, x_low], 1))


class CTRBOX(nn.Module):
    """BBAVectors' CenterNet-style oriented-box head (Yi et al., WACV 2021) as SeaBird's official
    `ctrbox_net.CTRBOX`: hm (per class), wh (4 box-boundary vectors + external w, h = 10), reg
    (centre offset), cls_theta (orientation class), h3d, y3d, yaw (yaw: built, never trained, as official)."""

    def __init__(self, config: SeaBirdConfig):
        super().__init__()
        w = config.det_widths
        self.base_network = ResNetBase(w, config.det_blocks)
        self.dec_c2 = CombinationModule(w[1], w[0])
        self.dec_c3 = CombinationModule(w[2], w[1])
        self.dec_c4 = CombinationModule(w[3], w[2])
        self.names = tuple(config.head_channels)
        for name, dims in config.head_channels.items():
            k = 3 if name == "wh" else 1
            head = nn.Sequential(nn.Conv2d(w[0], config.head_conv, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(config.head_conv, dims, k, padding=k // 2))
            last = cast(nn.Conv2d, head[-1])
            nn.init.constant_(cast(Tensor, last.bias), -2.19 if name == "hm" else 0.0)
            setattr(self, name, head)

    def forward(self, x: Tensor) -> Tensor:
        """-> (B, 18, H, W): hm (sigmoid), wh, reg, cls_theta (sigmoid), h3d, y3d, yaw stacked."""
        f = self.base_network(x)
        c = self.dec_c2(self.dec_c3(self.dec_c4(f[3], f[2]), f[1]), f[0])
        outs = []
        for name in self.names:
            y = getattr(self, name)(c)
            outs.append(y.sigmoid() if name in ("hm", "cls_theta") else y)
        return torch.cat(outs, 1)


def split_heads(heads: Tensor, config: SeaBirdConfig) -> dict[str, Tensor]:
    """The stacked head tensor -> {name: (B, dims, H, W)}."""
    out, start = {}, 0
    for name, dims in config.head_channels.items():
        out[name] = heads[:, start:start + dims]
        start += dims
    return out


# ---------------------------------------------------------------------------- the network


def clip_sigmoid(x: Tensor) -> Tensor:
    return x.sigmoid().clamp(1e-3, 1 - 1e-3)


def single_occupancy(prob: Tensor) -> Tensor:
    """Official `per_class_to_single_occupancy`: max over classes of (c + 1) * p_c (paper Sec. 4: the
    per-class BEV occupancy collapsed to one channel)."""
    weights = torch.arange(1, prob.shape[1] + 1, dtype=prob.dtype, device=prob.device).view(1, -1, 1, 1)
    return (prob * weights).amax(1, keepdim=True)


class SeaBird(nn.Module):
    """image (B, 3, H, W) normalised, camera (B, 4) -> BEV logits (B, C, Zd, Xd) and heads (B, 18, Zd, Xd),
    both in L_det at the stride-4 BEV resolution. `use_seg=False` feeds zeros instead of the occupancy
    (the no-segmentation ablation of bench/seabird.py)."""

    def __init__(self, config: SeaBirdConfig):
        super().__init__()
        self.config = config
        self.body = Body(config)
        self.transformer = MultiScaleTransformerVF(config)
        self.sem_head = FPNSemanticHeadDPC(config.bev_channels, config.sem_hidden, config.num_classes, len(config.tfm_scales))
        self.det_head = CTRBOX(config)
        self.use_seg = True

    def forward_all(self, images: Tensor, camera: Tensor) -> dict[str, Tensor | list[Tensor]]:
        feats = self.body(images)
        bev, vf_logits, v_region, f_region = self.transformer(feats[: len(self.config.tfm_scales)], camera)
        sem = self.sem_head(bev)  # L_sem
        occ = single_occupancy(clip_sigmoid(sem))
        if not self.use_seg:
            occ = torch.zeros_like(occ)
        if self.config.app_feat == "bev":
            app = bev[0].amax(1, keepdim=True)
            app = F.interpolate(app, size=sem.shape[-2:], mode="bilinear", align_corners=False)
            det_in = torch.cat([occ, occ, app], 1)
        else:
            det_in = occ.repeat(1, 3, 1, 1)
        heads = self.det_head(rot90(det_in))  # L_det
        return {"bev_logits": rot90(sem), "heads": heads, "vf_logits": vf_logits, "v_region_logits": v_region,
                "f_region_logits": f_region}

    def forward(self, images: Tensor, camera: Tensor) -> tuple[Tensor, Tensor]:
        out = self.forward_all(images, camera)
        return out["bev_logits"], out["heads"]  # type: ignore[return-value]


def preset_config(variant: str) -> SeaBirdConfig:
    if variant == "kitti360":
        return SeaBirdConfig()
    if variant == "micro":
        return SeaBirdConfig(class_names=("Large", "Car"), image_size=(96, 320), backbone="test_efficientnet", fpn_channels=32,
                             fpn_repeats=2, tfm_channels=32, bev_channels=32, bev_size=(128, 128), bev_resolution=0.25,
                             default_camera=(0.4, 1.33, 0.5, 0.5), sem_hidden=16, det_widths=(16, 32, 64, 128),
                             det_blocks=(1, 1, 1, 1), head_conv=32)
    raise KeyError(f"unknown SeaBird variant {variant!r}")
