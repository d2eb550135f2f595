"""AnyText's own text recogniser, PP-OCRv3's recognition network, written in PyTorch (our code).

AnyText (Sec. 3.3 and 3.4) reads every text line with a frozen PP-OCRv3 recogniser and uses its *neck*
features, the input of the CTC head's linear layer: the text embedding module (Sec. 3.3) flattens them
(T x C = 40 x 64 = 2560 at width 320) into Linear(2560, 768) + LayerNorm, and the text perceptual loss
(Sec. 3.4, Eq. 4) compares them between generated and ground-truth line crops. The reference runs a
torch port of PaddleOCR's model (tyxsspa/AnyText `ocr_recog/`, configured in `cldm/recognizer.py`
`create_predictor`) from `ocr_weights/ppv3_rec.pth`; this module is that architecture, written anew, with
module names chosen so that the reference's state dict loads with `load_state_dict(strict=True)`:

- `backbone.*`: MobileNetV1Enhance at scale 0.5. A 3x3 stride-2 conv (16 channels), then 13 depthwise-
  separable blocks (depthwise kxk conv + BN + hard-swish, optional squeeze-excite, pointwise 1x1 conv + BN +
  hard-swish) with widths 16-32-64-64-128-128-256 x6-512-512, height strides 2 at blocks 4, 6 and 12, 5x5
  depthwise kernels from block 7, squeeze-excite (reduction 4, ReLU then hard-sigmoid relu6(x + 3) / 6) in
  the last two, the last block's stride (1, 2) (AnyText's `last_conv_stride=[1, 2]`), and a 2x2 average
  pool (`last_pool_type='avg'`). A 48 x 320 line gives 512 x 1 x 40.
- `neck.encoder.*`: the SVTR sequence encoder (PaddleOCR's EncoderWithSVTR: dims 64, depth 2, hidden 120,
  use_guide): conv 3x3 512 -> 64, conv 1x1 64 -> 120 (each conv + BN + swish), two global-attention blocks
  (8 heads, qkv bias, MLP ratio 2 with swish, LayerNorm eps 1e-5, norm before attention and MLP), a
  LayerNorm (eps 1e-6), conv 1x1 120 -> 512, concatenation with the encoder's input, conv 3x3 1024 -> 64,
  conv 1x1 64 -> 64. The 1 x 40 map becomes the sequence (B, T = 40, C = 64).
- `head.fc`: the CTC head, Linear(64, K): K = 6,625 for the Chinese model (PaddleOCR's ppocr_keys_v1
  6,623 characters + blank + space; the same list rapidocr's PP-OCRv4 file carries), 97 for the English one
  (en_dict 95 + 2).

What we chose: `use_guide` in PaddleOCR stops the gradient from the neck into the backbone; the torch port
AnyText runs does not (its `stop_gradient` attribute is a Paddle idiom, a no-op in torch), and the perceptual
loss of Sec. 3.4 relies on gradients reaching the image, so gradients flow here too. Dropout (0.1 in the
attention and the MLP, as the reference's encoder) acts only in training mode; the recogniser is used frozen
in eval mode. `forward` returns softmax probabilities (the reference's head returns logits and applies the
softmax when decoding; `logits` gives them).

Parameter count (from the reference's layer shapes; asserted in tests/models/test_anytext_ppocr_v3.py):
backbone 1,016,160 (stem 464; blocks 752 + 2,528 + 4,928 + 9,152 + 18,048 + 34,688 + 5 x 72,960 +
172,096 + 408,704), neck 1,192,880 (conv1 295,040, conv2 7,920, 2 blocks x 116,520, norm 240, conv3 62,464,
conv4 589,952, conv1x1 4,224), head 65 K; K = 6,625: 2,639,665; K = 97: 2,215,345. BN running statistics
are buffers, not counted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SCALE = 0.5
NECK_CHANNELS = 64  # EncoderWithSVTR dims
HIDDEN = 120  # EncoderWithSVTR hidden_dims
CHINESE_CLASSES = 6625  # ppocr_keys_v1 (6,623) + blank + space
ENGLISH_CLASSES = 97  # en_dict (95) + blank + space
PARAMS = {"backbone": 1_016_160, "neck": 1_192_880}


def param_count(classes: int = CHINESE_CLASSES) -> int:
    """Trainable parameters of the reference's RecModel for K classes (the CTC head is 64 K + K)."""
    return PARAMS["backbone"] + PARAMS["neck"] + NECK_CHANNELS * classes + classes


# MobileNetV1Enhance's blocks at full width: (in, out, stride, depthwise kernel, squeeze-excite); x SCALE.
# The last block's stride is AnyText's last_conv_stride [1, 2].
BLOCKS: tuple[tuple[int, int, tuple[int, int], int, bool], ...] = (
    (32, 64, (1, 1), 3, False), (64, 128, (1, 1), 3, False), (128, 128, (1, 1), 3, False),
    (128, 256, (2, 1), 3, False), (256, 256, (1, 1), 3, False), (256, 512, (2, 1), 3, False),
    *[(512, 512, (1, 1), 5, False)] * 5,
    (512, 1024, (2, 1), 5, True), (1024, 1024, (1, 2), 5, True),
)


# -- backbone ---------------------------------------------------------------------------------------
class ConvBNHardSwish(nn.Module):
    """Conv (no bias) + BatchNorm + hard-swish; `_conv` / `_batch_norm` are the reference's names."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int | tuple[int, int] = 1, groups: int = 1):
        super().__init__()
        self._conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self._batch_norm = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return F.hardswish(self._batch_norm(self._conv(x)))


class SqueezeExcite(nn.Module):
    """Global average -> 1x1 conv (C/4) -> ReLU -> 1x1 conv (C) -> hard-sigmoid relu6(x + 3) / 6 -> scale."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels // reduction, 1)
        self.conv2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        w = self.conv2(F.relu(self.conv1(x.mean(dim=(2, 3), keepdim=True))))
        return x * F.hardsigmoid(w)


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: tuple[int, int], kernel: int, se: bool):
        super().__init__()
        self._depthwise_conv = ConvBNHardSwish(cin, cin, kernel, stride, groups=cin)
        self._se = SqueezeExcite(cin) if se else None
        self._pointwise_conv = ConvBNHardSwish(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self._depthwise_conv(x)
        if self._se is not None:
            x = self._se(x)
        return self._pointwise_conv(x)


class MobileNetV1Enhance(nn.Module):
    """(B, 3, 48, W) -> (B, 512, 1, W / 8)."""

    def __init__(self, in_channels: int = 3, scale: float = SCALE):
        super().__init__()
        self.conv1 = ConvBNHardSwish(in_channels, int(32 * scale), 3, stride=2)
        self.block_list = nn.Sequential(*[DepthwiseSeparable(int(cin * scale), int(cout * scale), stride, k, se)
                                          for cin, cout, stride, k, se in BLOCKS])
        self.pool = nn.AvgPool2d(2, 2)
        self.out_channels = int(BLOCKS[-1][1] * scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.block_list(self.conv1(x)))


# -- neck: the SVTR sequence encoder ---------------------------------------------------------------
class ConvBNSwish(nn.Module):
    """Conv (no bias) + BatchNorm + swish x sigmoid(x); `conv` / `norm` are the reference's names."""

    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, 1, kernel // 2, bias=False)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(self.norm(self.conv(x)))


class GlobalAttention(nn.Module):
    """Multi-head self-attention over all positions (SVTR's global mixer): `qkv` (with bias) and `proj`."""

    def __init__(self, dim: int, heads: int = 8, dropout: float = 0.1):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        # softmax(q k^T / sqrt(head_dim)) v, the reference's scale head_dim ** -0.5
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(b, n, c)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.1):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(F.silu(self.fc1(x)))))


class SVTRBlock(nn.Module):
    """x + attention(LN(x)), then x + MLP(LN(x)) (the reference's prenorm=False; LayerNorm eps 1e-5)."""

    def __init__(self, dim: int, heads: int = 8, mlp_ratio: float = 2.0, dropout: float = 0.1):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.mixer = GlobalAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SVTREncoder(nn.Module):
    """(B, 512, 1, W) -> (B, 64, 1, W): reduce, two global blocks, expand, concatenate with the input, fuse."""

    def __init__(self, in_channels: int = 512, dims: int = NECK_CHANNELS, depth: int = 2, hidden: int = HIDDEN):
        super().__init__()
        self.conv1 = ConvBNSwish(in_channels, in_channels // 8, 3)
        self.conv2 = ConvBNSwish(in_channels // 8, hidden, 1)
        self.svtr_block = nn.ModuleList([SVTRBlock(hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.conv3 = ConvBNSwish(hidden, in_channels, 1)
        self.conv4 = ConvBNSwish(2 * in_channels, in_channels // 8, 3)
        self.conv1x1 = ConvBNSwish(in_channels // 8, dims, 1)

    def forward(self, x: Tensor) -> Tensor:
        z = self.conv2(self.conv1(x))
        b, c, h, w = z.shape
        tokens = z.flatten(2).transpose(1, 2)
        for block in self.svtr_block:
            tokens = block(tokens)
        z = self.norm(tokens).transpose(1, 2).reshape(b, c, h, w)
        z = torch.cat((x, self.conv3(z)), dim=1)  # the shortcut: the encoder's input beside the expanded tokens
        return self.conv1x1(self.conv4(z))


class SequenceNeck(nn.Module):
    """The SVTR encoder on the feature map, then (B, C, H, W) -> (B, H W, C) (H = 1: T = W)."""

    def __init__(self, in_channels: int = 512, dims: int = NECK_CHANNELS):
        super().__init__()
        self.encoder = SVTREncoder(in_channels, dims)

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x).flatten(2).transpose(1, 2)


class CTCHead(nn.Module):
    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class PPOCRv3Recognizer(nn.Module):
    """AnyText's PP-OCRv3 recogniser: lines (B, 3, 48, W) normalised to [-1, 1] -> (probabilities (B, W/8, K),
    neck features (B, W/8, 64)); T = 40 at width 320. State-dict keys are the reference's."""

    def __init__(self, classes: int = CHINESE_CLASSES):
        super().__init__()
        self.backbone = MobileNetV1Enhance()
        self.neck = SequenceNeck(self.backbone.out_channels)
        self.head = CTCHead(NECK_CHANNELS, classes)

    @property
    def classes(self) -> int:
        return int(self.head.fc.out_features)

    @property
    def neck_channels(self) -> int:
        return int(self.head.fc.in_features)

    def logits(self, lines: Tensor) -> tuple[Tensor, Tensor]:
        """(CTC logits (B, T, K), neck features (B, T, C)): what the reference's head returns (`ctc`, `ctc_neck`)."""
        neck = self.neck(self.backbone(lines))
        return self.head(neck), neck

    def forward(self, lines: Tensor) -> tuple[Tensor, Tensor]:
        logits, neck = self.logits(lines)
        return logits.softmax(-1), neck
