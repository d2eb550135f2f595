"""HF-Diff's training objectives.

- `teacher_loss`: ResShift's x0-prediction MSE (ResShift Eq. 9; `zoo.diffusion.resshift`).
- `distill_losses`: SinSR's one-step distillation as the released HF-Diff code computes it
  (`gaussian_diffusion.py`, `training_losses_distill` with learn_xT and finetune_use_gt = 1; SinSR,
  Wang et al. CVPR 2024, Sec. 3.2-3.3), all MSE on latents:
    L_distill = ||f(x_T, T-1) - z0_teacher||^2     (z0_teacher: the teacher's deterministic T-step chain from x_T)
    L_inverse = ||f(z0_teacher, 0) - x_T||^2       (the student learns the inverse map, "learn_xT")
    L_gt      = ||f(sg[f(z_gt, 0)], T-1) - z_gt||^2 (consistency with the ground truth through the inverse)
  each network input scaled by the schedule at t = T-1 (the code's `_scale_input(., t)` even where
  the timestep passed is 0).
- `hf_perceptual_loss`: HF-Diff's high-frequency perceptual loss (paper Sec. 3.2; code: `_details` =
  0.2 * MSE between the INN detail features of z_gt and of the GT-branch prediction).
- `dino_js_loss`: HF-Diff's distribution matching in DINOv2 space (paper Sec. 3.3; not in the released
  code). Form chosen here (the paper's exact form is unverified): each image's DINOv2 CLS embedding is
  turned into a distribution over embedding dimensions, p = softmax(e / tau) (the DINO head's view of
  an embedding as a categorical distribution), and the loss is the Jensen-Shannon divergence
  JS(p_gt, p_sr) = 1/2 KL(p_gt || m) + 1/2 KL(p_sr || m), m = (p_gt + p_sr) / 2, in nats, averaged
  over the batch (bounded by ln 2; the GT side is detached).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HF_WEIGHT = 0.2  # the code's 0.2 * MSE(detail features)


def teacher_loss(pred_x0: Tensor, x0: Tensor) -> Tensor:
    """ResShift Eq. 9 with x0-prediction, unweighted (the released configs' weighted_mse False)."""
    return F.mse_loss(pred_x0, x0)


def distill_losses(student: Any, x_t: Tensor, z0_teacher: Tensor, z_gt: Tensor | None = None) -> dict[str, Tensor]:
    """SinSR's three terms (module docstring). `student(x, t_index)` is one scaled student call
    given the unscaled latent and a timestep index; returns the terms, "pred" (the one-step prediction
    from x_T) and "pred_gt" (the GT branch's prediction, what the HF loss compares) when z_gt is given."""
    b = len(x_t)
    last = torch.full((b,), -1, dtype=torch.int64)  # resolved to T-1 by `student`
    first = torch.zeros(b, dtype=torch.int64)
    out: dict[str, Tensor] = {}
    pred = student(x_t, last)
    out["distill"] = F.mse_loss(pred, z0_teacher)
    out["inverse"] = F.mse_loss(student(z0_teacher, first, scale_at=last), x_t)
    if z_gt is not None:
        with torch.no_grad():
            x_t_gt = student(z_gt, first, scale_at=last)
        pred_gt = student(x_t_gt, last)
        out["gt"] = F.mse_loss(pred_gt, z_gt)
        out["pred_gt"] = pred_gt
    out["pred"] = pred
    return out


def hf_perceptual_loss(inn: Any, pred: Tensor, target: Tensor, weight: float = HF_WEIGHT) -> Tensor:
    """weight * MSE(INN_detail(target), INN_detail(pred)) (HF-Diff Sec. 3.2; the INN is frozen)."""
    _, detail_target = inn.features(target)
    _, detail_pred = inn.features(pred)
    return weight * F.mse_loss(detail_pred, detail_target.detach())


def js_divergence(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """Mean over the batch of JS(softmax(p), softmax(q)) along the last dimension, in nats."""
    logp, logq = F.log_softmax(p_logits, dim=-1), F.log_softmax(q_logits, dim=-1)
    p, q = logp.exp(), logq.exp()
    logm = torch.log((p + q) / 2).clamp_min(-1e4)
    kl_pm = (p * (logp - logm)).sum(-1)
    kl_qm = (q * (logq - logm)).sum(-1)
    return (0.5 * kl_pm + 0.5 * kl_qm).mean()


class DinoEmbedder(nn.Module):
    """Images in [0, 1] -> DINOv2 CLS embeddings (transformers `Dinov2Model`, frozen), ImageNet
    normalisation, resized to `size` (a multiple of the patch size)."""

    mean: Tensor
    std: Tensor

    def __init__(self, model: nn.Module, size: int = 224) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        patch = int(getattr(model.config, "patch_size", 14))
        self.size = max(patch, size // patch * patch)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        x = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        out = self.model(pixel_values=(x - self.mean) / self.std)
        return out.pooler_output


def load_dino(source: str, size: int = 224) -> DinoEmbedder:
    """A local transformers DINOv2 folder (`save_pretrained` layout, e.g. facebook/dinov2-small copied
    beforehand), or "random-small" (a 2-layer random config for tests and CPU plumbing runs)."""
    from transformers import Dinov2Config, Dinov2Model

    if source == "random-small":
        config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              image_size=56, patch_size=14)  # type: ignore[call-arg]
        torch.manual_seed(0)
        return DinoEmbedder(Dinov2Model(config), size=56)
    from pathlib import Path

    if not Path(source).is_dir():
        raise FileNotFoundError(f"DINOv2 weights {source!r}: give a local transformers folder (config.json + model.safetensors); "
                                "nothing is downloaded")
    from .convert import load_dino_folder

    return DinoEmbedder(load_dino_folder(source), size=size)


def dino_js_loss(dino: DinoEmbedder, sr: Tensor, gt: Tensor, temperature: float = 0.1) -> Tensor:
    """JS(softmax(e_gt / tau), softmax(e_sr / tau)) in DINOv2 embedding space (module docstring)."""
    with torch.no_grad():
        e_gt = dino(gt)
    e_sr = dino(sr)
    return js_divergence(e_gt / temperature, e_sr / temperature)
