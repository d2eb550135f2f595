"""AnyText training for the shared loop in `training/` (Sec. 3.4 and 4.1; the reference's train.py,
t3_dataset.py and models_yaml/anytext_sd15.yaml).

Paper / reference defaults: AdamW, lr 2e-5, batch 48 (8 GPUs x 6), max 5 lines of 20 characters, mask_img_prob
0.5 (half the samples see the masked image of an edit: the image with its text regions and 0-3 random
rectangles zeroed), perceptual loss lambda 0.003 weighted by alpha_bar_t, the caption phrase list of
t3_dataset.py ("..., that reads *, *."). Our choices: 10 % of samples drop the caption and the line
embeddings (the unconditional branch of classifier-free guidance: the micro has no pretrained base that
learnt it; SD's did); the micro trains the UNet and the text encoder too (`unet_locked=False`).

Arms of the ablation (bench/anytext.py), each a `--set`: `control=false` (a plain caption-conditioned
model of the same size: the lines written into the caption as words, no glyph, position or embedding
input), `embedding_module=false`, `perceptual_weight=0`.

Data: `--data synthetic` renders procedural word images (zoo.data.words); `--data PATH` reads an
AnyWord-3M JSON file (images resized to the variant's size, polygons scaled with them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from zoo.trainable import TrainConfig, TrainTask

from .glyphs import conditions, position_mask
from .loss import anytext_loss, predict_x0, text_control_diffusion_loss, text_perceptual_loss
from .model import AnyTextModel
from .tokenizer import tokenize

PHRASES = (", content and position of the texts are ", ", textual material depicted in the image are ", ", texts that says ",
           ", captions shown in the snapshot are ", ", with the words of ", ", that reads ", ", the written materials on the picture: ",
           ", these texts are written on it: ", ", captions are ", ", content of the text in the graphic is ")


@dataclass
class AnyTextTrainConfig(TrainConfig):
    steps: int = 200_000
    batch_size: int = 48
    lr: float = 2e-5
    optimizer: str = "adamw"
    perceptual_weight: float = 0.003  # lambda of Eq. 5; 0 turns the text perceptual loss off
    step_weight: bool = True  # L_tp weighted by alpha_bar_t (the reference's with_step_weight)
    perceptual_samples: int = 0  # L_tp on this many samples a batch, scaled by B / k (unbiased; 0 = all, the paper)
    mask_img_prob: float = 0.5
    drop_caption_prob: float = 0.1  # our choice (module docstring)
    control: bool = True  # false: the plain caption-conditioned baseline
    embedding_module: bool = True
    train_images: int = 100_000  # procedural images (--data synthetic)
    max_lines_data: int = 1  # lines per procedural image (1 .. max_lines_data)
    cjk: float = 0.0  # share of CJK lines in procedural images (needs fonts-noto-cjk)
    eval_images: int = 100  # held-out procedural images scored by finalize (Sen.ACC, NED)
    eval_steps: int = 20
    autoencoder: str = "registry"  # the frozen VAE: "registry" (the autoencoder-kl family's bundled micro-f4), "keep"
    # the registry VAE's latents standardised to this std on the training images: LDM's unit-variance rescaling
    # (Rombach et al. 2022, Sec. 4.3.2; SD's 0.18215), which the DDPM schedule assumes; our codecs ship with
    # sLCT's 0.5, whose 5x lower signal-to-noise ratio at every t left the micro's samples as texture. 0: keep
    latent_std: float = 1.0
    latent_std_images: int = 256


class WordConditionSet(torch.utils.data.Dataset):
    """Items for AnyText: the image, its conditions (glyphs, positions, line images, boxes), the caption's
    token ids, the masked image and the invalid-text mask. `records`: procedural (seed, split) or AnyWord JSON."""

    def __init__(self, size: int, scale: int, max_lines: int, max_chars: int, config: AnyTextTrainConfig, seed: int,
                 split: str = "train", count: int | None = None, anyword: str | Path | None = None):
        self.size, self.scale, self.max_lines, self.max_chars = size, scale, max_lines, max_chars
        self.config, self.seed, self.split = config, seed, split
        self.records: list[dict[str, Any]] | None = None
        if anyword is not None:
            from zoo.data.words import read_anyword

            self.records = read_anyword(anyword)
        self.count = len(self.records) if self.records is not None else int(count or config.train_images)

    def __len__(self) -> int:
        return self.count

    def record(self, index: int) -> tuple[np.ndarray, list[Any], str]:
        """(image (S, S, 3) uint8, lines, caption) of item `index`, polygons in the S-pixel frame."""
        from zoo.data.words import WordLine, word_image

        if self.records is None:
            item = word_image(self.seed, self.split, index, self.size, self.config.max_lines_data, self.config.cjk)
            return item.image, item.lines, item.caption
        rec = self.records[index]
        picture = Image.open(rec["image_path"]).convert("RGB")
        sx, sy = self.size / picture.width, self.size / picture.height
        image = np.asarray(picture.resize((self.size, self.size), Image.Resampling.BICUBIC))
        lines = [WordLine(line.text, line.polygon * np.array([sx, sy], np.float32), line.language, line.valid) for line in rec["lines"]]
        return image, lines, rec["caption"]

    def __getitem__(self, index: int) -> dict[str, Any]:
        from zoo.data._rng import rng_for

        cfg = self.config
        rng = rng_for(self.seed, "anytext", self.split, index)
        image, lines, caption = self.record(index)
        valid = [line for line in lines if line.valid and line.text.strip()][: self.max_lines]
        invalid = [line.polygon for line in lines if line not in valid]
        texts = [line.text[: self.max_chars] for line in valid]
        polygons = [line.polygon for line in valid]
        cond = conditions(texts, polygons, self.size, self.scale, self.max_lines)
        phrase = PHRASES[int(rng.integers(len(PHRASES)))]
        if not texts:
            prompt = caption
        elif cfg.control:
            prompt = caption + phrase + " , ".join("*" for _ in texts) + " ."  # spaced: "*" stays one token (id 265)
        else:
            prompt = caption + phrase + ", ".join(texts) + "."
        drop = bool(rng.random() < cfg.drop_caption_prob)
        if drop:
            prompt = ""
        if not cfg.control:
            cond["glyphs"][:] = 0
            cond["positions"][:] = 0
        picture = image.astype(np.float32).transpose(2, 0, 1) / 255.0
        masked = np.zeros_like(picture)
        has_mask = bool(cfg.control and rng.random() < cfg.mask_img_prob)
        if has_mask:
            region = cond["positions"][0].copy()
            for _ in range(int(rng.integers(0, 4))):
                w, h = rng.uniform(0.1, 0.5, 2) * self.size
                x0, y0 = rng.uniform(0, self.size - w), rng.uniform(0, self.size - h)
                region[int(y0):int(y0 + h), int(x0):int(x0 + w)] = 1
            masked = picture * (1 - region[None])
        return {"image": torch.from_numpy(picture), "glyphs": torch.from_numpy(cond["glyphs"]),
                "positions": torch.from_numpy(cond["positions"]), "line_images": torch.from_numpy(cond["line_images"]),
                "boxes": torch.from_numpy(cond["boxes"]), "n_lines": len(texts), "texts": texts,
                "embed": len(texts) if (cfg.control and not drop) else 0,
                "input_ids": tokenize([prompt])[0], "masked_image": torch.from_numpy(masked.astype(np.float32)),
                "has_mask": has_mask, "inv_mask": torch.from_numpy(position_mask(invalid, self.size)[None])}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], (bool, int)):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out


class AnyTextTrainable(nn.Module):
    """L_td + lambda alpha_bar_t L_tp (loss.py) for one batch; logs loss, diffusion, perceptual."""

    def __init__(self, model: AnyTextModel, config: AnyTextTrainConfig):
        super().__init__()
        self.model = model
        self.config = config
        self._features: dict[str, torch.Tensor] = {}

    def line_features(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, L, T*C) neck features of each sample's line images (zeros past `embed`), cached by text."""
        m = self.model
        b, lines = batch["line_images"].shape[:2]
        out = torch.zeros(b, lines, m.config.ocr_feature_dim)
        if not (self.config.embedding_module and m.config.embedding_module):
            return out
        todo = [(i, k, text) for i in range(b) for k, text in enumerate(batch["texts"][i][: int(batch["embed"][i])])]
        missing = sorted({text for _, _, text in todo if text not in self._features})
        if missing:
            first = {t: (i, k) for i, k, t in reversed(todo)}
            images = torch.stack([batch["line_images"][first[t][0], first[t][1]] for t in missing])[:, None].repeat(1, 3, 1, 1)
            with torch.no_grad():
                feats = m.line_features(m.recognizer().preprocess(images.float()))
            self._features.update({t: f.cpu() for t, f in zip(missing, feats)})
        for i, k, text in todo:
            out[i, k] = self._features[text]
        return out

    def training_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        m, cfg = self.model, self.config
        images = batch["image"]
        with torch.no_grad():
            latents = m.codec.encode(images)
            masked_latent = m.codec.encode(batch["masked_image"]) * batch["has_mask"].view(-1, 1, 1, 1).to(latents.dtype)
        noise = torch.randn_like(latents)
        t = torch.randint(0, m.config.num_train_timesteps, (latents.shape[0],), device=latents.device)
        a = m.alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        context = m.encode_text(batch["input_ids"], self.line_features(batch).to(latents.device))
        eps = m.eps(noisy, t, context, batch["glyphs"], batch["positions"], masked_latent)
        diffusion = text_control_diffusion_loss(eps, noise, batch["inv_mask"])
        perceptual = None
        if cfg.perceptual_weight > 0 and cfg.control:
            b = latents.shape[0]
            k = min(b, cfg.perceptual_samples or b)
            chosen = torch.randperm(b, device=latents.device)[:k].sort().values
            x0 = predict_x0(noisy[chosen], eps[chosen], m.alphas_cumprod, t[chosen])
            decoded = m.codec.decode(x0)  # through the frozen VAE, with gradients (the reference's decode_first_stage_grad)
            rec = m.recognizer()
            part = text_perceptual_loss(decoded, images[chosen], batch["boxes"][chosen], batch["n_lines"][chosen].tolist(),
                                        lambda x: rec(x)[1], rec.preprocess)
            perceptual = torch.zeros_like(diffusion).index_add(0, chosen, part * (b / k))
        weight = m.alphas_cumprod[t] if cfg.step_weight else torch.ones_like(m.alphas_cumprod[t])
        loss = anytext_loss(diffusion, perceptual, weight, cfg.perceptual_weight)
        out = {"loss": loss, "diffusion": diffusion.mean().detach()}
        if perceptual is not None:
            out["perceptual"] = perceptual.mean().detach()
        return out


def _load_autoencoder(model: AnyTextModel, source: str, dataset: WordConditionSet | None = None,
                      latent_std: float = 0.0, count: int = 256) -> None:
    """The frozen VAE from the registry's autoencoder-kl family (its bundled weights for the variant's preset);
    with `latent_std` > 0, its latents standardised to that std on `count` of `dataset`'s images (saved with
    the weights: the codec's `scaling` and `shift` buffers)."""
    if source == "keep":
        return
    from zoo.registry import create_model

    preset = model.config.autoencoder_variant
    codec = create_model("autoencoder-kl", preset).model
    state = codec.state_dict()
    own = model.codec.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise RuntimeError(f"autoencoder-kl/{preset} lacks codec keys {missing[:5]}")
    model.codec.load_state_dict({k: state[k] for k in own})
    if latent_std > 0 and dataset is not None:
        images = _image_batch([dataset.record(i)[0] for i in range(min(count, len(dataset)))])
        model.codec.sigma_data = float(latent_std)
        model.codec.fit(images.split(32))


def _saved_model(module: Any) -> nn.Module:
    return module.model


@torch.no_grad()
def evaluate_ocr(model: AnyTextModel, config: AnyTextTrainConfig, count: int, seed: int = 1, steps: int = 20,
                 guidance: float | None = None, batch: int = 25) -> dict[str, float]:
    """Held-out procedural images (split "val"): generate from their lines and positions and read the
    lines back with rapidocr (Sen.ACC, NED); the ground-truth images read the same way give the ceiling."""
    from zoo.data.words import word_image

    from .metrics import ocr_accuracy
    from .pipeline import AnyTextPipeline

    pipeline = AnyTextPipeline(model, model.config)
    pipeline.eval()
    items, truths, lines, polygons = [], [], [], []
    for i in range(count):
        rec = word_image(seed, "val", i, model.config.image_size, config.max_lines_data, config.cjk)
        texts = [line.text for line in rec.lines]
        polys = [line.polygon for line in rec.lines]
        if config.control:
            prompt = rec.caption + ", that reads " + ", ".join(f'"{t}"' for t in texts) + "."
            items.append({"prompt": prompt, "polygons": polys})
        else:  # the plain baseline: the words in its caption; no glyph, position or embedding input
            items.append({"prompt": rec.caption + ", that reads " + ", ".join(texts) + "."})
        truths.append(rec.image)
        lines.append(texts)
        polygons.append(polys)
    generated = []
    for start in range(0, count, batch):
        part = items[start:start + batch]
        results = pipeline._predict(part, seed=start, steps=steps, guidance_scale=guidance)
        generated += [r.images[0] for r in results]
    ours = ocr_accuracy(generated, lines, polygons)
    ceiling = ocr_accuracy(truths, lines, polygons)
    # a latent model's own ceiling: the ground truth through its frozen VAE (encode, decode)
    codec = ocr_accuracy(_codec_round_trip(model, truths), lines, polygons)
    return {"sen_acc": ours["sen_acc"], "ned": ours["ned"], "lines": ours["lines"],
            "sen_acc_ground_truth": ceiling["sen_acc"], "ned_ground_truth": ceiling["ned"],
            "sen_acc_codec": codec["sen_acc"], "ned_codec": codec["ned"],
            "ocr_feature_mse": ocr_feature_distance(model, generated, truths, polygons)}


def _image_batch(images: list[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 images -> (B, 3, H, W) float in [0, 1]."""
    return torch.stack([torch.as_tensor(np.asarray(im), dtype=torch.float32).permute(2, 0, 1) / 255 for im in images])


@torch.no_grad()
def _codec_round_trip(model: AnyTextModel, images: list[np.ndarray]) -> list[np.ndarray]:
    from zoo.imageio import to_uint8_array

    return [to_uint8_array(im) for part in _image_batch(images).split(25) for im in model.codec.decode(model.codec.encode(part))]


@torch.no_grad()
def ocr_feature_distance(model: AnyTextModel, generated: list[np.ndarray], truths: list[np.ndarray],
                         polygons: list[list[np.ndarray]]) -> float:
    """Mean over lines of the MSE between the recogniser's neck features of the generated and the
    ground-truth line crops (Eq. 4's distance, used as a metric): a continuous measure of how close the
    written text is to the right text, which moves before OCR reads whole words (our addition)."""
    from .glyphs import crop_box, position_mask
    from .loss import text_perceptual_loss

    size = model.config.image_size
    gen, gt = _image_batch(generated), _image_batch(truths)
    boxes = torch.zeros(len(polygons), max(1, max(len(p) for p in polygons)), 4, dtype=torch.int64)
    for i, polys in enumerate(polygons):
        for k, polygon in enumerate(polys):
            box = crop_box(position_mask([polygon], size))
            boxes[i, k] = torch.tensor(box if box is not None else (0, 0, 1, 1))
    rec = model.recognizer()
    features = lambda x: torch.cat([rec(part)[1] for part in x.split(16)])  # noqa: E731 - in chunks (memory)
    per_sample = text_perceptual_loss(gen, gt, boxes, [len(p) for p in polygons], features, rec.preprocess)
    return float(per_sample.mean())


def build_task(model: AnyTextModel, data: str, config: AnyTextTrainConfig, seed: int, workdir: Any) -> TrainTask:
    """`zoo train anytext`: procedural word images (--data synthetic) or an AnyWord-3M JSON file."""
    model.config.embedding_module = bool(config.embedding_module and config.control)
    cfg = model.config
    scale = cfg.glyph_scale
    if data == "synthetic":
        dataset = WordConditionSet(cfg.image_size, scale, cfg.max_lines, cfg.max_chars, config, seed, "train", config.train_images)
        described = f"procedural word images ({cfg.image_size}px, 1-{config.max_lines_data} lines, seed {seed})"
    else:
        dataset = WordConditionSet(cfg.image_size, scale, cfg.max_lines, cfg.max_chars, config, seed, anyword=data)
        described = f"AnyWord-3M JSON {data} ({len(dataset)} images)"
    _load_autoencoder(model, config.autoencoder, dataset, config.latent_std, config.latent_std_images)

    def finalize(module: Any) -> dict[str, float]:
        if data != "synthetic" or config.eval_images <= 0:
            return {}
        return evaluate_ocr(module.model.eval(), config, config.eval_images, steps=config.eval_steps)

    def parameters(module: Any) -> Any:
        return [p for p in module.parameters() if p.requires_grad]

    return TrainTask(module=AnyTextTrainable(model, config), dataset=dataset, config=config, collate_fn=collate,
                     parameters=parameters, finalize=finalize, to_pipeline=_saved_model, extra={"data": described})
