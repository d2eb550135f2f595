"""Multi-scale deformable attention (Zhu et al., "Deformable DETR", ICLR 2021, Sec. 4.1, Eq. 3) in pure PyTorch.

MSDeformAttn(z_q, p_q, {x^l}) = sum_m W_m [ sum_l sum_k A_mlqk * W'_m x^l(phi_l(p_q) + Delta p_mlqk) ]

Each query attends to K = `n_points` sampled locations per head m and level l around its
reference point p_q (normalised [0, 1] coordinates, shared across levels via phi_l). Offsets
Delta p and weights A (softmax over the L*K samples of a head) are linear projections of the
query. Sampling is bilinear with zero padding, done here with `F.grid_sample`
(`align_corners=False`), which is what the official CUDA kernel computes (its pixel centres
sit at (i + 0.5) / W) and what `ms_deform_attn_core_pytorch` in fundamentalvision/Deformable-DETR
does. No custom op: the graph exports to ONNX (GridSample, opset >= 16).

Spatial shapes are Python ints (a list of (H, W)), never tensor values, so that splitting the
flattened value by level is static and needs no control flow on tensors when exported.
Parameter names and initialisation follow the official `models/ops/modules/ms_deform_attn.py`
(`sampling_offsets`, `attention_weights`, `value_proj`, `output_proj`), so official
Deformable DETR / ViDT / Mask2Former / OneFormer checkpoints load by key.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SpatialShapes = Sequence[Sequence[int]]


def as_shape_list(spatial_shapes: SpatialShapes | Tensor) -> list[tuple[int, int]]:
    """Normalise spatial shapes to a list of (H, W) Python ints (tensors are read eagerly, so export
    callers should pass ints)."""
    if isinstance(spatial_shapes, Tensor):
        spatial_shapes = spatial_shapes.tolist()
    return [(int(h), int(w)) for h, w in spatial_shapes]


def level_start_index(spatial_shapes: SpatialShapes | Tensor) -> list[int]:
    """Offsets of each level in the flattened sequence: [0, H0*W0, H0*W0 + H1*W1, ...]."""
    starts, total = [], 0
    for h, w in as_shape_list(spatial_shapes):
        starts.append(total)
        total += h * w
    return starts


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: SpatialShapes | Tensor,
    level_start_index: Sequence[int] | Tensor | None,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """The core of Eq. 3 without the projections.

    Args:
        value: `(N, S, M, D)` flattened multi-level values per head, S = sum_l H_l W_l.
        spatial_shapes: L pairs (H_l, W_l) as Python ints (a tensor is accepted in eager mode).
        level_start_index: offsets of the levels in S; implied by `spatial_shapes`, accepted for
            signature parity with the official op and otherwise unused.
        sampling_locations: `(N, Lq, M, L, P, 2)` (x, y) in [0, 1]; outside samples read zeros.
        attention_weights: `(N, Lq, M, L, P)`, normally softmax-normalised over (L, P).
    Returns:
        `(N, Lq, M * D)`.
    """
    shapes = as_shape_list(spatial_shapes)
    _, _, n_heads, head_dim = value.shape
    n_queries, n_levels, n_points = sampling_locations.shape[1], sampling_locations.shape[3], sampling_locations.shape[4]
    value_list = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample wants [-1, 1]
    sampled = []
    for lid, (h, w) in enumerate(shapes):
        # (N, HW, M, D) -> (N*M, D, H, W)
        value_l = value_list[lid].flatten(2).transpose(1, 2).reshape(-1, head_dim, h, w)
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        grid_l = grids[:, :, :, lid].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
    # (N, Lq, M, L, P) -> (N*M, 1, Lq, L*P)
    weights = attention_weights.transpose(1, 2).reshape(-1, 1, n_queries, n_levels * n_points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)  # (N*M, D, Lq)
    return out.reshape(-1, n_heads * head_dim, n_queries).transpose(1, 2).contiguous()


def encoder_reference_points(spatial_shapes: SpatialShapes | Tensor, valid_ratios: Tensor) -> Tensor:
    """Reference points of an encoder over its own pixels (Deformable DETR encoder, Sec. 4.1):
    each pixel centre, normalised by the valid (unpadded) extent of its level, then mapped into
    every level. `valid_ratios` `(N, L, 2)` (w, h) -> `(N, S, L, 2)`."""
    refs = []
    for lvl, (h, w) in enumerate(as_shape_list(spatial_shapes)):
        ys, xs = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=valid_ratios.dtype, device=valid_ratios.device),
            torch.linspace(0.5, w - 0.5, w, dtype=valid_ratios.dtype, device=valid_ratios.device),
            indexing="ij",
        )
        ref_y = ys.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
        ref_x = xs.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
        refs.append(torch.stack((ref_x, ref_y), -1))
    reference_points = torch.cat(refs, 1)
    return reference_points[:, :, None] * valid_ratios[:, None]


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (Deformable DETR, Eq. 3), official names and init.

    `spatial_shapes` may be fixed at construction (a list of (H, W) ints) or passed per call.
    """

    def __init__(
        self,
        d_model: int = 256,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
        spatial_shapes: SpatialShapes | None = None,
    ):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model must be divisible by n_heads, got {d_model} and {n_heads}")
        head_dim = d_model // n_heads
        if head_dim & (head_dim - 1) != 0:
            warnings.warn("a power-of-2 head dim is more efficient in the official CUDA kernel", stacklevel=2)
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.spatial_shapes = as_shape_list(spatial_shapes) if spatial_shapes is not None else None
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Official init: offsets start on a ring of 8 directions, point k at distance k+1 (in pixels
        of each level); uniform attention; Xavier value/output projections."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        input_spatial_shapes: SpatialShapes | Tensor | None = None,
        input_level_start_index: Sequence[int] | Tensor | None = None,
        input_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Args:
            query: `(N, Lq, C)` (content + position embedding).
            reference_points: `(N, Lq, L, 2)` normalised (x, y), or `(N, Lq, L, 4)` boxes (cx, cy, w, h),
                in which case offsets are scaled by half the box size / n_points (two-stage / box refinement).
            input_flatten: `(N, S, C)` flattened multi-level features.
            input_spatial_shapes: L (H, W) ints; defaults to the shapes given at construction.
            input_level_start_index: accepted for parity with the official signature; implied by the shapes.
            input_padding_mask: `(N, S)` True at padded positions (their values are zeroed).
        Returns:
            `(N, Lq, C)`.
        """
        shapes = self.spatial_shapes if input_spatial_shapes is None else as_shape_list(input_spatial_shapes)
        if shapes is None:
            raise ValueError("spatial shapes are needed: pass them at construction or per call")
        if len(shapes) != self.n_levels:
            raise ValueError(f"expected {self.n_levels} levels, got {len(shapes)}")
        n, len_q, _ = query.shape
        len_in = input_flatten.shape[1]
        head_dim = self.d_model // self.n_heads
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, len_in, self.n_heads, head_dim)
        offsets = self.sampling_offsets(query).view(n, len_q, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(n, len_q, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(n, len_q, self.n_heads, self.n_levels, self.n_points)
        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: divide by (W_l, H_l)
            normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
            locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            locations = (
                reference_points[:, :, None, :, None, :2]
                + offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        else:
            raise ValueError(f"reference_points must end in 2 or 4, got {reference_points.shape[-1]}")
        output = ms_deform_attn(value, shapes, input_level_start_index, locations, weights)
        return self.output_proj(output)
