"""NCT training for the shared loop in `training/` (Algorithm 1): no image is read. Each item is
noise (z, eps, k, a class label), the control comes from the frozen generator's own output,
c = C(decode(f_theta(z))), and only the adapter learns.

Paper defaults (Sec. 4): AdamW (0.9, 0.95), lr 1e-5, batch 128, EMA 0.9999 for SD1.5 ControlNets.
What the paper leaves open, and ours: N = 16 levels of t, k uniform, sigma_t = sin(pi t / 2) (loss.py);
xi (the bound on L_bound) 1e-3 of the lct base's latent MSE (its latents have variance ~0.25, so
~0.4 % of their power); eta (the dual step) 10, lambda starting at 1 (so the two terms start at the
same weight); the "without primal-dual" arm keeps lambda at its start value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoo.trainable import TrainConfig, TrainTask

from .controls import control_consistency, extract_control
from .loss import DISTANCES, dual_update, nct_losses
from .model import ControlModel


@dataclass
class NCTTrainConfig(TrainConfig):
    steps: int = 20_000
    batch_size: int = 128
    lr: float = 1e-5
    optimizer: str = "adamw"
    betas: tuple[float, float] = (0.9, 0.95)
    ema_decay: float = 0.9999
    levels: int = 16  # N of the grid t_k = k / N
    distance: str = "l2"  # l2 | pseudo-huber
    xi: float = 1e-3  # the constraint L_bound <= xi
    eta: float = 10.0  # dual step size
    lambda_init: float = 1.0
    consistency_loss: bool = True  # ablation switches (Table 3)
    boundary_loss: bool = True
    primal_dual: bool = True  # off: lambda stays at lambda_init
    base: str = "registry"  # the frozen generator's weights: "registry" (bundled lct weights), a path, or "keep"
    train_noises: int = 1_000_000  # distinct (z, eps, k, label) draws (an "epoch" of noise)
    eval_samples: int = 256  # held-out seeds scored by finalize

    def __post_init__(self) -> None:
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {self.distance!r}")
        if self.levels < 1:
            raise ValueError(f"levels must be at least 1, got {self.levels}")
        if not (self.consistency_loss or self.boundary_loss):
            raise ValueError("at least one of consistency_loss and boundary_loss must be on")


class NoiseSource(torch.utils.data.Dataset):
    """Item i: {"noise": z, "eps": eps, "k": k, "label": y}, a deterministic function of (seed, i).
    The only "data" NCT trains on."""

    def __init__(self, count: int, shape: tuple[int, ...], levels: int, num_classes: int = 0, seed: int = 0):
        self.count, self.shape, self.levels, self.num_classes, self.seed = int(count), tuple(shape), int(levels), int(num_classes), int(seed)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(index))
        return {"noise": torch.randn(self.shape, generator=g), "eps": torch.randn(self.shape, generator=g),
                "k": torch.randint(self.levels, (), generator=g),
                "label": torch.randint(max(1, self.num_classes), (), generator=g)}


class NCTTrainable(nn.Module):
    """One primal step on the adapter per call and the dual step on lambda (a buffer, so it is saved in
    and resumed from checkpoints). Logs loss, consistency, boundary and lambda."""

    lam: torch.Tensor

    def __init__(self, model: ControlModel, config: NCTTrainConfig):
        super().__init__()
        self.model: ControlModel = model
        self.config = config
        self.register_buffer("lam", torch.tensor(float(config.lambda_init)))

    def training_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor | float]:
        cfg, model = self.config, self.model
        z, eps, k = batch["noise"], batch["eps"], batch["k"]
        labels = batch["label"] if model.num_classes else None
        with torch.no_grad():
            base_output = model.base_generate(z, labels)
            control = extract_control(model.config.control, model.decode(base_output))
        losses = nct_losses(model, z, eps, k, control, base_output, cfg.levels, labels, cfg.distance,
                            consistency=cfg.consistency_loss, boundary=cfg.boundary_loss)
        zero = z.new_zeros(())
        con, bound = losses.get("consistency", zero), losses.get("boundary", zero)
        lam = float(self.lam)
        loss = con + lam * bound if cfg.boundary_loss else con
        if cfg.boundary_loss and cfg.primal_dual and self.training:
            self.lam.fill_(dual_update(lam, float(bound.detach()), cfg.xi, cfg.eta))
        return {"loss": loss, "consistency": con.detach(), "boundary": bound.detach(), "lambda": lam}


def _saved_model(module: Any) -> nn.Module:
    """What a run saves: the controlled generator (base, codec, adapter)."""
    return module.model


def _load_base(model: Any, source: str) -> None:
    """Fill the frozen generator (and its codec) from the registry's bundled lct weights or a path."""
    if source == "keep" or model.config.base != "lct":
        return
    from zoo.registry import create_model

    base: Any = create_model("lct", model.config.base_variant, weights=None if source == "registry" else source).model
    model.base.load_state_dict(base.denoiser.state_dict())
    model.codec.load_state_dict(base.codec.state_dict())
    # the adapter's trainable copy starts from the base (ControlNet's initialisation)
    missing = model.adapter.copy.load_state_dict(base.denoiser.net.state_dict(), strict=False)
    if missing.missing_keys:
        raise RuntimeError(f"adapter copy keys not in the base: {missing.missing_keys[:5]}")


@torch.no_grad()
def control_metrics(model: ControlModel, samples: int, seed: int = 10_000, batch_size: int = 64, sample_steps: int = 1) -> dict[str, float]:
    """Held-out seeds: controls from the base's outputs on noises z, generation from independent noises z'.
    consistency_nct / consistency_base: mean |c - h(x)| of the adapted / unadapted generator; fid_vs_base /
    precision / recall: the adapted outputs against the base's (zoo-shapes-classifier-v1 space).
    sample_steps > 1: the adapted model sampled in that many consistency steps (the data-trained baseline)."""
    from zoo.metrics.generation import sample_quality

    kind = model.config.control
    shape = model.noise_shape
    nct, base, ref, adapted = [], [], [], []
    for start in range(seed, seed + samples, batch_size):
        seeds = range(start, min(start + batch_size, seed + samples))
        z = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
        z2 = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s + 7_777_777)) for s in seeds])
        labels = torch.tensor([s % max(1, model.num_classes) for s in seeds]) if model.num_classes else None
        reference = model.decode(model.base_generate(z, labels))
        control = extract_control(kind, reference)
        adapted_latents = model.generate(z2, control, labels) if sample_steps == 1 else \
            sample_controlled(model, z2, control, labels, sample_steps, seed=start)
        out = model.decode(adapted_latents)
        plain = model.decode(model.base_generate(z2, labels))
        nct.append(control_consistency(kind, control, out))
        base.append(control_consistency(kind, control, plain))
        ref.append(reference)
        adapted.append(out)
    quality = sample_quality(torch.cat(ref), torch.cat(adapted), kid_subsets=10, kid_subset_size=min(128, samples))
    return {"consistency_nct": float(torch.cat(nct).mean()), "consistency_base": float(torch.cat(base).mean()),
            "fid_vs_base": float(quality["fid"]), "precision": float(quality["precision"]), "recall": float(quality["recall"])}


def build_task(model: ControlModel, data: str, config: NCTTrainConfig, seed: int, workdir: Any) -> TrainTask:
    """`zoo train nct-<control>`: Algorithm 1 on noise alone (`data` must be "synthetic": NCT reads no images)."""
    if data != "synthetic":
        raise ValueError(f"NCT trains without images (Algorithm 1); --data must be 'synthetic', got {data!r}")
    _load_base(model, config.base)
    dataset = NoiseSource(config.train_noises, model.noise_shape, config.levels, model.num_classes, seed)

    def finalize(module: Any) -> dict[str, float]:
        return control_metrics(module.model.eval(), config.eval_samples)

    return TrainTask(module=NCTTrainable(model, config), dataset=dataset, config=config, finalize=finalize,
                     to_pipeline=_saved_model,
                     extra={"data": f"noise only: (z, eps, k, label) draws, seed {seed}; controls from the frozen base's outputs"})


# --------------------------------------------------------------------------- the data-trained baseline


@dataclass
class DataControlTrainConfig(NCTTrainConfig):
    """The baseline NCT is compared with (Table 1's "ControlNet, 50 NFE" at our scale): the same adapter on
    the same frozen base, trained the usual way, on images: the EDM denoising objective of the adapted
    consistency function on noisy latents of real images with their controls, sampled in several steps."""

    train_images: int = 8192  # procedural shapes images (the lct base's training distribution)
    sample_steps: int = 4  # multistep consistency sampling with the adapter at each step


class DataControlTrainable(nn.Module):
    """D(x + sigma n, sigma; c) -> x with EDM's weighting (zoo.diffusion.edm.edm_loss), c = C(image)."""

    def __init__(self, model: ControlModel, config: DataControlTrainConfig):
        super().__init__()
        self.model: Any = model  # an lct-based ControlModel (it reads the base's noise scale)
        self.config = config

    def training_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        from zoo.diffusion.edm import edm_loss

        model = self.model
        images = batch["image"]
        labels = batch["label"] if model.num_classes else None
        with torch.no_grad():
            latents = model.codec.encode(images)
            control = extract_control(model.config.control, images)

        def denoiser(x: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
            return model.base(x, sigma, y, adapter=model.adapter, condition=control)

        return edm_loss(denoiser, latents, labels, sigma_data=model.net_config.sigma_data)


@torch.no_grad()
def sample_controlled(model: Any, z: torch.Tensor, control: torch.Tensor, labels: torch.Tensor | None, steps: int,
                      seed: int = 0) -> torch.Tensor:
    """Latents of CM's multistep sampler over the adapted consistency function (the baseline's sampler),
    starting from z; the fresh noise of the later steps drawn from `seed`."""
    from zoo.diffusion.consistency import sample_consistency, sampling_sigmas

    net = model.net_config
    generator = torch.Generator().manual_seed(seed)
    return sample_consistency(lambda x, s: model.base(x, s, labels, adapter=model.adapter, condition=control),
                              tuple(z.shape), sampling_sigmas(steps, net.sigma_max, net.sigma_min, net.rho),
                              generator=generator, sigma_min=net.sigma_min, noise=z * net.sigma_max)


def build_data_task(model: Any, data: str, config: DataControlTrainConfig, seed: int, workdir: Any) -> TrainTask:
    """`zoo train nct-<control> --stage controlnet-data`: the data-trained, multi-step baseline."""
    from zoo.data.generation import ClassImageSet

    if data != "synthetic":
        raise ValueError("the data-trained baseline trains on the lct base's procedural shapes (--data synthetic)")
    _load_base(model, config.base)
    dataset = ClassImageSet("shapes", size=model.config.image_size, count=config.train_images, seed=seed, split="train")

    def finalize(module: Any) -> dict[str, float]:
        return control_metrics(module.model.eval(), config.eval_samples, sample_steps=config.sample_steps)

    return TrainTask(module=DataControlTrainable(model, config), dataset=dataset, config=config, finalize=finalize,
                     to_pipeline=_saved_model,
                     extra={"data": f"procedural shapes {model.config.image_size}px, {config.train_images} images, seed {seed}"})
