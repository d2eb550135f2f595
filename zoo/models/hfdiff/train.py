"""HF-Diff training stages for the shared loop (`zoo train hfdiff --stage S`), run in this order,
each from the previous stage's weights (`--weights RUN/model.safetensors`):

- `inn`: our invertible network pretrained on the codec's latents of HR crops (invertible.py).
- `teacher`: ResShift (15 steps, kappa 2, x0-prediction) on (LR, HR) pairs (ResShift Eq. 9).
- `distill`: SinSR's one-step distillation of the frozen teacher into the student (loss.py); the
  student starts as a copy of the teacher (SinSR initialises it so).
- `hf`: distill + HF-Diff's high-frequency perceptual loss (0.2 MSE on INN detail features).
- `dino`: hf + the Jensen-Shannon distribution matching in DINOv2 space (`--set dino=FOLDER`).

Data: "synthetic" = the bundled scikit-image photographs and procedural textures, or a folder of HR
images; LR made on the fly by Real-ESRGAN's second-order degradation (`zoo.data.degradation`).
Paper defaults (HF-Diff.yaml / ResShift realsr config): GT 256, batch 32 (teacher 64), lr 2.5e-5
(teacher 5e-5), EMA 0.999, Adam, no weight decay; the micro variant overrides these (see __init__.py).
Each stage's `finalize` scores the student (and the teacher, bicubic) on held-out degraded crops:
PSNR / SSIM on Y and the wavelet high-frequency error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.diffusion.resshift import sample_resshift
from zoo.trainable import TrainConfig, TrainTask

from .invertible import inn_pretrain_loss
from .loss import DinoEmbedder, dino_js_loss, distill_losses, hf_perceptual_loss, load_dino, teacher_loss
from .model import HFDiffModel


@dataclass
class HFDiffTrainConfig(TrainConfig):
    """Shared fields of every stage (HF-Diff.yaml defaults)."""

    steps: int = 500_000
    batch_size: int = 32
    lr: float = 2.5e-5
    ema_decay: float = 0.999
    gt_size: int = 256
    train_images: int = 1_000_000  # virtual length of the on-the-fly pair set
    val_images: int = 32  # held-out degraded crops scored by finalize
    autoencoder: str = "registry"  # the frozen codec: "registry" (bundled autoencoder-kl), a path, or "keep"
    hf_weight: float = 0.0  # multiplies HF-Diff's 0.2 * MSE(INN details)
    js_weight: float = 0.0  # multiplies the DINOv2 JS term
    dino: str = ""  # a local transformers DINOv2 folder, or "random-small"
    dino_size: int = 224
    js_temperature: float = 0.1
    inn_detail_weight: float = 1.0  # INN pretraining: reconstruction term weight


@dataclass
class INNTrainConfig(HFDiffTrainConfig):
    steps: int = 20_000
    lr: float = 1e-4
    ema_decay: float = 0.0


@dataclass
class TeacherTrainConfig(HFDiffTrainConfig):
    """ResShift's realsr config: lr 5e-5, batch 64, 300k iterations (warm-up 5k), EMA 0.999."""

    steps: int = 300_000
    batch_size: int = 64
    lr: float = 5e-5
    warmup_steps: int = 5000


@dataclass
class DistillTrainConfig(HFDiffTrainConfig):
    """SinSR's losses only."""


@dataclass
class HFTrainConfig(HFDiffTrainConfig):
    hf_weight: float = 1.0


@dataclass
class DinoTrainConfig(HFDiffTrainConfig):
    hf_weight: float = 1.0
    js_weight: float = 0.1  # unverified in the paper; our default


# --------------------------------------------------------------------------- shared set-up


def load_codec(model: HFDiffModel, source: str) -> None:
    """Fill the frozen codec: the registry's bundled autoencoder-kl (kl variants), a path (our
    safetensors, or an official VQGAN f4 checkpoint for the paper variant), or keep what it holds."""
    if source == "keep" or model.is_ready("codec"):
        return
    if source == "registry":
        if model.config.autoencoder_kind != "kl":
            raise ValueError("the paper variant's VQGAN f4 has no bundled weights: --set autoencoder=PATH "
                             "(ResShift's autoencoder_vq_f4.pth)")
        from zoo.registry import create_model

        codec = create_model("autoencoder-kl", model.config.autoencoder_variant or "micro-f4").model
        model.codec.load_state_dict(codec.state_dict())
    else:
        from .convert import load_autoencoder_into

        load_autoencoder_into(model, source)
    model.mark_ready("codec")


def hr_images(data: str) -> tuple[list[Any], str]:
    from zoo.data.degradation import bundled_hr_images

    if data == "synthetic":
        return bundled_hr_images(), "bundled scikit-image photographs + procedural textures"
    import numpy as np

    from zoo.data._io import list_images, read_rgb

    paths = list_images(data, recursive=True)
    if not paths:
        raise FileNotFoundError(f"{data}: no images")
    return [np.asarray(read_rgb(p)) for p in paths], f"{data} ({len(paths)} HR images)"


def pair_sets(data: str, config: HFDiffTrainConfig, scale: int, seed: int) -> tuple[Any, Any, str]:
    from zoo.data.degradation import DegradationConfig, DegradedPairs

    images, description = hr_images(data)
    deg = DegradationConfig(scale=scale)
    train = DegradedPairs(images, config.gt_size, seed=seed, length=config.train_images, config=deg)
    val = DegradedPairs(images, config.gt_size, seed=seed + 10_007, length=config.val_images, config=deg, hflip=False)
    return train, val, description


def _freeze_all_but(model: HFDiffModel, part: str) -> None:
    for name, child in model.named_children():
        child.requires_grad_(name == part)


class _Base(nn.Module):
    def __init__(self, model: HFDiffModel, config: HFDiffTrainConfig) -> None:
        super().__init__()
        self.model, self.config = model, config

    @torch.no_grad()
    def latents(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(LR, LQ condition in [-1, 1], y0 = latent of the upsampled LR, z_gt)."""
        m = self.model
        device = next(m.unet.parameters()).device
        lq, gt = batch["lq"].to(device), batch["gt"].to(device)
        return lq, m.lq_condition(lq), m.encode_lr(lq), m.codec.encode(gt)


class INNTrainable(_Base):
    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        _, _, _, z_gt = self.latents(batch)
        return inn_pretrain_loss(self.model.inn, z_gt, self.config.inn_detail_weight)


class TeacherTrainable(_Base):
    """ResShift: t ~ U{0..T-1}, x_t = q_sample(z_gt, y0, t), MSE(f(x_t, y0, t), z_gt)."""

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        m = self.model
        _, cond, y0, z_gt = self.latents(batch)
        t = torch.randint(0, m.config.steps, (len(z_gt),), device=z_gt.device)
        x_t = m.schedule.q_sample(z_gt, y0, t, torch.randn_like(z_gt))
        loss = teacher_loss(m.predict_x0(m.teacher, x_t, t, cond), z_gt)
        return {"loss": loss}


class DistillTrainable(_Base):
    """SinSR distillation (+ HF loss + DINOv2 JS, by the config's weights) of the frozen teacher."""

    def __init__(self, model: HFDiffModel, config: HFDiffTrainConfig, dino: DinoEmbedder | None = None) -> None:
        super().__init__(model, config)
        self.dino = dino

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        m, cfg = self.model, self.config
        _, cond, y0, z_gt = self.latents(batch)
        noise = torch.randn_like(y0)
        x_t = m.schedule.prior_sample(y0, noise)
        with torch.no_grad():  # the teacher's deterministic 15-step chain from the same x_T
            z0_teacher = sample_resshift(lambda x, t: m.predict_x0(m.teacher, x, t.to(x.device), cond), m.schedule, y0, noise,
                                         method="ddim")
        last = m.config.steps - 1

        def student(x: Tensor, t: Tensor, scale_at: Tensor | None = None) -> Tensor:
            t = torch.where(t < 0, torch.full_like(t, last), t).to(x.device)
            s = t if scale_at is None else torch.where(scale_at < 0, torch.full_like(scale_at, last), scale_at).to(x.device)
            return m.unet(m.schedule.scale_input(x, s), t, cond)

        terms = distill_losses(student, x_t, z0_teacher, z_gt)
        pred_gt = terms.pop("pred_gt")
        pred = terms.pop("pred")
        loss = terms["distill"] + terms["inverse"] + terms["gt"]
        out = {k: v.detach() for k, v in terms.items()}
        if cfg.hf_weight > 0:
            hf = hf_perceptual_loss(m.inn, pred_gt, z_gt)
            loss = loss + cfg.hf_weight * hf
            out["hf"] = hf.detach()
        if cfg.js_weight > 0:
            if self.dino is None:
                raise ValueError("js_weight > 0 needs a DINOv2 network: --set dino=FOLDER (or random-small)")
            sr = m.codec.decode(pred).clamp(0, 1)
            gt = batch["gt"].to(sr.device)
            js = dino_js_loss(self.dino, sr, gt, cfg.js_temperature)
            loss = loss + cfg.js_weight * js
            out["js"] = js.detach()
        return {"loss": loss, **out}


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def teacher_sample(model: HFDiffModel, y0: Tensor, cond: Tensor, noise: Tensor, gen: torch.Generator) -> Tensor:
    """The teacher's 15-step ancestral chain (ResShift's sampler) from x_T = prior_sample(y0, noise)."""
    device = y0.device
    return sample_resshift(lambda x, t: model.predict_x0(model.teacher, x, t.to(device), cond), model.schedule, y0, noise,
                           draw_noise=lambda: torch.randn(y0.shape, generator=gen).to(device))


@torch.no_grad()
def evaluate_sr(model: HFDiffModel, val: Any, teacher: bool = False, seed: int = 0, batch_size: int = 8) -> dict[str, float]:
    """PSNR-Y / SSIM-Y / wavelet HF error of bicubic, the one-step student and (teacher=True) the
    15-step teacher on the held-out pairs (whole crops, no tiling)."""
    from zoo.metrics.image import sr_metrics

    was = model.training
    model.eval()
    device = next(model.unet.parameters()).device
    items = [val[i] for i in range(len(val))]
    lq = torch.stack([it["lq"] for it in items]).to(device)
    gt = torch.stack([it["gt"] for it in items]).to(device)
    gen = torch.Generator().manual_seed(seed)
    outs: dict[str, list[Tensor]] = {"bicubic": [], "student": [], "teacher": []}
    for i in range(0, len(items), batch_size):
        lr = lq[i : i + batch_size]
        outs["bicubic"].append(F.interpolate(lr, scale_factor=float(model.config.scale), mode="bicubic").clamp(0, 1))
        y0 = model.encode_lr(lr)
        noise = torch.randn(y0.shape, generator=gen).to(device)
        cond = model.lq_condition(lr)
        t_last = torch.full((len(lr),), model.config.steps - 1, dtype=torch.int64, device=device)
        x0 = model.predict_x0(model.unet, model.schedule.prior_sample(y0, noise), t_last, cond)
        outs["student"].append(model.codec.decode(x0).clamp(0, 1))
        if teacher:
            outs["teacher"].append(model.codec.decode(teacher_sample(model, y0, cond, noise, gen)).clamp(0, 1))
    model.train(was)
    metrics: dict[str, float] = {}
    for name, preds in outs.items():
        if preds:
            for key, value in sr_metrics(torch.cat(preds), gt).items():
                metrics[f"{name}_{key}"] = value
    return metrics


# --------------------------------------------------------------------------- tasks


def _task(model: HFDiffModel, data: str, config: HFDiffTrainConfig, seed: int, module: nn.Module, part: str,
          finalize_teacher: bool) -> TrainTask:
    train, val, description = pair_sets(data, config, model.config.scale, seed)
    _freeze_all_but(model, part)
    model.codec.eval()

    # marked before the loop copies the module (its EMA copies buffers every step), so the saved
    # weights say which parts they hold trained
    model.mark_ready("student" if part == "unet" else part)

    def finalize(module: nn.Module) -> dict[str, float]:
        if part == "inn" or config.val_images <= 0:
            return {}
        return evaluate_sr(cast(HFDiffModel, module.model), val, teacher=finalize_teacher, seed=seed)

    def parameters(module: nn.Module) -> Any:
        return [p for p in getattr(module.model, part).parameters() if p.requires_grad]

    return TrainTask(module=module, dataset=train, config=config, finalize=finalize, parameters=parameters,
                     to_pipeline=lambda m: cast(nn.Module, m.model), extra={"data": description})


def build_inn_task(model: HFDiffModel, data: str, config: HFDiffTrainConfig, seed: int, workdir: Path) -> TrainTask:
    load_codec(model, config.autoencoder)
    return _task(model, data, config, seed, INNTrainable(model, config), "inn", False)


def build_teacher_task(model: HFDiffModel, data: str, config: HFDiffTrainConfig, seed: int, workdir: Path) -> TrainTask:
    load_codec(model, config.autoencoder)
    return _task(model, data, config, seed, TeacherTrainable(model, config), "teacher", True)


def build_distill_task(model: HFDiffModel, data: str, config: HFDiffTrainConfig, seed: int, workdir: Path) -> TrainTask:
    """distill / hf / dino: the student from the frozen teacher (copied into the student on the first run)."""
    load_codec(model, config.autoencoder)
    if not model.is_ready("teacher"):
        raise ValueError("distillation needs a trained teacher: start from the teacher stage's weights (--weights RUN/model.safetensors)")
    if config.hf_weight > 0 and not model.is_ready("inn"):
        raise ValueError("the HF loss needs the pretrained INN: run --stage inn first and pass its weights")
    if not model.is_ready("student"):
        model.unet.load_state_dict(model.teacher.state_dict())
    dino = load_dino(config.dino, config.dino_size) if config.js_weight > 0 and config.dino else None
    if config.js_weight > 0 and dino is None:
        raise ValueError("the dino stage needs DINOv2 weights: --set dino=FOLDER (a local transformers Dinov2Model folder) "
                         "or --set dino=random-small (a random test network)")
    model.teacher.eval()
    return _task(model, data, config, seed, DistillTrainable(model, config, dino), "unet", False)
