"""InterLCM predictor: a photo (or an aligned face) -> ImageResult: the restored photo, and the same with the restored
faces outlined (`boxes`; a second image when any face was restored).

1. Faces: MTCNN five landmarks, each face aligned to the FFHQ template at the model's crop size
   (faces.py, with its rules for no face, many faces, tiny faces and huge photos). `mode`: "auto" restores
   the detected faces, or the whole image as one aligned crop when none is found; "aligned" skips detection
   (the input is an aligned face, as the paper's test sets); "detect" returns a photo without faces unchanged.
2. Each crop: `visual` (the prompt embeddings), `encode` (the LQ latent = step 1's x0 estimate), re-noised to
   t1, then `denoise` at t1 ... t_{n-1} (re-noising in between, here in Python), `decode`; start "noise" runs
   the same networks from pure noise (the paper's ablation). The wavelet colour fix against the LQ crop.
3. Paste back through the inverse affine with a soft mask, inside each face's region.

Graphs (tensor in / out, each exported on its own): encode, visual, denoise, decode. The noise of face k of
an image comes from seed + k, whatever else is in the batch.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from zoo.imageio import load_image, to_uint8_array
from zoo.pipeline import GraphSpec, Pipeline, TensorSpec
from zoo.results import ImageResult

from .colorfix import wavelet_color_fix
from .faces import align_face, detector_available, find_faces, mtcnn_detect, paste_face
from .model import DecodeGraph, DenoiseGraph, EncodeGraph, InterLCMConfig, InterLCMModel, VisualGraph, lcm_timesteps

MODES = ("auto", "aligned", "detect")
STARTS = ("lq", "noise")


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB resize to (width, height): area when shrinking, cubic when growing."""
    if image.shape[1] == size[0] and image.shape[0] == size[1]:
        return image
    shrink = size[0] * size[1] < image.shape[0] * image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


class InterLCMPipeline(Pipeline):
    model: InterLCMModel
    config: InterLCMConfig
    max_batch = 16
    detect: Any = staticmethod(mtcnn_detect)  # tests and callers may put their own detector here

    def graph_specs(self) -> list[GraphSpec]:
        s = self.config.image_size
        c, h, w = self.model.latent_shape
        d = int(self.model.unet.config.cross_attention_dim)
        n = self.config.prompt_tokens
        image = TensorSpec("image", ("batch", 3, s, s))
        latent = ("batch", c, h, w)
        prompt = TensorSpec("prompt", ("batch", n, d), value_range=(-2.0, 2.0))
        dims = {"batch": (1, 2, 16)}
        note = f"face crops of {s}x{s} (the size the networks were trained at)"
        last = self.config.num_train_timesteps - 1
        return [
            GraphSpec("encode", EncodeGraph(self.model), (image,), (TensorSpec("latents", latent, value_range=(-3.0, 3.0)),),
                      dims=dict(dims), note=note),
            GraphSpec("visual", VisualGraph(self.model), (image,), (prompt,), dims=dict(dims), note=note),
            GraphSpec("denoise", DenoiseGraph(self.model),
                      (TensorSpec("latents", latent, value_range=(-3.0, 3.0)),
                       TensorSpec("timestep", ("batch",), dtype="int64", value_range=(0, last), valid_range=(0, last)),
                       prompt, TensorSpec("lq", ("batch", 3, s, s))),
                      (TensorSpec("denoised", latent, value_range=(-3.0, 3.0)),), dims=dict(dims),
                      note=note + "; the UNet and its ControlNet residuals, one LCM step's x0 estimate"),
            GraphSpec("decode", DecodeGraph(self.model), (TensorSpec("latents", latent, value_range=(-3.0, 3.0)),),
                      (TensorSpec("image", ("batch", 3, s, s)),), dims=dict(dims), note=note),
        ]

    # -- the chain over graph calls --------------------------------------------------------------
    def restore_crops(self, crops: torch.Tensor, seeds: list[int], steps: int = 0, start: str = "lq",
                      colour_fix: bool = True) -> torch.Tensor:
        """Aligned crops (N, 3, S, S) in [0, 1] -> restored crops, in chunks of `max_batch`."""
        if start not in STARTS:
            raise ValueError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
        n = int(steps) or self.config.num_steps
        timesteps = lcm_timesteps(self.config, n)
        shape = self.model.latent_shape
        out = []
        for i in range(0, len(crops), self.max_batch):
            lq = crops[i:i + self.max_batch].float()
            gens = [torch.Generator().manual_seed(int(s)) for s in seeds[i:i + self.max_batch]]
            noises = [torch.stack([torch.randn(shape, generator=g) for g in gens]) for _ in range(n)]
            prompt = self.run_graph("visual", lq)[0].float().cpu()
            if start == "lq":
                denoised = self.run_graph("encode", lq)[0].float().cpu()
                first, renoise = 1, noises[1:]
            else:
                x, first, renoise = noises[0], 0, noises[1:]
            for k in range(first, len(timesteps)):
                if k > 0:
                    x = self.model.renoise(denoised, timesteps[k], renoise[k - 1])
                t = torch.full((len(lq),), timesteps[k], dtype=torch.int64)
                denoised = self.run_graph("denoise", x, t, prompt, lq)[0].float().cpu()
            image = self.run_graph("decode", denoised)[0].float().cpu().clamp(0, 1)
            out.append(wavelet_color_fix(image, lq) if colour_fix else image)
        return torch.cat(out) if out else crops.new_zeros((0, *crops.shape[1:]))

    # -- photos --------------------------------------------------------------------------------
    def _plan(self, photo: np.ndarray, mode: str, max_faces: int) -> tuple[list[Any], dict[str, Any]]:
        """The crops of one photo and their affines (None: the whole image as one crop), and what was found."""
        s = self.config.image_size
        h, w = photo.shape[:2]
        whole: list[Any] = [(_resize(photo, (s, s)), None)]
        info: dict[str, Any]
        if mode == "aligned":
            return whole, {"mode": "aligned", "faces": 1}
        if not detector_available() and self.detect is mtcnn_detect:
            info = {"mode": "whole image" if mode == "auto" else "unchanged", "faces": 0,
                    "detector": "unavailable (pip install --no-deps facenet-pytorch==2.6.0)"}
            return (whole if mode == "auto" else []), info
        search = find_faces(photo, self.detect, max_faces=max_faces)
        info = {"faces": len(search.faces), "skipped_small": search.too_small,
                                "skipped_over_limit": search.over_limit}
        if not search.faces:
            info["mode"] = "whole image" if mode == "auto" else "unchanged"
            return (whole if mode == "auto" else []), info
        info["mode"] = "faces"
        info["landmarks"] = [np.round(f.landmarks, 2).tolist() for f in search.faces]
        info["scores"] = [round(f.score, 5) for f in search.faces]
        return [align_face(photo, f.landmarks, s) for f in search.faces], info

    def _predict(self, items: list[Any], steps: int = 0, seed: int = 0, colour_fix: bool = True, mode: str = "auto",
                 max_faces: int = 16, start: str = "lq", **_: Any) -> list[ImageResult]:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if any(item is None for item in items):
            raise ValueError("interlcm needs an image: a photo with faces, or an aligned face crop with mode=aligned")
        photos = [np.asarray(load_image(item).convert("RGB")) for item in items]
        plans = [self._plan(p, mode, int(max_faces)) for p in photos]
        crops = [torch.from_numpy(c).permute(2, 0, 1).float() / 255.0 for plan, _ in plans for c, _m in plan]
        seeds = [int(seed) + k for plan, _ in plans for k in range(len(plan))]
        restored = self.restore_crops(torch.stack(crops), seeds, steps, start, bool(colour_fix)) if crops else torch.zeros(0)
        results, k = [], 0
        n = int(steps) or self.config.num_steps
        for photo, (plan, info) in zip(photos, plans):
            out = photo.copy()
            boxes = []
            h, w = photo.shape[:2]
            for _crop, matrix in plan:
                face = to_uint8_array(restored[k])
                k += 1
                if matrix is None:
                    out = _resize(face, (w, h))
                    boxes.append([0.0, 0.0, float(w), float(h)])
                else:
                    out = paste_face(out, face, matrix)
                    inverse = cv2.invertAffineTransform(matrix)
                    s = self.config.image_size
                    corners = np.array([[0, 0, 1], [s, 0, 1], [0, s, 1], [s, s, 1]], np.float64) @ inverse.T
                    x0, y0 = corners.min(0)
                    x1, y1 = corners.max(0)
                    boxes.append([max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)])
            info = {**info, "steps": n, "start": start, "colour_fix": bool(colour_fix),
                    "timesteps": lcm_timesteps(self.config, n)}
            result = ImageResult([out], info=info, boxes=np.asarray(boxes, np.float32).reshape(-1, 4))
            if len(boxes):  # a second image with the restored faces outlined (what the demo shows beside the input)
                result.images.append(np.asarray(result.draw()))
                result.info["images"] = ["restored", "faces"]
            results.append(result)
        return results


def to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image)
