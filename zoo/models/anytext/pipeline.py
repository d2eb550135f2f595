"""AnyText predictor: a prompt whose "quoted" strings are the text lines, their positions (boxes or
polygons in the model's image pixels; stacked bands when none are given), and for editing an image with
an optional mask -> Generation.

Four graphs run the sampler from Python (DESIGN: the loop lives here, each graph exports on its own):
`text_encoder` (CLIP with the embedding module's line embeddings at the `*` placeholders), `vae_encoder`
(the masked image of an edit), `control_unet` (ControlNet + auxiliary module + UNet -> epsilon, called
twice a step for classifier-free guidance: caption and negative prompt, the same glyph/position/masked
conditions for both, as the reference's inference) and `vae_decoder`. DDIM (eta 0) over SD's
scaled-linear schedule, 20 steps and guidance 9 by default (the reference's demo). The recogniser that
turns each line image into its embedding features runs in PyTorch before the graphs.

Editing (the reference's "text editing" mode): the image is resized to the model's size, the region to
repaint is the mask (white = repaint) or, without one, the union of the lines' positions; the masked
image (repaint region zeroed) is encoded and enters through the auxiliary module.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from PIL import Image

from zoo.imageio import load_image, to_uint8_array
from zoo.pipeline import GraphSpec, Pipeline, TensorSpec
from zoo.results import Generation

from .glyphs import TextLineError, auto_positions, box_polygon, conditions, parse_prompt, validate_lines
from .model import AnyTextConfig, AnyTextModel, ControlStepGraph, DecodeGraph, EncodeGraph, TextEncoderGraph
from .tokenizer import tokenize


def ddim_scheduler(config: AnyTextConfig) -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=config.num_train_timesteps, beta_start=config.beta_start, beta_end=config.beta_end,
                         beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1)


class AnyTextPipeline(Pipeline):
    config: AnyTextConfig
    model: AnyTextModel

    def graph_specs(self) -> list[GraphSpec]:
        m, cfg = self.model, self.config
        c, h, w = m.latent_shape
        s, g = cfg.image_size, cfg.image_size * cfg.glyph_scale
        d, lines, feat = m.token_dim, cfg.max_lines, cfg.ocr_feature_dim
        vocab = int(cfg.text_encoder["vocab_size"])
        batch = {"batch": (1, 2, 8)}
        return [
            GraphSpec("text_encoder", TextEncoderGraph(m),
                      (TensorSpec("input_ids", ("batch", 77), "int64", (0, vocab - 1), valid_range=(0, vocab - 1)),
                       TensorSpec("line_features", ("batch", lines, feat), value_range=(-1.0, 1.0))),
                      (TensorSpec("context", ("batch", 77, d)),), dims=batch,
                      note="CLIP text encoder; the k-th '*' token takes the embedding module's projection of line k"),
            GraphSpec("vae_encoder", EncodeGraph(m), (TensorSpec("image", ("batch", 3, s, s)),),
                      (TensorSpec("latents", ("batch", c, h, w)),), dims=batch, note=f"the masked image of an edit ({s}x{s})"),
            GraphSpec("control_unet", ControlStepGraph(m),
                      (TensorSpec("latents", ("batch", c, h, w), value_range=(-3.0, 3.0)),
                       TensorSpec("timestep", ("batch",), "int64", (0, cfg.num_train_timesteps - 1),
                                  valid_range=(0, cfg.num_train_timesteps - 1)),
                       TensorSpec("context", ("batch", 77, d), value_range=(-2.0, 2.0)),
                       TensorSpec("glyphs", ("batch", 1, g, g)),
                       TensorSpec("positions", ("batch", 1, s, s)),
                       TensorSpec("masked_latent", ("batch", c, h, w), value_range=(-2.0, 2.0))),
                      (TensorSpec("eps", ("batch", c, h, w)),), dims=batch,
                      note="one denoising step: auxiliary latent module -> ControlNet residuals -> UNet epsilon"),
            GraphSpec("vae_decoder", DecodeGraph(m), (TensorSpec("latents", ("batch", c, h, w), value_range=(-2.0, 2.0)),),
                      (TensorSpec("image", ("batch", 3, s, s)),), dims=batch),
        ]

    # -- inputs --------------------------------------------------------------------------------
    def _item(self, item: Any) -> dict[str, Any]:
        if isinstance(item, str):
            item = {"prompt": item}
        if not isinstance(item, dict) or "prompt" not in item:
            raise ValueError('anytext takes {"prompt": ..., "boxes"/"polygons": ..., "image": ..., "mask": ...} '
                             '(or a prompt string); text lines are the "quoted" parts of the prompt')
        return item

    def prepare(self, item: Any) -> dict[str, Any]:
        """One request -> the conditions (arrays) and what the result reports."""
        cfg = self.config
        item = self._item(item)
        size = cfg.image_size
        caption, lines = parse_prompt(str(item["prompt"]))
        polygons = [np.asarray(p, np.float32) for p in (item.get("polygons") or [])]
        boxes = item.get("boxes")
        if boxes is not None and len(boxes) and polygons:
            raise TextLineError("give positions as boxes or as polygons, not both")
        if boxes is not None and len(boxes):
            polygons = [box_polygon(b) for b in np.asarray(boxes, np.float32)]
        editing = item.get("image") is not None
        mask_image = item.get("mask")
        if not polygons and editing and mask_image is not None and lines:
            polygons = [_mask_region(mask_image, size)] if len(lines) == 1 else []
        if not polygons:
            polygons = auto_positions(len(lines), size)
        validate_lines(lines, polygons, size, cfg.max_lines, cfg.max_chars)
        cond = conditions(lines, polygons, size, cfg.glyph_scale, cfg.max_lines)
        masked = np.zeros((3, size, size), np.float32)
        if editing:
            picture = np.asarray(load_image(item["image"]).convert("RGB").resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255
            if mask_image is not None:
                repaint = np.asarray(load_image(mask_image).convert("L").resize((size, size), Image.Resampling.NEAREST), np.float32) / 255 > 0.5
            else:
                repaint = cond["positions"][0] > 0.5
            masked = (picture * (1 - repaint[..., None])).transpose(2, 0, 1).astype(np.float32)
        return {"caption": caption, "lines": lines, "polygons": polygons, "editing": editing, "masked": masked, **cond}

    def line_features(self, line_images: np.ndarray, count: int) -> torch.Tensor:
        """(max_lines, 80, 512) line images -> (max_lines, T*C) recogniser neck features (zeros past `count`)."""
        out = torch.zeros(line_images.shape[0], self.config.ocr_feature_dim)
        if count and self.config.embedding_module:
            lines = torch.as_tensor(line_images[:count])[:, None].repeat(1, 3, 1, 1)
            with torch.no_grad():
                features = self.model.line_features(self.model.recognizer().preprocess(lines.to(self.device))).float().cpu()
            if features.shape[1] != out.shape[1]:
                raise ValueError(f"the recogniser gives {features.shape[1]} features a line, the embedding module takes "
                                 f"{out.shape[1]} (config ocr_feature_dim)")
            out[:count] = features
        return out

    # -- sampling ------------------------------------------------------------------------------
    def _predict(self, items: list[Any], seed: int = 0, steps: int | None = None, guidance_scale: float | None = None,
                 count: int = 1, negative_prompt: str | None = None, **_: Any) -> list[Generation]:
        cfg = self.config
        steps = int(steps or cfg.steps)
        guidance = float(cfg.guidance_scale if guidance_scale is None else guidance_scale)
        count = max(1, int(count))
        started = time.perf_counter()
        prepared = [self.prepare(item) for item in items]
        rows = [p for p in prepared for _ in range(count)]
        seeds = [int(seed) + i % count for i in range(len(rows))]
        ids = tokenize([p["caption"] for p in rows])
        feats = torch.stack([self.line_features(p["line_images"], len(p["lines"])) for p in rows])
        negative = negative_prompt if negative_prompt is not None else cfg.negative_prompt
        context = self.run_graph("text_encoder", ids, feats)[0]
        uncond = self.run_graph("text_encoder", tokenize([negative] * len(rows)), torch.zeros_like(feats))[0]
        glyphs = torch.as_tensor(np.stack([p["glyphs"] for p in rows]))
        positions = torch.as_tensor(np.stack([p["positions"] for p in rows]))
        masked = torch.as_tensor(np.stack([p["masked"] for p in rows]))
        editing = torch.tensor([p["editing"] for p in rows])
        masked_latent = torch.zeros(len(rows), *self.model.latent_shape)
        if editing.any():
            masked_latent[editing] = self.run_graph("vae_encoder", masked[editing])[0].float().cpu()
        conditioned = time.perf_counter()
        latents = torch.stack([torch.randn(self.model.latent_shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
        scheduler = ddim_scheduler(cfg)
        scheduler.set_timesteps(steps)
        use_cfg = guidance != 1.0
        for t in scheduler.timesteps:
            if use_cfg:
                timestep = torch.full((2 * len(rows),), int(t), dtype=torch.int64)
                eps_both = self.run_graph("control_unet", torch.cat([latents, latents]), timestep, torch.cat([context, uncond]),
                                          torch.cat([glyphs, glyphs]), torch.cat([positions, positions]),
                                          torch.cat([masked_latent, masked_latent]))[0].float().cpu()
                eps_c, eps_u = eps_both.chunk(2)
                eps = eps_u + guidance * (eps_c - eps_u)
            else:
                timestep = torch.full((len(rows),), int(t), dtype=torch.int64)
                eps = self.run_graph("control_unet", latents, timestep, context, glyphs, positions, masked_latent)[0].float().cpu()
            latents = scheduler.step(eps, t, latents, eta=0.0).prev_sample
        sampled = time.perf_counter()
        images = self.run_graph("vae_decoder", latents)[0].float().cpu()  # to_uint8_array clamps
        done = time.perf_counter()
        n = len(items)
        timings = {"conditions": (conditioned - started) / n, "sample": (sampled - conditioned) / n, "decode": (done - sampled) / n}
        results = []
        for i, p in enumerate(prepared):
            part = slice(i * count, (i + 1) * count)
            glyph_preview = np.asarray(Image.fromarray((p["glyphs"][0] * 255).astype(np.uint8)).resize(
                (cfg.image_size, cfg.image_size), Image.Resampling.BILINEAR))
            condition = np.maximum(glyph_preview, (p["positions"][0] * 80).astype(np.uint8))
            info = {"caption": p["caption"], "lines": p["lines"], "positions": [q.round(1).tolist() for q in p["polygons"]],
                    "mode": "edit" if p["editing"] else "generate", "guidance_scale": guidance, "sampler": "ddim"}
            results.append(Generation([to_uint8_array(im) for im in images[part]], seeds=seeds[part], steps=steps, timings=timings,
                                      info=info, condition=np.repeat(condition[..., None], 3, -1)))
        return results


def _mask_region(mask: Any, size: int) -> np.ndarray:
    """The bounding rectangle of a mask's white pixels as a polygon (the position of a one-line edit)."""
    array = np.asarray(load_image(mask).convert("L").resize((size, size), Image.Resampling.NEAREST)) > 127
    ys, xs = np.nonzero(array)
    if len(xs) == 0:
        raise TextLineError("the mask is empty: white marks the region to repaint")
    return box_polygon((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
