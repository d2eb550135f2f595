"""EfficientAD training objectives and statistics (Batzner et al., WACV 2024, arXiv 2303.14535).

Paper sections named below: Sec. 3.1 (efficient patch descriptor: distilling a pretrained
backbone into the PDN teacher), Sec. 3.2 (lightweight student–teacher: hard feature loss and
pretraining penalty), Sec. 3.3 (logical anomaly detection: autoencoder and the student's
autoencoder channels), Sec. 3.4 (anomaly map normalisation by validation quantiles), and
Algorithm 1 of the appendix (the training procedure that puts them together).

Facts checked against nelson1425/EfficientAD (`efficientad.py`, `pretraining.py`) and
anomalib's `efficient_ad` model. Where the two differ we say which we follow.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torchvision.transforms.v2 import functional as TF

# torch.quantile refuses inputs with more than 2**24 elements.
QUANTILE_MAX_ELEMENTS = 2**24


def subsample(values: torch.Tensor, max_elements: int = QUANTILE_MAX_ELEMENTS,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Flatten `values` and keep at most `max_elements` of them, drawn without replacement.

    `generator=None` draws from torch's global RNG (which the training loop checkpoints,
    so a resumed run draws the same subset)."""
    flat = values.reshape(-1)
    if flat.numel() <= max_elements:
        return flat
    index = torch.randperm(flat.numel(), generator=generator, device=generator.device if generator else "cpu")
    return flat[index[:max_elements].to(flat.device)]


def hard_feature_loss(teacher: torch.Tensor, student: torch.Tensor, q: float = 0.999,
                      max_elements: int = QUANTILE_MAX_ELEMENTS,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Hard feature loss L_hard (Sec. 3.2, "hard feature loss"; Algorithm 1).

    D_{c,w,h} = (T(I)_{c,w,h} - S(I)_{c,w,h})^2 over every channel and position; d_hard is the
    q-quantile of D (p_hard = 0.999 in the paper); L_hard = mean of all D >= d_hard.

    `teacher` is the normalised teacher output (B, C, H, W); `student` the student's first C
    channels (or its full 2C output, whose first C are used). The quantile is estimated on a
    random subset of at most `max_elements` values (torch.quantile's limit); the mean runs over
    *all* elements at or above it (anomalib instead keeps only the subset)."""
    student = student[:, : teacher.shape[1]]
    distance = (teacher - student) ** 2
    # float32 for the quantile: under autocast the distances may be bf16/fp16, which it rejects
    d_hard = torch.quantile(subsample(distance.detach().float(), max_elements, generator), q)
    return distance[distance >= d_hard].mean()


def penalty_loss(student_on_penalty: torch.Tensor, channels: int) -> torch.Tensor:
    """Pretraining penalty (Sec. 3.2; Algorithm 1): (C W H)^-1 sum_c ||S(P)_c||_F^2.

    `student_on_penalty` is the student's output on ImageNet-like images P, (B, 2C, H, W);
    the penalty keeps the teacher-imitating channels [:C] small off the training distribution,
    so the student does not imitate the teacher beyond normal images."""
    return (student_on_penalty[:, :channels] ** 2).mean()


def _student_ae_channels(student_ae: torch.Tensor, channels: int) -> torch.Tensor:
    """The student's autoencoder-predicting channels: the last C of a 2C output, or the tensor
    itself when it already holds exactly C channels."""
    if student_ae.shape[1] == 2 * channels:
        return student_ae[:, channels:]
    if student_ae.shape[1] == channels:
        return student_ae
    raise ValueError(f"student output has {student_ae.shape[1]} channels; expected {channels} or {2 * channels}")


def autoencoder_losses(teacher: torch.Tensor, ae_out: torch.Tensor,
                       student_ae: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Autoencoder losses (Sec. 3.3; Algorithm 1), all on the colour-jittered image I':

    L_AE   = (C W H)^-1 sum_c ||T(I')_c - A(I')_c||_F^2    (AE learns the normalised teacher)
    L_STAE = (C W H)^-1 sum_c ||A(I')_c - S'(I')_c||_F^2   (student's last C channels learn the AE)

    Like both reference implementations, the AE output is not detached in L_STAE: the
    gradient reaches the autoencoder from both terms. `student_ae` is the student output on
    I' (2C channels, or its last C). Returns (L_AE, L_STAE)."""
    channels = teacher.shape[1]
    loss_ae = ((teacher - ae_out) ** 2).mean()
    loss_stae = ((ae_out - _student_ae_channels(student_ae, channels)) ** 2).mean()
    return loss_ae, loss_stae


def total_loss(teacher: torch.Tensor, student: torch.Tensor, teacher_aug: torch.Tensor,
               ae_out: torch.Tensor, student_aug: torch.Tensor,
               student_on_penalty: torch.Tensor | None = None, q: float = 0.999,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """L_total = L_hard + L_penalty + L_AE + L_STAE (Algorithm 1).

    teacher/student: normalised teacher and student outputs on the training image I;
    teacher_aug/ae_out/student_aug: the same three on the jittered image I'; student_on_penalty:
    the student on pretraining images P, or None to drop the penalty (as the reference does
    without an ImageNet path). Returns the total as "loss" and each term for logging."""
    channels = teacher.shape[1]
    hard = hard_feature_loss(teacher, student, q, generator=generator)
    penalty = (penalty_loss(student_on_penalty, channels) if student_on_penalty is not None
               else hard.new_zeros(()))
    loss_ae, loss_stae = autoencoder_losses(teacher_aug, ae_out, student_aug)
    return {"loss": hard + penalty + loss_ae + loss_stae, "hard": hard, "penalty": penalty,
            "ae": loss_ae, "stae": loss_stae}


def map_quantiles(maps: torch.Tensor | Sequence[torch.Tensor], q_a: float = 0.9, q_b: float = 0.995,
                  max_elements: int = QUANTILE_MAX_ELEMENTS,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantiles q_a and q_b of anomaly-map values on validation images (Sec. 3.4).

    The normalised map is 0.1 * (m - q_a) / (q_b - q_a): q_a maps to 0 and q_b to 0.1, so the
    student–teacher and autoencoder maps reach comparable scales before they are averaged.
    Above 2**24 values the quantiles come from a random subset; a fixed-seed generator is used
    when none is given so calibration is reproducible."""
    if not isinstance(maps, torch.Tensor):
        maps = torch.cat([m.reshape(-1) for m in maps])
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    values = subsample(maps.detach().float(), max_elements, generator)
    return torch.quantile(values, q_a), torch.quantile(values, q_b)


@torch.no_grad()
def teacher_channel_stats(features: Iterable[torch.Tensor], eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of teacher outputs over the training images (Sec. 3.2 normalises
    the teacher by them; Algorithm 1).

    The reference (nelson1425 `teacher_normalization`, batch 1) takes the channel mean over all
    images and positions, then the std as the root of the mean squared deviation from that
    mean: the population std over every (image, position). We get the same numbers in one
    pass by merging per-batch moments (Chan et al.) in float64, which stays exact when batches
    differ in size and avoids the cancellation of a sum-of-squares formula.

    The std is floored at `eps`: a constant channel (a dead ReLU of a randomly initialised or
    poorly distilled network) then standardises to 0 where the reference would divide 0 by 0.

    `features`: iterable of (B, C, H, W) teacher outputs. Returns mean, std of shape (1, C, 1, 1)."""
    count = 0
    mean: torch.Tensor | None = None
    m2: torch.Tensor | None = None
    for feat in features:
        x = feat.detach().double().transpose(0, 1).reshape(feat.shape[1], -1)
        n_b = x.shape[1]
        mean_b = x.mean(dim=1)
        m2_b = ((x - mean_b[:, None]) ** 2).sum(dim=1)
        if mean is None or m2 is None:
            count, mean, m2 = n_b, mean_b, m2_b
            continue
        delta = mean_b - mean
        total = count + n_b
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + delta**2 * (count * n_b / total)
        count = total
    if mean is None or m2 is None:
        raise ValueError("teacher_channel_stats needs at least one batch of features")
    std = (m2 / count).sqrt().clamp_min(eps)
    return mean.float()[None, :, None, None], std.float()[None, :, None, None]


def distillation_loss(prediction: torch.Tensor, target: torch.Tensor,
                      target_mean: torch.Tensor | None = None,
                      target_std: torch.Tensor | None = None) -> torch.Tensor:
    """Teacher pretraining loss (Sec. 3.1; nelson1425 `pretraining.py`): mean squared error
    between the padded PDN's output and the backbone's aggregated patch features, the target
    first standardised per channel with the given mean/std (computed over pretraining images)."""
    if target_mean is not None and target_std is not None:
        target = (target - target_mean) / target_std
    return ((target - prediction) ** 2).mean()


_JITTERS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)


def color_jitter(images: torch.Tensor, low: float = 0.8, high: float = 1.2,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Autoencoder input augmentation (Sec. 3.3; Algorithm 1): for each image pick one of
    brightness, contrast or saturation uniformly and a factor lambda ~ U(0.8, 1.2).

    Matches the reference's RandomChoice of ColorJitter(brightness=0.2) / (contrast=0.2) /
    (saturation=0.2). `images` are (B, 3, H, W) in [0, 1]. Draws come from `generator`, or
    from torch's global RNG (checkpointed by the loop) when it is None."""
    out = []
    for image in images:
        choice = int(torch.randint(len(_JITTERS), (1,), generator=generator))
        factor = float(torch.empty(()).uniform_(low, high, generator=generator))
        out.append(_JITTERS[choice](image, factor))
    return torch.stack(out)

