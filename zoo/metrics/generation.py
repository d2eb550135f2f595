"""Sample-quality metrics for image generators: FID, KID, k-NN precision/recall, in a named feature space.

- `fid(real_feats, fake_feats)`: Fréchet distance between Gaussians fitted to two feature sets
  (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
  Equilibrium", NeurIPS 2017, Sec. "Fréchet Inception Distance"):
  ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^{1/2}).
- `kid(real, fake, subsets, subset_size)`: Kernel Inception Distance (Bińkowski et al., "Demystifying
  MMD GANs", ICLR 2018, Sec. 3 / Eq. 3 and App. on KID): the unbiased estimate of MMD^2 with the cubic
  polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets, as torchmetrics'
  `KernelInceptionDistance` computes it (mean and population std over subsets).
- `precision_recall(real, fake, k=3)`: Kynkäänniemi et al., "Improved Precision and Recall Metric
  for Assessing Generative Models", NeurIPS 2019, Sec. 2 (Eq. 1-3): each set's manifold is the union
  of balls around its samples with radius the distance to their k-th nearest neighbour in the set;
  precision = share of fake samples inside the real manifold, recall = share of real samples
  inside the fake manifold.
- `sample_quality(real_images, fake_images, extractor=None, batch_size=256)`: all of them on
  images, through a `FeatureExtractor`, with the feature space's name in the result.

Feature spaces (a `FeatureExtractor` maps float images (B, 3, H, W) in [0, 1] to (B, D) and
carries a `feature_space` name):
- `load_feature_net()`: zoo's own `ShapesFeatureNet` (zoo-shapes-classifier-v1, 128-d), trained on
  ClassImageSet labels and shipped with the repository: the default, and the right space for
  generators trained on zoo's procedural data (as a LeNet is for MNIST).
- `inception_extractor(weights_path)`: the FID Inception-v3 (pool3, 2048-d) of torch-fidelity /
  torchmetrics, with weights from a LOCAL file only (argument or $ZOO_INCEPTION_WEIGHTS); nothing is
  ever downloaded. Numbers in this space are comparable with published FIDs only when computed
  on the same image resolution and sample counts.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from zoo.metrics.feature_net import FEATURE_NET_NAME, ShapesFeatureNet, load_feature_net

__all__ = [
    "FEATURE_NET_NAME",
    "FeatureExtractor",
    "ShapesFeatureNet",
    "fid",
    "feature_statistics",
    "frechet_distance",
    "inception_extractor",
    "kid",
    "load_feature_net",
    "precision_recall",
    "sample_quality",
    "extract_features",
]

INCEPTION_ENV = "ZOO_INCEPTION_WEIGHTS"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


@runtime_checkable
class FeatureExtractor(Protocol):
    """images float (B, 3, H, W) in [0, 1] -> features (B, D); `feature_space` names the space."""

    feature_space: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


# ------------------------------------------------------------------ metrics on features


def _as_array(feats: Any) -> np.ndarray:
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().cpu().double().numpy()
    arr = np.asarray(feats, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"features must be a (N, D) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("features contain NaN or infinite values")
    return arr


def feature_statistics(feats: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, float64 (N >= 2)."""
    x = _as_array(feats)
    if len(x) < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {len(x)}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a covariance matrix (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) (Heusel et al. 2017).

    Tr (S1 S2)^{1/2} = Tr (S1^{1/2} S2 S1^{1/2})^{1/2}: the eigenvalues of S1 S2 equal those of the
    symmetric PSD matrix S1^{1/2} S2 S1^{1/2}, whose square roots `eigh` gives stably (no complex
    parts to discard, unlike scipy.linalg.sqrtm on a nearly singular product)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    r1 = _psd_sqrt(s1)
    eig = np.linalg.eigvalsh(r1 @ s2 @ r1)
    tr_sqrt = float(np.sqrt(np.clip(eig, 0, None)).sum())
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def fid(real_feats: Any, fake_feats: Any) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets (FID in that space)."""
    return frechet_distance(*feature_statistics(real_feats), *feature_statistics(fake_feats))


def _poly_kernel(a: torch.Tensor, b: torch.Tensor, degree: int, gamma: float, coef: float) -> torch.Tensor:
    return (a @ b.T * gamma + coef) ** degree


def _mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, degree: int, gamma: float, coef: float) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, Lemma 6; Bińkowski et al. 2018, Eq. 3): within-set
    kernel means over i != j, cross-set mean over all pairs."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = (_poly_kernel(a, b, degree, gamma, coef) for a, b in ((x, x), (y, y), (x, y)))
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * kxy.mean())


def kid(
    real: Any,
    fake: Any,
    subsets: int = 100,
    subset_size: int = 1000,
    *,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance in the given feature space: (mean, std) of the unbiased polynomial-
    kernel MMD^2 over `subsets` random subsets of `subset_size` real and fake samples (drawn without
    replacement within a subset, seeded). gamma defaults to 1/D. std is the population std over
    subsets, as torchmetrics reports it. `subset_size` larger than a set raises, as in torchmetrics."""
    x, y = torch.from_numpy(_as_array(real)), torch.from_numpy(_as_array(fake))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real and fake features differ in dimension: {x.shape[1]} vs {y.shape[1]}")
    if subset_size < 2 or subset_size > min(len(x), len(y)):
        raise ValueError(f"subset_size must be between 2 and the smaller set's size ({min(len(x), len(y))}), got {subset_size}")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    gen = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        xi = x[torch.randperm(len(x), generator=gen)[:subset_size]]
        yi = y[torch.randperm(len(y), generator=gen)[:subset_size]]
        scores.append(_mmd2_unbiased(xi, yi, degree, gamma, coef))
    s = np.asarray(scores)
    return float(s.mean()), float(s.std())


def _kth_nn_radius(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each sample to its k-th nearest neighbour within the set (itself excluded)."""
    radii = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i : i + chunk], x, compute_mode="donot_use_mm_for_euclid_dist")
        radii.append(d.kthvalue(k + 1, dim=1).values)  # the 1st smallest is the sample itself (0)
    return torch.cat(radii)


def _inside(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """For each query: is it within radius of at least one support sample?"""
    hits = []
    for i in range(0, len(queries), chunk):
        d = torch.cdist(queries[i : i + chunk], support, compute_mode="donot_use_mm_for_euclid_dist")
        hits.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(hits)


def precision_recall(real: Any, fake: Any, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """(precision, recall) by k-NN manifolds (Kynkäänniemi et al. 2019, Sec. 2, Eq. 1-3; k = 3 as there)."""
    x, y = torch.from_numpy(_as_array(real)), torch.from_numpy(_as_array(fake))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real and fake features differ in dimension: {x.shape[1]} vs {y.shape[1]}")
    if min(len(x), len(y)) <= k:
        raise ValueError(f"need more than k={k} samples in each set, got {len(x)} real and {len(y)} fake")
    real_radii, fake_radii = _kth_nn_radius(x, k, chunk), _kth_nn_radius(y, k, chunk)
    precision = float(_inside(y, x, real_radii, chunk).double().mean())
    recall = float(_inside(x, y, fake_radii, chunk).double().mean())
    return precision, recall


# ------------------------------------------------------------------ images -> features


def _to_chw_float(image: Any) -> torch.Tensor:
    """One image (HxWx3 / HxW uint8 or float array, CHW tensor, PIL) -> float (3, H, W) in [0, 1]."""
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
        if t.ndim == 3 and t.shape[0] in (1, 3):
            return t.expand(3, -1, -1) if t.shape[0] == 1 else t
        raise ValueError(f"image tensors must be (3, H, W), got {tuple(t.shape)}")
    if hasattr(image, "convert"):  # PIL
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise ValueError(f"image arrays must be (H, W, 3) or (H, W), got {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    return t.float() / 255.0 if arr.dtype == np.uint8 else t.float()


def _batches(images: Any, batch_size: int) -> Iterator[torch.Tensor]:
    """Float (B, 3, H, W) batches in [0, 1] from a tensor (N, 3, H, W), an array (N, H, W, 3), a
    sequence of images, a dataset of {"image": ...} items, or a `Generation` (its `.images`)."""
    if hasattr(images, "images") and not isinstance(images, (torch.Tensor, np.ndarray)):
        images = images.images  # zoo.results.Generation
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        for i in range(0, len(images), batch_size):
            b = images[i : i + batch_size]
            yield b.float() / 255.0 if b.dtype == torch.uint8 else b.float()
        return
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    batch: list[torch.Tensor] = []
    iterable: Iterable = (images[i] for i in range(len(images))) if hasattr(images, "__getitem__") and hasattr(images, "__len__") else images
    for item in iterable:
        if isinstance(item, dict):
            item = item["image"]
        batch.append(_to_chw_float(item))
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


@torch.no_grad()
def extract_features(images: Any, extractor: Any, batch_size: int = 256) -> torch.Tensor:
    """(N, D) float64 features of `images` (any form `sample_quality` takes) through `extractor`."""
    device = next(extractor.parameters()).device if isinstance(extractor, nn.Module) and any(True for _ in extractor.parameters()) else torch.device("cpu")
    if isinstance(extractor, nn.Module):
        extractor.eval()
    feats = [extractor(b.to(device)).detach().double().cpu().reshape(len(b), -1) for b in _batches(images, batch_size)]
    if not feats:
        raise ValueError("no images given")
    return torch.cat(feats)


def _feature_space(extractor: Any, dim: int) -> str:
    name = getattr(extractor, "feature_space", None)
    if name:
        return str(name)
    base = getattr(extractor, "name", None) or type(extractor).__name__
    return f"{base} ({dim}-d)"


def sample_quality(
    real_images: Any,
    fake_images: Any,
    extractor: Any = None,
    batch_size: int = 256,
    *,
    k: int = 3,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """FID, KID (mean, std), precision and recall of `fake_images` against `real_images`.

    Images: float (N, 3, H, W) in [0, 1] or uint8, arrays (N, H, W, 3), lists of HxWx3 arrays,
    a dataset of {"image": ...} items (e.g. ClassImageSet) or a `Generation`. `extractor`
    defaults to zoo's shipped feature net (`load_feature_net()`). The KID subset size is capped at
    the smaller set (one subset when that is both whole sets). The result names its feature space and the sample counts, since neither FID
    nor KID is comparable across feature spaces or (FID) across sample counts.
    """
    extractor = load_feature_net() if extractor is None else extractor
    real = extract_features(real_images, extractor, batch_size)
    fake = extract_features(fake_images, extractor, batch_size)
    subset = min(kid_subset_size, len(real), len(fake))
    if subset == len(real) == len(fake):
        kid_subsets = 1  # every "subset" would be both whole sets: one is the same estimate
    kid_mean, kid_std = kid(real, fake, subsets=kid_subsets, subset_size=subset, seed=seed)
    precision, recall = precision_recall(real, fake, k=k)
    return {
        "feature_space": _feature_space(extractor, real.shape[1]),
        "fid": fid(real, fake),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "kid_subsets": kid_subsets,
        "kid_subset_size": subset,
        "precision": precision,
        "recall": recall,
        "k": k,
        "num_real": len(real),
        "num_fake": len(fake),
    }


# ------------------------------------------------------------------ the FID Inception, from a local file


class InceptionExtractor(nn.Module):
    """torchmetrics' `NoTrainInceptionV3` (torch-fidelity's FID Inception-v3) behind the
    `FeatureExtractor` protocol: float images in [0, 1] are rounded to uint8 (the network's input
    convention) and resized to 299 px by the network itself."""

    def __init__(self, net: nn.Module, feature: str, antialias: bool) -> None:
        super().__init__()
        self.net = net
        self.feature_space = f"fid-inception-v3 (torch-fidelity, TF 2015-12-05 weights) pool{'3' if feature == '2048' else feature} ({feature}-d)" + (
            ", antialiased resize" if antialias else "")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        return self.net(images)


def inception_extractor(weights_path: str | Path | None = None, feature: int = 2048, antialias: bool = False) -> InceptionExtractor:
    """The FID Inception-v3 with weights from a LOCAL file: `weights_path`, else $ZOO_INCEPTION_WEIGHTS.

    The file is torch-fidelity's `weights-inception-2015-12-05-6726825d.pth` (TF's FID Inception
    converted to PyTorch; also in safetensors). It is read pickle-free (safetensors, or
    `torch.load(weights_only=True)`) and handed to the network in memory; nothing is downloaded.
    `antialias=False` (default) resizes as TF1 and torch-fidelity do, which published FIDs use;
    torchmetrics' own default is `antialias=True`. Needs the `torch-fidelity` package.
    """
    path = weights_path if weights_path not in (None, "") else os.environ.get(INCEPTION_ENV) or None
    if path is None:
        raise FileNotFoundError(
            f"no FID Inception weights: zoo never downloads them. Pass weights_path= or set ${INCEPTION_ENV} to a local copy "
            f"of torch-fidelity's {INCEPTION_FILE}; or measure in zoo's own feature space (load_feature_net())."
        )
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"FID Inception weights {path} not found (from {'weights_path' if weights_path else '$' + INCEPTION_ENV}); zoo never downloads them")
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
    except ImportError as err:  # pragma: no cover - torchmetrics is a dependency
        raise ModuleNotFoundError(f"the FID Inception needs torchmetrics: {err}") from err
    if not _TORCH_FIDELITY_AVAILABLE:
        raise ModuleNotFoundError("the FID Inception network comes from torch-fidelity, which is not installed: pip install torch-fidelity==0.4.0")
    if feature not in (64, 192, 768, 2048):
        raise ValueError(f"feature must be one of 64, 192, 768, 2048, got {feature}")
    from zoo.weights import read_state

    state, _ = read_state(path)  # safetensors, or torch.load(weights_only=True): no code runs
    buffer = io.BytesIO()
    torch.save(state, buffer)  # only tensors: the library's own torch.load of it cannot run code
    buffer.seek(0)
    net = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(feature)], feature_extractor_weights_path=buffer, antialias=antialias)
    return InceptionExtractor(net, str(feature), antialias).eval()
