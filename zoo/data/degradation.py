"""Real-ESRGAN's second-order degradation: LR images made from HR ones on the fly.

Wang, Xie, Dong, Shan. "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure Synthetic
Data", ICCVW 2021, Sec. 3 (classical model y = [(x * k) down + n]_JPEG applied twice, then a sinc
filter). Ranges are those of the ResShift / SinSR / HF-Diff SR configs (`degradation:` and
`data.train.params` of configs/HF-Diff.yaml), the defaults of `DegradationConfig`:

first order   blur (p 1): kernel size 7..21 (odd), kernel types iso / aniso / generalized iso / generalized
              aniso / plateau iso / plateau aniso with probabilities .45/.25/.12/.03/.12/.03, sigma 0.2-3,
              generalized beta 0.5-4, plateau beta 1-2, a sinc kernel instead with p 0.1;
              resize up / down / keep p .2/.7/.1, scale 0.15-1.5, area / bilinear / bicubic;
              noise: Gaussian (p 0.5, sigma 1-30 /255, grey p 0.4) else Poisson (scale 0.05-3, grey p 0.4);
              JPEG quality 30-95.
second order  (p 0.5) blur with p 0.8, sigma 0.2-1.5; resize p .3/.4/.3, scale 0.3-1.2 of the LR size, noise sigma 1-25 / Poisson 0.05-2.5, JPEG 30-95.
final         resize to HR / scale and a sinc filter (p 0.8) and JPEG 30-95 in a random order.

Differences: kernels and resizes run in OpenCV on uint8-free float images, JPEG through OpenCV's
encoder (Real-ESRGAN uses DiffJPEG on GPU); `second_order_prob` 0.5 (HF-Diff.yaml) decides whether
the second pass runs at all. Every draw comes from one `numpy` generator, so `degrade(hr, rng)` is a
deterministic function of the generator's seed (`DegradedPairs` seeds it by (seed, index)).
InterLCM (blind face restoration) uses CodeFormer's single-pass pipeline instead (`codeformer_degrade`, at
the end of this module).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.data._rng import rng_for

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC)


@dataclass
class DegradationConfig:
    """Real-ESRGAN's ranges (HF-Diff.yaml); `scale` is the SR factor."""

    scale: int = 4
    kernel_sizes: tuple[int, int] = (7, 21)
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    second_order_prob: float = 0.5
    second_blur_prob: float = 0.8
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    jpeg_range2: tuple[float, float] = (30.0, 95.0)
    final_sinc_prob: float = 0.8


# --------------------------------------------------------------------------- kernels


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ax = np.arange(size, dtype=np.float64) - size // 2
    return np.meshgrid(ax, ax, indexing="xy")


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float = 2.0, plateau: bool = False) -> np.ndarray:
    """Anisotropic (generalised) Gaussian or plateau kernel (Real-ESRGAN Eq. 2-3), normalised to sum 1.
    beta = 2 is the Gaussian; plateau: 1 / (1 + (x^T S^-1 x)^beta)."""
    x, y = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * x + s * y, -s * x + c * y
    q = (u / sigma_x) ** 2 + (v / sigma_y) ** 2  # x^T Sigma^-1 x
    k = 1.0 / (1.0 + q**beta) if plateau else np.exp(-0.5 * q ** (beta / 2.0))
    return (k / k.sum()).astype(np.float32)


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """Circular low-pass (2-D sinc, jinc) kernel with cutoff in radians, normalised (Real-ESRGAN Eq. 4)."""
    from scipy.special import j1

    x, y = _grid(size)
    r = np.sqrt(x**2 + y**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = cutoff * j1(cutoff * r) / (2 * np.pi * r)
    k[size // 2, size // 2] = cutoff**2 / (4 * np.pi)
    return (k / k.sum()).astype(np.float32)


def random_kernel(rng: np.random.Generator, cfg: DegradationConfig, sigma: tuple[float, float], sinc_prob: float) -> np.ndarray:
    """One blur kernel of a random type and size (Real-ESRGAN's `random_mixed_kernels`)."""
    lo, hi = cfg.kernel_sizes
    size = int(rng.choice(np.arange(lo, hi + 1, 2)))
    if rng.random() < sinc_prob:
        cutoff = rng.uniform(math.pi / 3, math.pi) if size < 13 else rng.uniform(math.pi / 5, math.pi)
        return sinc_kernel(size, cutoff)
    kind = KERNEL_TYPES[int(rng.choice(len(KERNEL_TYPES), p=np.asarray(cfg.kernel_prob) / sum(cfg.kernel_prob)))]
    sx = rng.uniform(*sigma)
    sy, theta = (sx, 0.0) if kind.endswith("iso") and not kind.endswith("aniso") else (rng.uniform(*sigma), rng.uniform(-math.pi, math.pi))
    if kind.startswith("generalized"):
        beta = rng.uniform(cfg.betag_range[0], 1.0) if rng.random() < 0.5 else rng.uniform(1.0, cfg.betag_range[1])
        return gaussian_kernel(size, sx, sy, theta, beta=beta)
    if kind.startswith("plateau"):
        return gaussian_kernel(size, sx, sy, theta, beta=rng.uniform(*cfg.betap_range), plateau=True)
    return gaussian_kernel(size, sx, sy, theta)


# --------------------------------------------------------------------------- one degradation pass


def _filter(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def _resize(image: np.ndarray, rng: np.random.Generator, probs: Sequence[float], scale_range: tuple[float, float],
            base: tuple[int, int] | None = None) -> np.ndarray:
    """Random up / down / keep resize by a factor of `base` (h, w) (default: the image's own size;
    the second pass scales relative to the final LR size, as Real-ESRGAN)."""
    kind = int(rng.choice(3, p=np.asarray(probs) / sum(probs)))
    scale = rng.uniform(1.0, scale_range[1]) if kind == 0 else rng.uniform(scale_range[0], 1.0) if kind == 1 else 1.0
    mode = RESIZE_MODES[int(rng.integers(3))]
    h, w = image.shape[:2]
    bh, bw = base or (h, w)
    size = (max(1, round(bw * scale)), max(1, round(bh * scale)))
    return cv2.resize(image, size, interpolation=mode) if size != (w, h) else image


def _noise(image: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig, sigma: tuple[float, float],
           poisson: tuple[float, float]) -> np.ndarray:
    grey = rng.random() < cfg.gray_noise_prob
    h, w = image.shape[:2]
    if rng.random() < cfg.gaussian_noise_prob:
        s = rng.uniform(*sigma) / 255.0
        n = rng.standard_normal((h, w, 1) if grey else (h, w, 3)).astype(np.float32) * s
    else:  # Poisson noise, its strength scaled (Real-ESRGAN `random_add_poisson_noise`)
        scale = rng.uniform(*poisson)
        src = image.mean(axis=2, keepdims=True) if grey else image
        q = np.clip(src, 0, 1) * 255.0
        vals = 2 ** np.ceil(np.log2(max(len(np.unique(np.round(q))), 2)))
        n = ((rng.poisson(q / 255.0 * vals) / vals - q / 255.0) * scale).astype(np.float32)
    return np.clip(image + n, 0.0, 1.0)


def _jpeg(image: np.ndarray, rng: np.random.Generator, quality: tuple[float, float]) -> np.ndarray:
    q = int(rng.uniform(*quality))
    u8 = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if decoded is None:
        raise RuntimeError("JPEG decoding failed")
    return np.asarray(decoded)[:, :, ::-1].astype(np.float32) / 255.0


def degrade(hr: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig | None = None) -> np.ndarray:
    """HR (H, W, 3) float32 in [0, 1] -> LR (H / scale, W / scale, 3) float32 in [0, 1] (module docstring)."""
    cfg = cfg or DegradationConfig()
    h, w = hr.shape[:2]
    out_size = (w // cfg.scale, h // cfg.scale)
    x = np.ascontiguousarray(hr, dtype=np.float32)
    # first order
    x = _filter(x, random_kernel(rng, cfg, cfg.blur_sigma, cfg.sinc_prob))
    x = _resize(x, rng, cfg.resize_prob, cfg.resize_range)
    x = _noise(x, rng, cfg, cfg.noise_range, cfg.poisson_scale_range)
    x = _jpeg(x, rng, cfg.jpeg_range)
    # second order
    if rng.random() < cfg.second_order_prob:
        if rng.random() < cfg.second_blur_prob:
            x = _filter(x, random_kernel(rng, cfg, cfg.blur_sigma2, cfg.sinc_prob2))
        x = _resize(x, rng, cfg.resize_prob2, cfg.resize_range2, base=(out_size[1], out_size[0]))
        x = _noise(x, rng, cfg, cfg.noise_range2, cfg.poisson_scale_range2)
    # final: resize back to HR / scale + sinc, and JPEG, in a random order
    mode = RESIZE_MODES[int(rng.integers(3))]
    final_sinc = rng.random() < cfg.final_sinc_prob
    kernel = sinc_kernel(int(rng.choice(np.arange(cfg.kernel_sizes[0], cfg.kernel_sizes[1] + 1, 2))),
                         rng.uniform(math.pi / 3, math.pi)) if final_sinc else None

    def resize_sinc(img: np.ndarray, kernel: np.ndarray | None = kernel) -> np.ndarray:
        img = cv2.resize(img, out_size, interpolation=mode)
        return _filter(img, kernel) if kernel is not None else img

    if rng.random() < 0.5:
        x = _jpeg(resize_sinc(x), rng, cfg.jpeg_range2)
    else:
        x = resize_sinc(_jpeg(x, rng, cfg.jpeg_range2))
    return np.clip(x, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- datasets


def _hwc(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3], dtype=np.float32)


def bundled_hr_images() -> list[np.ndarray]:
    """HR sources for CPU training: scikit-image's photographs (`zoo.data.natural`) and the
    procedural textures (`zoo.data.textures`), float32 (H, W, 3) in [0, 1]."""
    from zoo.data.natural import natural_images
    from zoo.data.textures import texture_names, texture_source

    return [_hwc(im) for im in natural_images()] + [_hwc(texture_source(n)) for n in texture_names()]


class DegradedPairs(Dataset):
    """On-the-fly (LR, HR) pairs: item i is a random `gt_size` crop of HR image i % n (flipped with
    p 1/2), degraded with `degrade`; everything drawn from rng_for(seed, "degrade", i), so an item is
    a function of (seed, index). Items: {"lq": (3, g/s, g/s), "gt": (3, g, g)} float in [0, 1]."""

    def __init__(self, images: Sequence[np.ndarray] | Callable[[], Sequence[np.ndarray]], gt_size: int = 256, seed: int = 0,
                 length: int | None = None, config: DegradationConfig | None = None, hflip: bool = True) -> None:
        self.images = [_hwc(im) for im in (images() if callable(images) else images)]
        if not self.images:
            raise ValueError("DegradedPairs needs at least one HR image")
        self.config = config or DegradationConfig()
        if gt_size % self.config.scale:
            raise ValueError(f"gt_size {gt_size} must be a multiple of the scale {self.config.scale}")
        self.gt_size, self.seed, self.hflip = gt_size, seed, hflip
        self.length = length or len(self.images)

    def __len__(self) -> int:
        return self.length

    def crop(self, index: int, rng: np.random.Generator) -> np.ndarray:
        image = self.images[index % len(self.images)]
        g = self.gt_size
        h, w = image.shape[:2]
        if h < g or w < g:
            image = cv2.resize(image, (max(w, g), max(h, g)), interpolation=cv2.INTER_CUBIC)
            h, w = image.shape[:2]
        top, left = int(rng.integers(0, h - g + 1)), int(rng.integers(0, w - g + 1))
        crop = image[top : top + g, left : left + g]
        if self.hflip and rng.random() < 0.5:
            crop = crop[:, ::-1]
        return np.ascontiguousarray(crop)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = rng_for(self.seed, "degrade", index)
        hr = self.crop(index, rng)
        lr = degrade(hr, rng, self.config)
        return {"lq": torch.from_numpy(lr).permute(2, 0, 1).contiguous(), "gt": torch.from_numpy(hr).permute(2, 0, 1).contiguous()}



# --------------------------------------------------------------------------- CodeFormer's blind face degradation


@dataclass
class CodeFormerDegradation:
    """CodeFormer's (Zhou et al., NeurIPS 2022, Sec. 4) synthetic LQ faces, the ranges InterLCM trains with
    (sen-mao/InterLCM `options/interlcm.yml`, "small degradation"): y = [(x * k_sigma) down_r + n_delta]_JPEG_q,
    then resized back to the input size. k: a 41 x 41 Gaussian kernel, isotropic or anisotropic with p 1/2
    each, sigma in [0.1, 10] (rotation in [-pi, pi] when anisotropic); r in [1, 12] (bilinear); Gaussian
    noise delta in [0, 15] / 255; JPEG quality in [60, 100)."""

    kernel_size: int = 41
    blur_sigma: tuple[float, float] = (0.1, 10.0)
    downsample_range: tuple[float, float] = (1.0, 12.0)
    noise_range: tuple[float, float] = (0.0, 15.0)
    jpeg_range: tuple[int, int] = (60, 100)
    iso_prob: float = 0.5


def codeformer_degrade(hq: np.ndarray, rng: np.random.Generator, cfg: CodeFormerDegradation | None = None) -> np.ndarray:
    """HQ (H, W, 3) float32 in [0, 1] -> LQ of the same size (CodeFormerDegradation). A kernel larger than the
    image is cut to the image's odd size (small CPU crops)."""
    cfg = cfg or CodeFormerDegradation()
    h, w = hq.shape[:2]
    x = np.ascontiguousarray(hq, dtype=np.float32)
    size = min(cfg.kernel_size, (min(h, w) // 2) * 2 + 1)
    sx = rng.uniform(*cfg.blur_sigma)
    if rng.random() < cfg.iso_prob:
        kernel = gaussian_kernel(size, sx, sx, 0.0)
    else:
        kernel = gaussian_kernel(size, sx, rng.uniform(*cfg.blur_sigma), rng.uniform(-math.pi, math.pi))
    x = _filter(x, kernel)
    scale = rng.uniform(*cfg.downsample_range)
    x = np.asarray(cv2.resize(x, (max(1, int(w // scale)), max(1, int(h // scale))), interpolation=cv2.INTER_LINEAR), dtype=np.float32)
    sigma = rng.uniform(*cfg.noise_range) / 255.0
    x = np.clip(x + rng.standard_normal(x.shape).astype(np.float32) * np.float32(sigma), 0.0, 1.0).astype(np.float32)
    x = _jpeg(x, rng, (float(cfg.jpeg_range[0]), float(cfg.jpeg_range[1]) - 1e-6))
    x = np.asarray(cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR), dtype=np.float32)
    return np.clip(np.round(x * 255.0) / 255.0, 0.0, 1.0).astype(np.float32)
