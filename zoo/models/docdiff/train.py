"""DocDiff training as a `TrainTask` for the shared loop in `training/` (reference `src/trainer.py`).

One step (paper Sec. 3, training objective): t ~ U{0, ..., T-1}; CP(x); r = GT - CP(x); r_t = sqrt(g_t) r +
sqrt(1 - g_t) eps; r_hat = HRR(r_t || sg(CP(x)), t); loss L_diff(r_hat, r) + 50 L_CP / T.
As the reference does, only the HRR's conditioning input is detached: the residual target r
(and r_t) keep their gradient to the CP, so L_diff also trains the CP.

Defaults are the paper's: AdamW, lr 1e-4, weight decay 1e-4, batch 32, 128 x 128 crops padded
white with RandomAffine(10) and a 0.2 horizontal flip, EMA 0.9999. (The reference updates its EMA
only every 100 steps after 2 000; the shared loop updates every step, so the same decay
averages over fewer effective steps; `ema_decay` is a field.) `data`: "synthetic" writes
procedural pages for the variant's task (`zoo.data.documents`) under WORKDIR/data/TASK, or a
paired folder (degraded/ + clean/, see `zoo.data.paired`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.trainable import TrainConfig, TrainTask

from .loss import coarse_loss, diffusion_loss, total_loss
from .model import DocDiff, sample


@dataclass
class DocDiffTrainConfig(TrainConfig):
    """Paper / conf.yml defaults (ITERATION_MAX 1e6, BATCH_SIZE 32, LR 1e-4, BETA_LOSS 50)."""

    steps: int = 1_000_000
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    ema_decay: float = 0.9999
    ckpt_every: int = 10_000
    beta_loss: float = 50.0  # beta in L = L_diff + beta L_CP / T
    high_weight: float = 2.0  # weight of the Laplacian terms in L_diff and L_CP
    crop_size: int = 128
    degrees: float = 10.0  # RandomAffine
    hflip: float = 0.2
    task: str = ""  # procedural degradation; "" = the variant's (config.task)
    pages: int = 256  # procedural training pages
    page_size: int = 256  # procedural page height and width
    val_pages: int = 8  # held-out procedural pages (split "val") for the final metrics
    val_steps: int = 5  # sampling steps of the final evaluation
    crops_per_epoch: int = 100_000  # virtual dataset length (crops are drawn per index)


class DocDiffTrainable(nn.Module):
    """Wraps the model with the training step; `model` is what gets saved."""

    def __init__(self, model: DocDiff, config: DocDiffTrainConfig) -> None:
        super().__init__()
        self.model = model
        self.beta_loss = config.beta_loss
        self.high_weight = config.high_weight

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device = self.model.gammas_ext.device
        degraded, clean = batch["degraded"].to(device), batch["clean"].to(device)
        timesteps = self.model.config.timesteps
        t = torch.randint(0, timesteps, (len(clean),), device=device)
        coarse = self.model.coarse(degraded)
        residual = clean - coarse
        noisy = self.model.q_sample(residual, t, torch.randn_like(residual))
        pred = self.model.predict_residual(noisy, coarse.detach(), t)
        l_diff = diffusion_loss(pred, residual, self.high_weight)
        l_cp = coarse_loss(coarse, clean, self.high_weight)
        loss = total_loss(l_diff, l_cp, timesteps, self.beta_loss)
        return {"loss": loss, "l_diff": l_diff.detach(), "l_cp": l_cp.detach()}


def _procedural(workdir: Path, task: str, count: int, seed: int, split: str, size: int) -> Path:
    """Generate (or reuse, when its meta.json matches every argument) a procedural paired folder.

    A folder that does not match is emptied first, so that no page of an earlier, larger set
    (or of another page size) stays behind for `PairedFolder` to pick up."""
    from zoo.data.documents import GENERATOR_VERSION, generate_document_pairs

    folder = workdir / "data" / f"{task}-{split}"
    meta = folder / "meta.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        if (info.get("version"), info.get("count"), info.get("seed"), info.get("task"), info.get("size")) == (
                GENERATOR_VERSION, count, seed, task, [size, size]):
            return folder
        meta.unlink()
    for sub in ("degraded", "clean"):
        shutil.rmtree(folder / sub, ignore_errors=True)
    return generate_document_pairs(folder, task=task, count=count, seed=seed, split=split, size=(size, size))


@torch.no_grad()
def evaluate_restoration(model: DocDiff, dataset: Any, steps: int, seed: int = 0, batch_size: int = 8) -> dict[str, float]:
    """PSNR / SSIM / Laplacian error of input, CP and CP + HRR on a crop dataset."""
    from zoo.metrics.image import restoration_metrics

    was_training = model.training
    model.eval()
    device = model.gammas_ext.device
    items = [dataset[i] for i in range(len(dataset))]
    degraded = torch.stack([it["degraded"] for it in items]).to(device)
    clean = torch.stack([it["clean"] for it in items]).to(device)
    gen = torch.Generator().manual_seed(seed)
    outs, coarses = [], []
    for i in range(0, len(items), batch_size):
        d = degraded[i : i + batch_size]
        noise = torch.randn(d.shape, generator=gen).to(device)
        out, coarse = sample(model, d, steps, noise)
        outs.append(out.clamp(0, 1))
        coarses.append(coarse.clamp(0, 1))
    model.train(was_training)
    metrics: dict[str, float] = {}
    for name, pred in (("input", degraded), ("cp", torch.cat(coarses)), ("docdiff", torch.cat(outs))):
        for key, value in restoration_metrics(pred, clean).items():
            metrics[f"{name}_{key}"] = value
    return metrics


def build_task(model: DocDiff, data: str, config: DocDiffTrainConfig, seed: int, workdir: Path) -> TrainTask:
    """The joint CP + HRR training on paired documents ("synthetic": procedural pages)."""
    from zoo.data.paired import PairedCrops, PairedFolder

    task = config.task or model.config.task
    workdir = Path(workdir)
    val_set = None
    if data == "synthetic":
        folder = _procedural(workdir, task, config.pages, seed, "train", config.page_size)
        val_folder = _procedural(workdir, task, config.val_pages, seed, "val", config.page_size)
        if config.val_pages > 0:
            val_set = PairedCrops(PairedFolder(val_folder), config.crop_size, seed=seed + 1, augment=False)
    else:
        folder = Path(data)
    pairs = PairedFolder(folder)
    dataset = PairedCrops(pairs, config.crop_size, seed=seed, length=max(config.crops_per_epoch, len(pairs)),
                          degrees=config.degrees, hflip=config.hflip)
    module = DocDiffTrainable(model, config)

    def finalize(module: nn.Module) -> dict[str, float]:
        if val_set is None:
            return {}
        return evaluate_restoration(module.model, val_set, config.val_steps, seed)

    return TrainTask(module=module, dataset=dataset, config=config, finalize=finalize,
                     to_pipeline=lambda m: m.model, extra={"data": str(folder), "task": task, "validation": val_set})
