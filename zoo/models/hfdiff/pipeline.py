"""HF-Diff predictor: an LR image of any size -> ImageResult (the x4 SR image).

Graphs (tensor in / tensor out, each exported on its own, all at the fixed LR tile size):
- `sr`: (LR tile, noise) -> SR tile: encoder of the bicubic-upsampled LR, x_T = y0 + kappa sqrt(eta_T) noise,
  one student call, decoder (the one-step model);
- `teacher_step`: (x_t, LR tile, t, noise) -> (x_{t-1}, x0): one step of the 15-step ResShift teacher;
- `encode_lr` / `decode`: the codec ends of the teacher's chain, so the 15-step sampler loops in Python
  over graph calls and runs the same over PyTorch and ONNX Runtime.

Large inputs run as overlapping tiles (`config.tile_size` LR pixels, `config.tile_overlap` shared),
blended with a linear ramp at the output resolution, so no seam shows where tiles meet. Tiles are
processed one tile row at a time and finished rows leave the float accumulator as uint8, so memory
holds one band of 4 x tile output rows (plus the uint8 result), whatever the image size. The noise
(x_T's and each teacher step's) is drawn per image from `seed` over the whole LR canvas, so tiles
agree on it where they overlap and an image does not depend on the others in its batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.imageio import load_image, to_tensor, to_uint8_array
from zoo.pipeline import GraphSpec, Pipeline, TensorSpec
from zoo.results import ImageResult

from .model import DecodeGraph, EncodeLRGraph, HFDiffConfig, HFDiffModel, SRGraph, TeacherStepGraph

SAMPLERS = ("one-step", "teacher")


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Offsets covering [0, length) with the last tile flush with the end (length >= tile)."""
    if length <= tile:
        return [0]
    return list(range(0, length - tile, stride)) + [length - tile]


def blend_window(size: int, ramp: int) -> Tensor:
    """(size, size) weights rising linearly over `ramp` pixels from each edge, never zero."""
    r = torch.minimum(torch.arange(1, size + 1), torch.arange(size, 0, -1)).clamp(max=max(ramp, 1)).float()
    r = r / r.max()
    return r[:, None] * r[None, :]


class HFDiffPipeline(Pipeline):
    model: HFDiffModel
    config: HFDiffConfig
    max_batch = 8

    def graph_specs(self) -> list[GraphSpec]:
        cfg = self.config
        t, c, s = cfg.tile_size, cfg.unet.latent_channels, cfg.scale
        dims = {"batch": (1, 2, 16)}
        note = (f"one LR tile: {t}x{t} LR pixels (latent {t}x{t}, SR {t * s}x{t * s}); the pipeline tiles larger images "
                "with overlap and blends them")
        lr = TensorSpec("lr", ("batch", 3, t, t))
        latent = ("batch", c, t, t)
        steps = cfg.steps
        return [
            GraphSpec("sr", SRGraph(self.model), (lr, TensorSpec("noise", latent, value_range=(-2.0, 2.0))),
                      (TensorSpec("sr", ("batch", 3, t * s, t * s)),), dims=dict(dims), note=note),
            GraphSpec("teacher_step", TeacherStepGraph(self.model),
                      (TensorSpec("latents", latent, value_range=(-2.0, 2.0)), lr,
                       TensorSpec("timestep", ("batch",), dtype="int64", value_range=(0, steps - 1), valid_range=(0, steps - 1)),
                       TensorSpec("noise", latent, value_range=(-2.0, 2.0))),
                      (TensorSpec("next", latent, value_range=(-3.0, 3.0)), TensorSpec("x0", latent, value_range=(-2.0, 2.0))),
                      dims=dict(dims), note=note),
            GraphSpec("encode_lr", EncodeLRGraph(self.model), (lr,), (TensorSpec("latents", latent, value_range=(-2.0, 2.0)),),
                      dims=dict(dims), note=note),
            GraphSpec("decode", DecodeGraph(self.model), (TensorSpec("latents", latent, value_range=(-1.5, 1.5)),),
                      (TensorSpec("image", ("batch", 3, t * s, t * s)),), dims=dict(dims), note=note),
        ]

    # -- tile runners -----------------------------------------------------------------------
    def _one_step(self, lr: Tensor, noise: Tensor, _step_noise: list[Tensor]) -> Tensor:
        return self.run_graph("sr", lr, noise)[0].float().cpu()

    def _teacher(self, lr: Tensor, noise: Tensor, step_noise: list[Tensor]) -> Tensor:
        sched = self.model.schedule
        y0 = self.run_graph("encode_lr", lr)[0].float().cpu()
        x = sched.prior_sample(y0, noise)
        for i, step in enumerate(reversed(range(self.config.steps))):
            t = torch.full((len(lr),), step, dtype=torch.int64)
            x = self.run_graph("teacher_step", x, lr, t, step_noise[i])[0].float().cpu()
        return self.run_graph("decode", x)[0].float().cpu()

    # -- tiling -----------------------------------------------------------------------------
    def upscale(self, image: Tensor, seed: int = 0, sampler: str = "one-step", tile: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
        """(3, H, W) in [0, 1] -> (4H, 4W, 3) uint8 and info (tiles, peak accumulator size)."""
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        cfg = self.config
        size, s = cfg.tile_size, cfg.scale
        overlap = min(cfg.tile_overlap, size // 2)
        if tile and tile != size:
            raise ValueError(f"the graphs run at {size}x{size} LR tiles")
        h, w = image.shape[-2:]
        ph, pw = max(h, size), max(w, size)
        if (ph, pw) != (h, w):  # smaller than a tile: replicate-pad, crop the result
            image = F.pad(image[None], (0, pw - w, 0, ph - h), mode="replicate")[0]
        gen = torch.Generator().manual_seed(int(seed))
        c = cfg.unet.latent_channels
        noise = torch.randn(c, ph, pw, generator=gen)
        step_noise = [torch.randn(c, ph, pw, generator=gen) for _ in range(cfg.steps)] if sampler == "teacher" else []
        run = self._one_step if sampler == "one-step" else self._teacher
        ys, xs = tile_starts(ph, size, size - overlap), tile_starts(pw, size, size - overlap)
        weight = blend_window(size * s, overlap * s)
        out = np.zeros((ph * s, pw * s, 3), dtype=np.uint8)
        band_top, band = 0, torch.zeros(4, size * s, pw * s)  # rows [band_top, band_top + 4 * tile): RGB + weight
        peak = band.numel()
        for row, y in enumerate(ys):
            if row:  # rows above this tile row are final: flush them, slide the band down
                done = (y - ys[row - 1]) * s
                self._flush(band[:, :done], out, band_top)
                band = torch.cat([band[:, done:], torch.zeros(4, done, pw * s)], dim=1)
                band_top += done
            offsets = [(y, x) for x in xs]
            for i in range(0, len(offsets), self.max_batch):
                chunk = offsets[i : i + self.max_batch]
                lr = torch.stack([image[:, yy : yy + size, xx : xx + size] for yy, xx in chunk])
                nz = torch.stack([noise[:, yy : yy + size, xx : xx + size] for yy, xx in chunk])
                sn = [torch.stack([n[:, yy : yy + size, xx : xx + size] for yy, xx in chunk]) for n in step_noise]
                sr = run(lr, nz, sn).clamp(0, 1)
                for k, (yy, xx) in enumerate(chunk):
                    oy, ox = (yy * s) - band_top, xx * s
                    band[:3, oy : oy + size * s, ox : ox + size * s] += sr[k] * weight
                    band[3, oy : oy + size * s, ox : ox + size * s] += weight
        self._flush(band, out, band_top)
        info = {"tiles": len(ys) * len(xs), "tile": size, "overlap": overlap, "accumulator_elements": peak}
        return out[: h * s, : w * s], info

    @staticmethod
    def _flush(band: Tensor, out: np.ndarray, top: int) -> None:
        rows = min(band.shape[1], out.shape[0] - top)
        if rows <= 0:
            return
        rgb = band[:3, :rows] / band[3:4, :rows].clamp_min(1e-8)
        out[top : top + rows] = to_uint8_array(rgb)

    # -- prediction ---------------------------------------------------------------------------
    def _predict(self, items: list[Any], seed: int = 0, sampler: str = "one-step", **_: Any) -> list[ImageResult]:
        results = []
        for item in items:
            image = to_tensor(load_image(item))
            sr, info = self.upscale(image, seed=seed, sampler=sampler)
            info.update({"sampler": sampler, "network_calls": 1 if sampler == "one-step" else self.config.steps,
                         "scale": self.config.scale, "input_size": [int(image.shape[-2]), int(image.shape[-1])],
                         "images": ["sr"]})
            results.append(ImageResult([sr], info=info))
        return results
