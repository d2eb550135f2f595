"""sLCT training for the shared loop in `training/`: `LCTTrainConfig` (the paper's
hyperparameters and a switch for each of its changes) and `LCTTrainable` (the training step).

Defaults from the authors' `scripts/train_lct.sh` / `train_cm_latent.py` (quandao10/LCT) and MODELS.md:
RAdam, lr 1e-4, weight decay 1e-4 (L2, torch's RAdam default), eps 1e-4, batch 128, no gradient
clipping (their clip call is commented out), an evaluation EMA of rate 0.9999 (the loop's EMA;
the consistency target itself is the current student, iCT's EMA rate 0), curriculum s0 = 10,
s1 = 640, discretised lognormal (-1.1, 2.0), Cauchy loss, diffusion loss weight 5 at the 25 %
smallest noise levels, OT coupling, adaptive c; 1400 epochs of CelebA-HQ 256 (30 000 images,
234 batches an epoch) = 327 600 steps.

The curriculum N(k) needs the update count k, which the loop does not pass to `training_step`:
`LCTTrainable` keeps it in a `step` buffer that counts calls, so it is saved in (and resumed
from) the loop's checkpoints with the rest of the module state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoo.diffusion.consistency import ConsistencyParametrisation, adaptive_c, discretisation_steps, ict_c
from zoo.trainable import TrainConfig, TrainTask

from .loss import LOSSES, consistency_loss


@dataclass
class LCTTrainConfig(TrainConfig):
    """sLCT hyperparameters (paper defaults); each of the paper's changes has its own switch."""

    steps: int = 327_600  # 1400 epochs x 234 batches of 128 (CelebA-HQ 256, 30 000 images)
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 1e-4
    optimizer: str = "radam"
    eps: float = 1e-4  # RAdam epsilon (read by zoo.training.optim.build_optimizer)
    ema_decay: float = 0.9999  # evaluation EMA (the consistency target is the live student)
    loss: str = "cauchy"  # cauchy (sLCT) | pseudo-huber (iCT)
    huber_reduction: str = "sum"  # pseudo-huber only: sum = iCT's L2 norm, mean = the authors' latent baseline
    diffusion_loss_weight: float = 5.0  # sLCT's early-timestep diffusion loss; 0 turns the diffusion term off
    diffusion_start: float = 0.75  # the term covers pair indices i >= floor(0.75 N)
    ot_coupling: bool = True  # sLCT's minibatch OT coupling
    adaptive_c: bool = True  # sLCT's adaptive scaling-c; off: c stays fixed
    c: float = 0.0  # fixed / initial c; 0 = iCT's 0.00054 sqrt(d)
    start_scales: int = 10  # s0 of the curriculum N(k) (iCT's curriculum)
    end_scales: int = 640  # s1
    curriculum_steps: int = 0  # K of the curriculum; 0 = `steps`
    p_mean: float = -1.1  # discretised lognormal over noise levels (iCT's noise schedule)
    p_std: float = 2.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.huber_reduction not in ("sum", "mean"):
            raise ValueError(f"huber_reduction must be 'sum' or 'mean', got {self.huber_reduction!r}")


class LCTTrainable(nn.Module):
    """The consistency model with its training step; `model` is what gets saved.

    batch: {"latent": (B, C, h, w) standardised latents (sigma_data 0.5), "label": (B,) int
    (used when the network is class-conditional)}. The step logs "loss", "consistency",
    "diffusion", "early_fraction", "num_scales" (N) and "c".
    """

    def __init__(self, model: ConsistencyParametrisation, config: LCTTrainConfig):
        super().__init__()
        self.model = model
        self.config = config
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def schedule(self, k: int, data_dim: int) -> tuple[int, float]:
        """(N, c) at update k: the curriculum's noise levels and the robust loss's scale."""
        cfg = self.config
        total = cfg.curriculum_steps or cfg.steps
        n = discretisation_steps(k, total, cfg.start_scales, cfg.end_scales)
        if cfg.adaptive_c and n > cfg.start_scales + 1:
            return n, adaptive_c(n)
        return n, cfg.c or ict_c(data_dim)

    def training_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor | float]:
        cfg = self.config
        latents = batch["latent"]
        net_cfg = getattr(self.model, "config", None)
        labels = batch.get("label") if net_cfg is not None and net_cfg.num_classes > 0 else None
        num_scales, c = self.schedule(int(self.step), latents[0].numel())
        extra = {}
        if net_cfg is not None:
            extra = dict(sigma_min=net_cfg.sigma_min, sigma_max=net_cfg.sigma_max, rho=net_cfg.rho,
                         sigma_data=net_cfg.sigma_data)
        out = consistency_loss(self.model, latents, num_scales, c, class_labels=labels, loss=cfg.loss,
                               huber_reduction=cfg.huber_reduction, diffusion_loss_weight=cfg.diffusion_loss_weight,
                               diffusion_start=cfg.diffusion_start, ot_coupling=cfg.ot_coupling,
                               p_mean=cfg.p_mean, p_std=cfg.p_std, **extra)
        with torch.no_grad():
            self.step += 1
        return {**out, "num_scales": float(num_scales), "c": c}


def build_task(model: ConsistencyParametrisation, dataset: torch.utils.data.Dataset,
               config: LCTTrainConfig) -> TrainTask:
    """A `TrainTask` over a dataset of {"latent", "label"} items; the saved module is the consistency model."""
    return TrainTask(module=LCTTrainable(model, config), dataset=dataset, config=config,
                     to_pipeline=lambda module: module.model)


# --------------------------------------------------------------------------- images -> latents -> sLCT


@dataclass
class LatentLCTTrainConfig(LCTTrainConfig):
    """`zoo train lct`: sLCT on the latents of the variant's autoencoder, from images.

    autoencoder: where the frozen codec's weights come from on a fresh run: "registry" (the
    bundled `autoencoder-kl` weights of the variant's autoencoder preset, asked of the registry),
    a path (`zoo.diffusion.autoencoder.load_autoencoder`: our file, a diffusers or SD folder), or
    "keep" (what the model already holds, e.g. after `--weights`). A model loaded with `--weights`
    that already holds a trained codec keeps it whatever this says."""

    autoencoder: str = "registry"
    train_images: int = 30_000  # training images (procedural: rendered once; the paper's CelebA-HQ has 30 000)
    cache_latents: bool = True  # encode the training images once (cached under $ZOO_HOME/cache) instead of every step
    val_images: int = 512  # held-out procedural images for the final sample-quality metrics
    eval_samples: int = 512  # generated images scored against them (1 and 2 steps)


class LatentLCTTrainable(nn.Module):
    """Encodes the batch's images with the frozen codec (posterior mean, standardised) and takes
    the sLCT step on the latents; `model` (denoiser + codec) is what gets saved."""

    def __init__(self, model: nn.Module, config: LatentLCTTrainConfig):
        super().__init__()
        self.model = model
        self.lct = LCTTrainable(model.denoiser, config)

    def training_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor | float]:
        if "latent" in batch:  # encoded once beforehand (cache_latents)
            latents = batch["latent"]
        else:
            with torch.no_grad():
                latents = self.model.codec.encode(batch["image"])
        if self.model.config.parametrisation == "edm":  # the multi-step diffusion baseline
            from zoo.diffusion.edm import edm_loss

            net = self.model.config.net
            labels = batch["label"] if net.num_classes else None
            return edm_loss(self.model.denoiser, latents, labels, sigma_data=net.sigma_data)
        return self.lct.training_step({"latent": latents, "label": batch["label"]})


def _image_sets(data: str, kind: str, size: int, config: LatentLCTTrainConfig, seed: int) -> tuple[Any, Any, str]:
    from zoo.data.generation import ClassImageSet, ImageFolderSet

    if data == "synthetic":
        train = ClassImageSet(kind, size=size, count=config.train_images, seed=seed, split="train")
        val = ClassImageSet(kind, size=size, count=config.val_images, seed=seed, split="val")
        return train, val, f"procedural {kind} {size}x{size} (zoo.data.generation.ClassImageSet, seed {seed})"
    folder = ImageFolderSet(data, size=size)
    held = [i for i in range(len(folder)) if i % 10 == 9]
    kept = [i for i in range(len(folder)) if i % 10 != 9]
    if not held:
        raise ValueError(f"{data}: {len(folder)} images; at least 10 are needed (every 10th is held out)")
    return (torch.utils.data.Subset(folder, kept), torch.utils.data.Subset(folder, held),
            f"{data} ({len(kept)} train, {len(held)} held out, {size}x{size})")


class LatentSet(torch.utils.data.Dataset):
    """{"latent", "label"} items from tensors (the training images encoded once)."""

    def __init__(self, latents: torch.Tensor, labels: torch.Tensor):
        self.latents, self.labels = latents, labels

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"latent": self.latents[index], "label": self.labels[index]}


@torch.no_grad()
def encode_dataset(codec: nn.Module, dataset: Any, description: str, batch_size: int = 256) -> LatentSet:
    """Every image of `dataset` through the frozen codec (posterior mean, standardised), cached
    under $ZOO_HOME/cache keyed by the data and the codec's weights, so the arms and seeds of an
    ablation that share data encode it once."""
    import hashlib

    from safetensors.torch import load_file, save_file

    from zoo.weights import zoo_home

    digest = hashlib.sha1(f"{description}|{len(dataset)}".encode())
    for name, tensor in sorted(codec.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    path = zoo_home() / "cache" / f"lct-latents-{digest.hexdigest()[:16]}.safetensors"
    if path.is_file():
        cached = load_file(str(path))
        return LatentSet(cached["latents"], cached["labels"])
    latents, labels = [], []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        latents.append(codec.encode(torch.stack([torch.as_tensor(item["image"]) for item in items])))
        labels.append(torch.tensor([int(item["label"]) for item in items], dtype=torch.int64))
    out = {"latents": torch.cat(latents).contiguous(), "labels": torch.cat(labels)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{__import__('os').getpid()}.tmp")
    save_file(out, str(tmp))
    tmp.replace(path)  # atomic: parallel runs may write the same cache
    return LatentSet(out["latents"], out["labels"])


def _load_codec(model: nn.Module, source: str) -> None:
    """Fill the frozen codec from the registry's bundled autoencoder or a path (see the config)."""
    if source == "keep" or bool(model.autoencoder_ready):
        return
    if source == "registry":
        from zoo.registry import MissingWeightsError, create_model

        try:
            codec = create_model("autoencoder-kl", model.config.autoencoder_variant).model
        except MissingWeightsError as err:
            raise ValueError(f"{err}: sLCT trains on the latents of a trained autoencoder; point to one with "
                             "--set autoencoder=PATH (a Stable Diffusion VAE folder for the paper's variants, or an "
                             "autoencoder-kl run: zoo train autoencoder-kl --variant "
                             f"{model.config.autoencoder_variant} ...)") from None
    else:
        from zoo.diffusion.autoencoder import load_autoencoder

        codec = load_autoencoder(source, model.config.autoencoder)
    model.codec.load_state_dict(codec.state_dict())
    model.autoencoder_ready.fill_(True)


def sample_quality_metrics(pipeline: Any, val: Any, samples: int, steps: tuple[int, ...] | None = None, seed: int = 10_000) -> dict[str, float]:
    """FID / KID / precision / recall of `samples` generated images per step count against the
    held-out images, in zoo's shapes-classifier feature space (zoo.metrics.generation)."""
    from zoo.metrics.generation import sample_quality

    out: dict[str, float] = {}
    seeds = list(range(seed, seed + samples))
    if steps is None:  # consistency: 1 and 2 steps; the EDM baseline: its default Heun levels
        steps = (1, 2) if pipeline.config.parametrisation == "consistency" else (pipeline.config.default_steps,)
    for n in steps:
        images, _, _ = pipeline.generate(seeds, n)
        quality = sample_quality(val, images, kid_subsets=20, kid_subset_size=min(256, samples))
        for key in ("fid", "kid_mean", "precision", "recall"):
            out[f"{key}_{n}step"] = float(quality[key])
    return out


def build_latent_task(model: nn.Module, data: str, config: LatentLCTTrainConfig, seed: int, workdir: Any) -> TrainTask:
    """`zoo train lct`: images (procedural classes or the user's folder) -> frozen codec -> sLCT.
    `finalize` scores 1- and 2-step samples of the (EMA) model against held-out images."""
    cfg = model.config
    train, val, description = _image_sets(data, cfg.data, cfg.image_size, config, seed)
    _load_codec(model, config.autoencoder)
    module = LatentLCTTrainable(model, config)
    if config.cache_latents:
        model.codec.eval()
        train = encode_dataset(model.codec, train, description)

    def finalize(module: nn.Module) -> dict[str, float]:
        from .pipeline import LatentConsistencyPipeline

        pipeline = LatentConsistencyPipeline(module.model, module.model.config).eval()
        return sample_quality_metrics(pipeline, val, config.eval_samples)

    return TrainTask(module=module, dataset=train, config=config, finalize=finalize,
                     to_pipeline=lambda m: m.model, extra={"data": description})
