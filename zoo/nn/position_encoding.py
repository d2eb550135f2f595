"""2D position embeddings for image features (DETR, Carion et al., ECCV 2020, Sec. 3.2 and App. A.4).

- `PositionEmbeddingSine`: the transformer's sinusoids (Vaswani et al. 2017, Sec. 3.5) applied
  independently to y and x, each with `num_pos_feats` channels (output 2 * num_pos_feats).
  Coordinates are the cumulative count of valid (unpadded) pixels, so padding does not shift
  positions; with `normalize=True` they are scaled to (0, scale], scale = 2*pi. DETR,
  Mask2Former/OneFormer and ViDT (`masked_sin_pos_encoding` in `methods/swin_w_ram.py`, used by
  RAM's cross-attention) normalise `y / y_max`: `offset=0.0`, the default; Deformable DETR's
  `PositionEmbeddingSine` uses pixel centres, `(y - 0.5) / y_max`: `offset=-0.5`.
- `PositionEmbeddingLearned`: DETR's learned absolute embedding, one table for rows and one
  for columns (at most 50 each), concatenated.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PositionEmbeddingSine(nn.Module):
    """Sine/cosine embedding `(B, 2 * num_pos_feats, H, W)` from a padding mask `(B, H, W)` (True = padded)."""

    def __init__(
        self,
        num_pos_feats: int = 64,
        temperature: float = 10000.0,
        normalize: bool = False,
        scale: float | None = None,
        offset: float = 0.0,
    ):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("normalize should be True if scale is passed")
        self.num_pos_feats, self.temperature, self.normalize = num_pos_feats, temperature, normalize
        self.scale = 2 * math.pi if scale is None else scale
        self.offset = offset

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """`x` `(B, C, H, W)` gives the shape, device and dtype; `mask` defaults to no padding."""
        if mask is None:
            mask = torch.zeros((x.shape[0], x.shape[2], x.shape[3]), dtype=torch.bool, device=x.device)
        not_mask = (~mask).to(torch.float32)
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        if self.normalize:
            eps = 1e-6
            y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        # interleave: channel 2i is sin, 2i+1 is cos of the same frequency
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos = torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
        return pos.to(x.dtype)


class PositionEmbeddingLearned(nn.Module):
    """Learned absolute embedding `(B, 2 * num_pos_feats, H, W)`: column table then row table (DETR)."""

    def __init__(self, num_pos_feats: int = 256, max_size: int = 50):
        super().__init__()
        self.row_embed = nn.Embedding(max_size, num_pos_feats)
        self.col_embed = nn.Embedding(max_size, num_pos_feats)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """`x` `(B, C, H, W)` with H, W <= max_size; `mask` is ignored (positions are absolute)."""
        b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        if h > self.row_embed.num_embeddings or w > self.col_embed.num_embeddings:
            raise ValueError(f"feature map {h}x{w} exceeds the learned table ({self.row_embed.num_embeddings})")
        x_emb = self.col_embed(torch.arange(w, device=x.device))
        y_emb = self.row_embed(torch.arange(h, device=x.device))
        pos = torch.cat([x_emb[None].expand(h, -1, -1), y_emb[:, None].expand(-1, w, -1)], dim=-1)
        return pos.permute(2, 0, 1)[None].expand(b, -1, -1, -1).to(x.dtype)
