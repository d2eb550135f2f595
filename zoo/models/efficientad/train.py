"""EfficientAD's two training stages as `TrainTask`s for the shared loop in `training/`.

1. Teacher pretraining (paper Sec. 3.1; nelson1425 `pretraining.py`): a padded PDN learns to
   reproduce the PatchCore-aggregated layer-2/3 features of a pretrained backbone
   (WideResNet-101-2 in the paper) on ImageNet-like images. `build_teacher_task`.
2. Anomaly training (Sec. 3.2–3.4, Algorithm 1; nelson1425 `efficientad.py`): the teacher is
   frozen; the student and the autoencoder learn from normal images with
   L_hard + L_penalty + L_AE + L_STAE; afterwards the maps are calibrated by quantiles on a
   validation split. `build_anomaly_task`.

Choices where the paper and its references leave room:
- Randomness that is not a function of the dataset index (penalty-image choice, their random
  grayscale, the AE's colour jitter, dropout) comes from torch's global RNG, which the loop
  checkpoints, so a resumed run continues the same stream.
- The penalty set defaults to the bundled natural images (`zoo.data.natural`) instead of
  ImageNet/Imagenette, which we may not download; `penalty_folder` points at a real one.
- The `micro` variant distils timm `resnet18` (the card's micro default `backbone=resnet18`)
  at 64 px (the backbone sees 128 px); `s`/`m` use
  `wide_resnet101_2` as the paper does. The backbone is built with random weights (seeded)
  unless `backbone_weights` names a local file (nothing reaches a hub).
- Teacher statistics (AD stage) and target statistics (teacher stage) are computed in
  `setup` over the loop's one-pass, index-order loader (all of the data on every rank),
  capped at `stats_images`; a constant channel gets std 1e-6 instead of 0 (see
  `teacher_channel_stats`).
- The quantiles q_a, q_b are taken on `EfficientAD.calibration_maps` (padded and resized,
  anomalib's convention), the maps `EfficientAD.combine` normalises; nelson1425 takes them
  at PDN resolution.
- MVTec LOCO's own `validation/good` is used for calibration when a category has one; else
  `validation_fraction` of train/good is held out with a seeded split (reference: 10 %).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from zoo.trainable import TrainConfig, TrainTask

from .loss import color_jitter, distillation_loss, map_quantiles, teacher_channel_stats, total_loss
from .model import IMAGENET_MEAN, IMAGENET_STD, EfficientAD, build_pdn

# The procedural category generated for data="synthetic" unless `category` names another.
SYNTHETIC_CATEGORY = "brick"


# --------------------------------------------------------------------------- configs


@dataclass
class EfficientADTrainConfig(TrainConfig):
    """Anomaly-stage hyperparameters; defaults are the paper's (Sec. 4 / Algorithm 1):
    Adam, lr 1e-4, weight decay 1e-5, batch 1, 70 000 steps, lr x0.1 after 95 % of them."""

    steps: int = 70_000
    batch_size: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-5
    optimizer: str = "adam"
    schedule: str = "step"
    lr_milestones: tuple[float, ...] = (0.95,)
    lr_gamma: float = 0.1
    ckpt_every: int = 1000
    category: str = ""  # MVTec category under the root given as data ("" when data is the category
    # folder); with data=synthetic, the generated category ("" = SYNTHETIC_CATEGORY)
    penalty_folder: str = ""  # ImageNet-like folder for L_penalty; "" = the bundled natural images
    use_penalty: bool = True  # False drops L_penalty (the reference's "--imagenet_train_path none")
    penalty_grayscale: float = 0.3  # reference penalty transform: RandomGrayscale(0.3)
    validation_fraction: float = 0.1  # share of train/good held out for the quantiles (Sec. 3.4)
    image_size: int = 0  # 0 = the model's; any other value must equal it (the AE is tied to one size)
    hard_quantile: float = 0.999  # p_hard (Sec. 3.2)
    quantile_a: float = 0.9  # q_a (Sec. 3.4)
    quantile_b: float = 0.995  # q_b (Sec. 3.4)
    stats_images: int = 10_000  # at most this many training images for the teacher mean/std


@dataclass
class TeacherTrainConfig(TrainConfig):
    """Teacher-pretraining hyperparameters; defaults are the reference's `pretraining.py`:
    Adam, lr 1e-4, weight decay 1e-5, batch 16, 60 000 steps, RandomGrayscale(0.1)."""

    steps: int = 60_000
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-5
    optimizer: str = "adam"
    ckpt_every: int = 1000
    image_size: int = 0  # PDN input size; 0 = the model's. The backbone sees twice this (512 for 256).
    backbone: str = "wide_resnet101_2"  # timm name, for the s and m variants
    backbone_weights: str = ""  # local .safetensors / .pth state dict; "" = random init
    layers: tuple[int, ...] = (2, 3)  # timm features_only indices: layer2, layer3
    feature_dim: int = 1024  # PatchCore per-layer pooled dimension
    grayscale: float = 0.1
    stats_images: int = 10_000  # reference: target mean/std over 10 000 images
    virtual_length: int = 10_000  # items in an epoch of the bundled-image set (random crops)


# --------------------------------------------------------------------------- data glue


def _item_image(item: Any) -> torch.Tensor:
    """The image tensor of a dataset item or batch (a dict with "image", or the tensor itself)."""
    return item["image"] if isinstance(item, dict) else item


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, H, W), antialiased when shrinking like PIL's Resize."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrink = images.shape[-2] > size[0] or images.shape[-1] > size[1]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def _grayscale(image: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma replicated to three channels (torchvision's rgb_to_grayscale)."""
    weights = image.new_tensor([0.299, 0.587, 0.114])[:, None, None]
    return (image * weights).sum(dim=0, keepdim=True).expand(3, -1, -1)


def _image_source(folder: str, image_size: int, seed: int, length: int) -> Dataset:
    """Random resized crops (seeded by index) of a folder's images, or of the bundled natural
    photographs when `folder` is "" (then `length` items stretch the few photographs)."""
    from zoo.data.natural import ImageFolderDataset

    return ImageFolderDataset(folder or None, image_size, seed=seed, length=None if folder else length)


class PenaltyImages:
    """ImageNet-like images P for the pretraining penalty (Sec. 3.2), prepared like the
    reference's penalty transform: an image at 2S x 2S, RandomGrayscale(0.3), center crop S.

    The 2S image is a seeded random resized crop from `zoo.data.natural.ImageFolderDataset`
    (a user folder, or the bundled photographs). `draw` picks images and the grayscale coin
    from torch's global RNG (checkpointed by the loop) unless given a generator."""

    def __init__(self, image_size: int, folder: str = "", grayscale: float = 0.3, seed: int = 0,
                 length: int = 10_000) -> None:
        self.image_size = image_size
        self.grayscale = grayscale
        self.source = _image_source(folder, 2 * image_size, seed, length)
        if len(self) == 0:
            raise ValueError(f"no penalty images in {folder or 'the bundled natural images'}")

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def draw(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`count` penalty images (count, 3, S, S) in [0, 1]."""
        size = self.image_size
        out = []
        for _ in range(count):
            big = _item_image(self.source[int(torch.randint(len(self), (1,), generator=generator))])
            top, left = (big.shape[-2] - size) // 2, (big.shape[-1] - size) // 2
            image = big[:, top : top + size, left : left + size]
            if float(torch.rand((), generator=generator)) < self.grayscale:
                image = _grayscale(image)
            out.append(image)
        return torch.stack(out)


def _category_folder(data: str, category: str, seed: int, workdir: Path, image_size: int) -> Path:
    """The MVTec-layout category folder: generated under workdir/data for "synthetic", else the
    folder given as `data`, or `data` as the dataset root together with `category`."""
    from zoo.data.mvtec import resolve_category_folder

    if data == "synthetic":
        return _synthetic_category(workdir / "data", category or SYNTHETIC_CATEGORY, seed, image_size)
    return resolve_category_folder(Path(data).expanduser(), category or None)


def _synthetic_category(root: Path, category: str, seed: int, image_size: int) -> Path:
    """The generated category under `root`, reused when its meta.json records these arguments (a
    resumed run, or a torchrun rank after rank 0 wrote it), else (re)generated."""
    import inspect

    from zoo.data.anomaly import GENERATOR, GENERATOR_VERSION, generate_anomaly_dataset

    counts = {k: p.default for k, p in inspect.signature(generate_anomaly_dataset).parameters.items() if k.startswith("n_")}
    wanted = {"generator": GENERATOR, "version": GENERATOR_VERSION, "category": category, "seed": seed,
              "args": {"image_size": image_size, **counts}}
    meta = Path(root) / category / "meta.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        if {k: info.get(k) for k in wanted} == wanted:
            return meta.parent
    return Path(generate_anomaly_dataset(root, category, seed=seed, image_size=image_size))


def _batches(dataset: Dataset, batch_size: int, limit: int | None = None,
             loader: Iterable[Any] | None = None) -> Iterator[dict[str, Any]]:
    """Batches in index order (at most `limit` images) for statistics and evaluation: from
    `loader` when given (the loop's one-pass setup loader), else from a plain DataLoader."""
    seen = 0
    if loader is None:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    for batch in loader:
        if limit is not None and seen >= limit:
            return
        if limit is not None and seen + len(batch["image"]) > limit:
            batch = {k: v[: limit - seen] for k, v in batch.items()}
        seen += len(batch["image"])
        yield batch


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


# --------------------------------------------------------------------------- anomaly stage


class EfficientADTrainable(nn.Module):
    """The anomaly-detection stage (Algorithm 1): frozen teacher, trained student + AE."""

    def __init__(self, model: EfficientAD, penalty: PenaltyImages | None = None,
                 hard_quantile: float = 0.999) -> None:
        super().__init__()
        self.model = model
        self.penalty = penalty
        self.hard_quantile = hard_quantile
        model.teacher.requires_grad_(False)
        model.teacher.eval()

    def train(self, mode: bool = True) -> EfficientADTrainable:
        """The teacher stays in eval mode whatever the loop asks (it is frozen)."""
        super().train(mode)
        self.model.teacher.eval()
        return self

    def _teacher(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self.model.teacher(x)
            return (out - self.model.teacher_mean) / self.model.teacher_std

    def training_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """L_total on one batch of normal images (Algorithm 1)."""
        model = self.model
        image = _item_image(batch).to(_device_of(model))
        count = image.shape[0]
        augmented = color_jitter(image)  # Sec. 3.3: AE input augmentation
        inputs = [image, augmented]
        if self.penalty is not None:
            inputs.append(self.penalty.draw(count).to(image.device))
        # The PDN has no batch statistics, so one student pass over I, I' and P is exact.
        student_all = model.student(model.normalize_input(torch.cat(inputs)))
        student, student_aug = student_all[:count], student_all[count : 2 * count]
        student_penalty = student_all[2 * count :] if self.penalty is not None else None
        teacher_both = self._teacher(model.normalize_input(torch.cat([image, augmented])))
        teacher, teacher_aug = teacher_both[:count], teacher_both[count:]
        ae_out = model.ae(model.normalize_input(augmented))
        return total_loss(teacher, student, teacher_aug, ae_out, student_aug,
                          student_on_penalty=student_penalty, q=self.hard_quantile)


@torch.no_grad()
def compute_teacher_stats(model: EfficientAD, dataset: Dataset, batch_size: int = 8,
                          limit: int | None = None, loader: Iterable[Any] | None = None) -> None:
    """Fill `model.teacher_mean/std` from the teacher's outputs on `dataset` (Algorithm 1)."""
    model.teacher.eval()
    device = _device_of(model)
    features = (model.teacher(model.normalize_input(b["image"].to(device)))
                for b in _batches(dataset, batch_size, limit, loader))
    mean, std = teacher_channel_stats(features)
    model.teacher_mean.copy_(mean.to(model.teacher_mean))
    model.teacher_std.copy_(std.to(model.teacher_std))


@torch.no_grad()
def calibrate_quantiles(model: EfficientAD, dataset: Dataset, q_a: float = 0.9, q_b: float = 0.995,
                        batch_size: int = 8) -> dict[str, float]:
    """Fill the map-normalisation quantiles from validation images (Sec. 3.4).

    The quantiles are taken on `model.calibration_maps` (raw maps padded and resized to the
    input, anomalib's convention), the same maps `EfficientAD.combine` normalises."""
    was_training = model.training
    model.eval()
    device = _device_of(model)
    maps_st, maps_ae = [], []
    for b in _batches(dataset, batch_size):
        map_st, map_ae = model.calibration_maps(b["image"].to(device))
        maps_st.append(map_st.cpu())
        maps_ae.append(map_ae.cpu())
    model.train(was_training)
    values = {}
    for name, maps in (("st", maps_st), ("ae", maps_ae)):
        start, end = map_quantiles(maps, q_a, q_b)
        getattr(model, f"q_{name}_start").fill_(float(start))
        getattr(model, f"q_{name}_end").fill_(float(end))
        values[f"q_{name}_start"], values[f"q_{name}_end"] = float(start), float(end)
    return values


@torch.no_grad()
def evaluate_anomaly(model: EfficientAD, dataset: Dataset, kinds: dict[str, str] | None = None,
                     batch_size: int = 8, use_st: bool = True, use_ae: bool = True) -> dict[str, float]:
    """Image AUROC, pixel AUROC and AU-PRO (FPR <= 0.3) on a test split, via zoo.metrics.anomaly;
    with `kinds` ({defect type: "structural" | "logical"}) naming both kinds, also each metric
    on good + structural and good + logical images (as MVTec LOCO reports them). `use_st` /
    `use_ae` score with one branch alone (the paper's autoencoder ablation)."""
    from zoo.metrics.anomaly import evaluate_anomaly as score_anomaly

    was_training = model.training
    model.eval()
    device = _device_of(model)
    maps, scores, labels, masks, types = [], [], [], [], []
    for b in _batches(dataset, batch_size):
        image = b["image"].to(device)
        map_st, map_ae = model.raw_maps(image)
        # the model's forward when both branches are on; one branch alone for the ablation
        anomaly_map = model.combine(map_st, map_ae, tuple(image.shape[-2:]), use_st=use_st, use_ae=use_ae)
        score = anomaly_map.amax(dim=(1, 2, 3))
        maps.append(anomaly_map.reshape(len(score), *anomaly_map.shape[-2:]).cpu().numpy())
        scores.append(score.reshape(-1).cpu().numpy())
        labels.append(np.asarray(b["label"]).reshape(-1))
        masks.append(b["mask"].reshape(len(score), *b["mask"].shape[-2:]).numpy() > 0.5)
        types.extend(b["defect_type"])
    model.train(was_training)
    metrics = score_anomaly(np.concatenate(scores), np.concatenate(maps), np.concatenate(labels).astype(int),
                            np.concatenate(masks), defect_types=types, defect_kinds=kinds or None)
    return {k: v for k, v in metrics.items() if not np.isnan(v)}


def build_anomaly_task(model: EfficientAD, data: str, config: EfficientADTrainConfig, seed: int,
                       workdir: Path) -> TrainTask:
    """The anomaly-detection stage on an MVTec-layout category ("synthetic" generates one)."""
    from zoo.data.mvtec import MVTecAD, defect_kinds, train_validation_split

    image_size = model.config.image_size
    if config.image_size and config.image_size != image_size:
        raise ValueError(f"image_size={config.image_size}: this variant's autoencoder is tied to "
                         f"{image_size}x{image_size} inputs; build the model with that image_size instead")
    folder = _category_folder(data, config.category, seed, Path(workdir), image_size)
    full_train = MVTecAD(folder, split="train", image_size=image_size)
    if (folder / "validation").is_dir():  # MVTec LOCO ships its own validation split
        train_set: Dataset = full_train
        val_set: Dataset = MVTecAD(folder, split="validation", image_size=image_size)
    else:  # MVTec AD: hold out a seeded share of train/good (reference: 10 %)
        train_set, val_set = train_validation_split(full_train, fraction=config.validation_fraction, seed=seed)
        if len(val_set) == 0:  # nothing held out: calibrate on the training images
            val_set = train_set
    test_set = MVTecAD(folder, split="test", image_size=image_size) if (folder / "test").is_dir() else None
    kinds = defect_kinds(folder) if test_set is not None else {}
    penalty = (PenaltyImages(image_size, config.penalty_folder, config.penalty_grayscale, seed)
               if config.use_penalty else None)
    module = EfficientADTrainable(model, penalty, config.hard_quantile)

    def setup(module: nn.Module, loader: Any) -> None:
        """Teacher channel mean/std over the training images, into the model's buffers."""
        compute_teacher_stats(module.model, train_set, limit=config.stats_images, loader=loader)

    def finalize(module: nn.Module) -> dict[str, float]:
        metrics = calibrate_quantiles(module.model, val_set, config.quantile_a, config.quantile_b)
        if test_set is not None and len(test_set) > 0:
            metrics.update(evaluate_anomaly(module.model, test_set, kinds))
        return metrics

    return TrainTask(
        module=module, dataset=train_set, config=config,
        parameters=lambda m: list(m.model.student.parameters()) + list(m.model.ae.parameters()),
        setup=setup, finalize=finalize, to_pipeline=lambda m: m.model,
        extra={"data": str(folder), "validation": val_set, "test": test_set},
    )


# --------------------------------------------------------------------------- teacher stage


def patchcore_aggregate(features: Sequence[torch.Tensor], size: tuple[int, int], out_channels: int,
                        feature_dim: int = 1024) -> torch.Tensor:
    """PatchCore's locally aware patch features, as the reference distils them (Sec. 3.1):
    each layer's 3x3 neighbourhoods are unfolded (C*9 values per position, zero padded),
    average-pooled along that vector to `feature_dim` (adaptive bins), brought to `size`
    bilinearly; the layers are concatenated and pooled the same way to `out_channels`.

    The reference upsamples the unfolded C*9 values before pooling; pooling (along channels)
    and bilinear resizing (along space) are linear maps on different axes, so they commute and
    pooling first gives the same numbers with far less memory. Adaptive 2D pooling with the
    spatial axis kept whole is the reference's 1D adaptive pooling along the vector, without
    moving channels last. Returns (B, out_channels, *size)."""
    size = (int(size[0]), int(size[1]))
    pooled = []
    for feat in features:
        b, c, h, w = feat.shape
        patches = F.unfold(feat, kernel_size=3, padding=1)  # (B, C*9, h*w), ordered (c, kh, kw)
        patches = F.adaptive_avg_pool2d(patches[:, None], (feature_dim, h * w))[:, 0].reshape(b, feature_dim, h, w)
        if (h, w) != size:  # layer3 onto layer2's grid in the reference
            patches = F.interpolate(patches, size=size, mode="bilinear", align_corners=False)
        pooled.append(patches)
    joined = torch.cat(pooled, dim=1).flatten(2)  # layer-major, as the reference stacks them
    out = F.adaptive_avg_pool2d(joined[:, None], (out_channels, size[0] * size[1]))[:, 0]
    return out.reshape(out.shape[0], out_channels, *size)


def load_backbone_weights(backbone: nn.Module, path: str) -> None:
    """Load a local state dict (safetensors, or a torch file read with weights_only=True) into a
    timm features_only backbone; keys of layers the backbone dropped (layer4, fc) are ignored,
    a missing backbone key is an error."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    own = backbone.state_dict()
    missing = sorted(k for k in own if k not in state)
    if missing:
        raise KeyError(f"{path}: missing backbone keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    wrong = sorted(k for k in own if tuple(state[k].shape) != tuple(own[k].shape))
    if wrong:
        raise ValueError(f"{path}: shape mismatch for {wrong[:8]}")
    backbone.load_state_dict({k: state[k] for k in own})


class TeacherDistillation(nn.Module):
    """Teacher pretraining (Sec. 3.1): a padded PDN at S x S regresses the channel-normalised
    PatchCore features of a frozen backbone at 2S x 2S (layer2 / layer3)."""

    def __init__(self, student: nn.Module, backbone: nn.Module, out_channels: int,
                 feature_dim: int = 1024) -> None:
        super().__init__()
        self.student = student
        self.backbone = backbone.eval().requires_grad_(False)
        self.out_channels = out_channels
        self.feature_dim = feature_dim
        # Both networks take ImageNet-normalised input (as EfficientAD.normalize_input does).
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("target_mean", torch.zeros(1, out_channels, 1, 1))
        self.register_buffer("target_std", torch.ones(1, out_channels, 1, 1))

    def train(self, mode: bool = True) -> TeacherDistillation:
        """The backbone stays in eval mode (frozen batch-norm statistics)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def normalize_input(self, image01: torch.Tensor) -> torch.Tensor:
        """ImageNet mean/std normalisation of [0, 1] images."""
        return (image01 - self.image_mean) / self.image_std

    @torch.no_grad()
    def targets(self, image01_2x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Unnormalised PatchCore targets for images at the backbone's resolution."""
        feats = self.backbone(self.normalize_input(image01_2x))
        return patchcore_aggregate(feats, size, self.out_channels, self.feature_dim)

    def training_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """MSE between the padded PDN and the normalised targets (Sec. 3.1)."""
        big = _item_image(batch).to(self.target_mean.device)
        size = (big.shape[-2] // 2, big.shape[-1] // 2)
        prediction = self.student(self.normalize_input(_resize(big, size)))
        target = self.targets(big, tuple(prediction.shape[-2:]))
        return {"loss": distillation_loss(prediction, target, self.target_mean, self.target_std)}


class DistillationImages(Dataset):
    """Pretraining images for the teacher stage at the backbone's resolution 2S, with the
    reference's RandomGrayscale(p) applied once to the image both networks see.

    Items are seeded random resized crops (`zoo.data.natural.ImageFolderDataset`) of a folder's
    images (the paper: ImageNet; the reference resizes whole images) or of the few bundled
    photographs, stretched to `length` items. Every item is a function of (seed, index)."""

    def __init__(self, image_size: int, folder: str = "", grayscale: float = 0.1, seed: int = 0,
                 length: int = 10_000) -> None:
        self.grayscale = grayscale
        self.seed = seed
        self.source = _image_source(folder, 2 * image_size, seed, length)

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = _item_image(self.source[index])
        coin = torch.rand((), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + index))
        if float(coin) < self.grayscale:
            image = _grayscale(image)
        return {"image": image.contiguous()}


def _build_backbone(name: str, layers: Sequence[int], weights: str, seed: int) -> nn.Module:
    import timm

    with torch.random.fork_rng(devices=[]):  # same random init for the same seed, on resume too
        torch.manual_seed(seed)
        backbone = timm.create_model(name, pretrained=False, features_only=True, out_indices=tuple(layers))
    if weights:
        load_backbone_weights(backbone, weights)
    return backbone


def build_teacher_task(model: EfficientAD, data: str, config: TeacherTrainConfig, seed: int,
                       workdir: Path) -> TrainTask:
    """Teacher pretraining on ImageNet-like images: `data` is an image folder, or "synthetic"
    for the bundled natural images. to_pipeline returns `model` with the distilled teacher."""
    del workdir  # nothing is generated for this stage
    image_size = config.image_size or model.config.image_size
    padded = dataclasses.replace(model.config, padding=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = build_pdn(padded, model.config.out_channels)
    backbone = _build_backbone(config.backbone, config.layers,
                               config.backbone_weights, seed)
    module = TeacherDistillation(student, backbone, model.config.out_channels, config.feature_dim)
    folder = "" if data == "synthetic" else data
    dataset = DistillationImages(image_size, folder, config.grayscale, seed, config.virtual_length)

    @torch.no_grad()
    def setup(module: nn.Module, loader: Any) -> None:
        """Channel mean/std of the targets over at most `stats_images` images (reference:
        10 000), into the module's buffers."""
        device = module.target_mean.device
        out = module.student(module.normalize_input(torch.zeros(1, 3, image_size, image_size, device=device)))
        size = tuple(out.shape[-2:])
        targets = (module.targets(b["image"].to(device), size)
                   for b in _batches(dataset, config.batch_size, config.stats_images, loader))
        mean, std = teacher_channel_stats(targets)
        module.target_mean.copy_(mean)
        module.target_std.copy_(std)

    def to_pipeline(module: nn.Module) -> nn.Module:
        # Padding is not a parameter: the padded PDN's weights load into the unpadded teacher.
        model.teacher.load_state_dict(module.student.state_dict())
        return model

    return TrainTask(module=module, dataset=dataset, config=config,
                     parameters=lambda m: m.student.parameters(), setup=setup, to_pipeline=to_pipeline)
