"""DocDiff predictor: a document page of any size -> ImageResult (restored page, CP output).

Pages are cut into `tile_size` (128) tiles, the training crop size, as the reference's
native-resolution test does; unlike the reference, tiles overlap by a quarter and are blended
with a linear ramp, so no seam shows between them. Pages smaller than a tile are padded white
(the reference pads with ones). All tiles of all pages run batched (in chunks of
`max_batch`, each blended into its page before the next is cut) through the two graphs:

- `coarse`: CP(x), once per tile;
- `refine_step`: one deterministic HRR step (noisy residual, CP output, t, t_prev) ->
  (next residual, r_0), called `steps` times by the Python sampler loop below, so the loop
  runs the same over PyTorch and ONNX Runtime.

r_T is N(0, 1) noise drawn per page from `seed` over the whole padded page (overlapping tiles
share it), so a page's result does not depend on the other pages in the batch.
With `tile=False` a page runs whole, padded white to a multiple of 8.
"""

from __future__ import annotations

from typing import Any

import torch

from zoo.imageio import load_image, to_tensor, to_uint8_array
from zoo.pipeline import GraphSpec, Pipeline, TensorSpec
from zoo.results import ImageResult

from .model import CoarseGraph, DocDiff, DocDiffConfig, RefineStepGraph, sampling_timesteps


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets covering [0, length) with the last tile flush with the end (length >= tile)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def blend_window(tile: int, overlap: int) -> torch.Tensor:
    """(tile, tile) weights rising linearly over `overlap` pixels from each edge, never zero."""
    ramp = torch.minimum(torch.arange(1, tile + 1), torch.arange(tile, 0, -1)).clamp(max=max(overlap, 1)).float()
    ramp = ramp / ramp.max()
    return ramp[:, None] * ramp[None, :]


class DocDiffPipeline(Pipeline):
    model: DocDiff
    config: DocDiffConfig
    max_batch = 16

    def graph_specs(self) -> list[GraphSpec]:
        c = self.config.image_channels
        dims = {"batch": (1, 2, 16), "height": (32, self.config.tile_size, 1024), "width": (32, self.config.tile_size, 1024)}
        note = f"height and width must be multiples of {self.config.multiple} (three stride-2 levels)"
        image = ("batch", c, "height", "width")
        multiple = {"height": self.config.multiple, "width": self.config.multiple}
        return [
            GraphSpec("coarse", CoarseGraph(self.model), (TensorSpec("image", image),),
                      (TensorSpec("coarse", image),), dims=dict(dims), note=note, multiple_of=dict(multiple)),
            GraphSpec(
                "refine_step", RefineStepGraph(self.model),
                (TensorSpec("noisy", image, value_range=(-2.0, 2.0)), TensorSpec("coarse", image),
                 # t indexes the schedule's gamma table (t = -1 would divide by 1 - gamma = 0); t_prev = -1 ends the chain
                 TensorSpec("timestep", ("batch",), dtype="int64", value_range=(0, self.config.timesteps - 1),
                            valid_range=(0, self.config.timesteps - 1)),
                 TensorSpec("prev_timestep", ("batch",), dtype="int64", value_range=(-1, self.config.timesteps - 2),
                            valid_range=(-1, self.config.timesteps - 1))),
                (TensorSpec("next", image, value_range=(-2.0, 2.0)), TensorSpec("residual", image, value_range=(-1.0, 1.0))),
                dims=dict(dims), note=note, multiple_of=dict(multiple),
            ),
        ]

    # -- tiling --------------------------------------------------------------------------
    def _layout(self, height: int, width: int, tile: bool) -> tuple[int, int, list[tuple[int, int]], int]:
        """(padded H, padded W, tile offsets, tile size) for one page."""
        m = self.config.multiple
        if not tile:
            ph, pw = -(-height // m) * m, -(-width // m) * m
            return ph, pw, [(0, 0)], 0
        size = self.config.tile_size
        stride = size - size // 4
        ph, pw = max(height, size), max(width, size)
        offsets = [(y, x) for y in tile_starts(ph, size, stride) for x in tile_starts(pw, size, stride)]
        return ph, pw, offsets, size

    def _run_tiles(self, tiles: torch.Tensor, noise: torch.Tensor, pairs: list[tuple[int, int]],
                   given: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """CP (or the given condition) and the sampler on one chunk of same-size tiles."""
        coarse = given if given is not None else self.run_graph("coarse", tiles)[0]
        r = noise.to(coarse.device)
        for t, t_prev in pairs:
            tt = torch.full((len(tiles),), t, dtype=torch.int64)
            r, _ = self.run_graph("refine_step", r, coarse, tt, torch.full_like(tt, t_prev))
        return (coarse + r).float().cpu(), coarse.float().cpu()

    def restore(self, images: list[torch.Tensor], steps: int, tile: bool, seed: int,
                condition: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(restored, CP output) per (3, H, W) image. `condition=True` skips the CP and uses the
        images themselves as the HRR condition (plug-and-play refinement of another model's
        output), returning (refined, image)."""
        pairs = sampling_timesteps(self.config.timesteps, steps)
        jobs = []  # (page index, offset, tile tensor, noise tile)
        layouts = []
        for index, image in enumerate(images):
            h, w = image.shape[-2:]
            ph, pw, offsets, size = self._layout(h, w, tile)
            padded = torch.ones(3, ph, pw)
            padded[:, :h, :w] = image
            noise = torch.randn(3, ph, pw, generator=torch.Generator().manual_seed(seed))
            layouts.append((h, w, ph, pw, size))
            for y, x in offsets:
                th, tw = (size, size) if size else (ph, pw)
                jobs.append((index, y, x, padded[:, y : y + th, x : x + tw], noise[:, y : y + th, x : x + tw]))
        canvases = [(torch.zeros(3, ph, pw), torch.zeros(3, ph, pw), torch.zeros(1, ph, pw)) for _, _, ph, pw, _ in layouts]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for j, job in enumerate(jobs):
            by_shape.setdefault(tuple(job[3].shape), []).append(j)
        # One chunk of `max_batch` tiles at a time, blended into its page before the next is cut:
        # a whole-page stack of tiles, noise and outputs would hold ~4 copies of the page's tiles
        # (about 3 GB for a 6000² page) where a chunk holds megabytes.
        for indices in by_shape.values():
            for start in range(0, len(indices), self.max_batch):
                chunk = indices[start : start + self.max_batch]
                tiles = torch.stack([jobs[j][3] for j in chunk])
                noise = torch.stack([jobs[j][4] for j in chunk])
                out, coarse = self._run_tiles(tiles, noise, pairs, tiles if condition else None)
                for k, j in enumerate(chunk):
                    page, y, x = jobs[j][:3]
                    th, tw = out.shape[-2:]
                    size = layouts[page][4]
                    weight = blend_window(size, size // 4) if size else torch.ones(th, tw)
                    acc, acc_cp, acc_w = canvases[page]
                    acc[:, y : y + th, x : x + tw] += out[k] * weight
                    acc_cp[:, y : y + th, x : x + tw] += coarse[k] * weight
                    acc_w[:, y : y + th, x : x + tw] += weight
        results = []
        for (acc, acc_cp, acc_w), (h, w, *_rest) in zip(canvases, layouts):
            results.append(((acc / acc_w)[:, :h, :w].clamp(0, 1), (acc_cp / acc_w)[:, :h, :w].clamp(0, 1)))
        return results

    # -- prediction ----------------------------------------------------------------------
    def default_steps(self, steps: int) -> int:
        """`steps` option: 0 means the variant's default (config.sample_steps, or all T)."""
        return int(steps) or self.config.sample_steps or self.config.timesteps

    def _predict(self, items: list[Any], steps: int = 0, tile: bool = True, seed: int = 0, **_: Any) -> list[ImageResult]:
        images = [to_tensor(load_image(item)) for item in items]
        n = self.default_steps(steps)
        restored = self.restore(images, n, tile, seed)
        return [
            ImageResult([to_uint8_array(out), to_uint8_array(coarse)],
                        info={"images": ["restored", "coarse"], "steps": n, "tile": bool(tile), "task": self.config.task})
            for out, coarse in restored
        ]

    def refine(self, items: list[Any], steps: int = 0, tile: bool = True, seed: int = 0) -> list[ImageResult]:
        """HRR alone on other restorations (e.g. another deblurrer's output): the images are the
        condition in place of CP(x); returns the refined images (plug-and-play, no joint training)."""
        images = [to_tensor(load_image(item)) for item in items]
        n = self.default_steps(steps)
        return [ImageResult([to_uint8_array(out)], info={"images": ["refined"], "steps": n})
                for out, _ in self.restore(images, n, tile, seed, condition=True)]
