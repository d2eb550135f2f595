"""PVD losses: the diffusion (point) loss on all vertices, the centre loss, and the Angle Summation Loss.

Angle summation (the paper's ASL; the classical point-in-polygon test, e.g. Hormann & Agathos 2001):
for a point p and a closed polygon v_1..v_K, the angles theta_i subtended at p by the edges
(v_i, v_i+1) sum to 2*pi when p is inside and to 0 when p is outside (signed angles; the winding
number times 2*pi). That sum is piecewise constant in the vertices, so its gradient is zero almost
everywhere: a loss on it cannot train. The paper calls its descriptor differentiable; the exact form
could not be read here, so ours (documented choice) sums the *unsigned* angles
|theta_i| = atan2(|cross|, dot): exactly 2*pi inside a convex polygon, and outside it equals twice
the angle the polygon subtends at p, which falls smoothly from 2*pi on the boundary to 0 far away.
`angle_descriptor` = that sum / 2*pi, a soft occupancy in [0, 1] (it exceeds 1 only inside
non-convex polygons). ASL compares the predicted and the ground-truth polygon's descriptors at
sampled points (L1, mean over points):

    L_ASL = mean_j | A(p_j; P_pred) - A(p_j; P_gt) |

Limit (ours, stated): inside a convex predicted polygon A is exactly 1, so a point inside the
prediction but outside the truth gives no gradient; ASL pulls polygons out to cover the truth and
the point-wise diffusion loss does the rest. The sample points (our choice): half uniform in the
ground-truth box grown by 50 % on each side, half jittered around ground-truth vertices (near the
boundary, where the descriptors differ most).

Diffusion loss (our choice, the paper's "point consistency"): L1 between the predicted x0 and the
ground-truth signal (CAM offsets or absolute coordinates), mean over vertices and coordinates.
Centre loss (our choice): cross-entropy of the centre logits against the cell holding the
ground-truth centre plus L1 of the soft-argmax centre (image-normalised).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def subtended_angles(points: Tensor, polygon: Tensor) -> Tensor:
    """Signed angles (B, P, K) at each point (B, P, 2) between consecutive vertices of (B, K, 2),
    in (-pi, pi] (atan2 of cross and dot of v_i - p and v_i+1 - p)."""
    a = polygon[:, None, :, :] - points[:, :, None, :]
    b = torch.roll(polygon, -1, dims=1)[:, None, :, :] - points[:, :, None, :]
    cross = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    dot = (a * b).sum(-1)
    return torch.atan2(cross, dot)


def winding_angle_sum(points: Tensor, polygon: Tensor) -> Tensor:
    """Sum of signed angles (B, P): +-2*pi inside, 0 outside (the classical test; not trainable)."""
    return subtended_angles(points, polygon).sum(-1)


def angle_sum(points: Tensor, polygon: Tensor, eps: float = 1e-9) -> Tensor:
    """Sum of unsigned angles (B, P): 2*pi inside a convex polygon, smaller outside (differentiable)."""
    a = polygon[:, None, :, :] - points[:, :, None, :]
    b = torch.roll(polygon, -1, dims=1)[:, None, :, :] - points[:, :, None, :]
    cross = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    dot = (a * b).sum(-1)
    # atan2(|cross|, dot) with a smooth |.| so the gradient is defined on the edge lines too
    return torch.atan2(torch.sqrt(cross * cross + eps), dot).sum(-1)


def angle_descriptor(points: Tensor, polygon: Tensor) -> Tensor:
    """The soft occupancy A(p; P) = angle_sum / 2*pi (B, P)."""
    return angle_sum(points, polygon) / (2 * math.pi)


def sample_points(gt_polygon: Tensor, gt_box: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """(B, count, 2) points: half uniform in the GT box grown by 50 % per side, half near GT vertices
    (jitter of 10 % of the box size). Image-normalised coordinates."""
    b = gt_polygon.shape[0]
    device = gt_polygon.device
    half = count // 2
    size = (gt_box[:, 2:] - gt_box[:, :2]).clamp_min(1e-3)
    low = gt_box[:, :2] - 0.5 * size
    uniform = low[:, None] + torch.rand(b, half, 2, generator=generator).to(device) * (2 * size[:, None])
    pick = torch.randint(0, gt_polygon.shape[1], (b, count - half), generator=generator).to(device)
    near = torch.gather(gt_polygon, 1, pick[..., None].expand(-1, -1, 2))
    near = near + torch.randn(b, count - half, 2, generator=generator).to(device) * 0.1 * size[:, None]
    return torch.cat([uniform, near], dim=1)


def angle_summation_loss(pred_polygon: Tensor, gt_polygon: Tensor, points: Tensor) -> Tensor:
    """ASL: mean |A(p; pred) - A(p; gt)| over the sample points (see the module docstring)."""
    with torch.no_grad():
        target = angle_descriptor(points, gt_polygon)
    return (angle_descriptor(points, pred_polygon) - target).abs().mean()


def diffusion_loss(pred_x0: Tensor, target_x0: Tensor) -> Tensor:
    """Point-wise L1 between predicted and ground-truth signals (B, K, 2)."""
    return F.l1_loss(pred_x0, target_x0)


def centre_loss(logits: Tensor, centre: Tensor, gt_centre: Tensor, grid: int) -> tuple[Tensor, Tensor]:
    """(cross-entropy on the GT cell, L1 of the soft-argmax centre); centres image-normalised (x, y)."""
    cell = (gt_centre.clamp(0, 1 - 1e-6) * grid).long()
    target = cell[:, 1] * grid + cell[:, 0]
    return F.cross_entropy(logits, target), F.l1_loss(centre, gt_centre)
