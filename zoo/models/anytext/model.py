"""AnyText's networks (Tuo et al., ICLR 2024, Sec. 3 and Fig. 2) on diffusers / transformers parts.

- `AuxiliaryLatentModule` (Sec. 3.2): glyph_block on the summed glyph image (rendered at 2x the image
  size), position_block on the summed position masks, both 3x3 conv stacks with SiLU after every conv;
  their outputs and the masked image's latent (zeros for generation) concatenated and fused by a
  zero-initialised 3x3 conv to the UNet's first width. The reference (tyxsspa/AnyText `cldm/cldm.py`)
  adds this guided hint once, after the ControlNet's first input block (its conv_in), which is where
  diffusers' `ControlNetModel` adds its conditioning embedding: ours replaces that embedding (an
  identity on a precomputed hint), so the ControlNet is diffusers' with no hint block of its own.
- `EmbeddingManager` (Sec. 3.3, text embedding module): each line's OCR neck feature (T x C = 40 x 64 =
  2560 for AnyText's PP-OCRv3) -> zero-initialised Linear(T*C, d) + LayerNorm(d); the result replaces
  the token embedding of the k-th `*` placeholder of the caption with line k (tensor ops only: the
  k-th placeholder takes row cumsum - 1, so the graph exports).
- `AnyTextModel`: the frozen SD1.5 UNet (`UNet2DConditionModel`), its trainable ControlNet copy
  (`ControlNetModel.from_unet`), the VAE (`zoo.diffusion.autoencoder.LatentCodec`, SD's latent scaling),
  the CLIP text encoder (`transformers.CLIPTextModel`), the auxiliary module and the embedding module.
  The PP-OCR recogniser is frozen and not part of the weights (`recognizer.py`; loaded on first use).

Choices where the paper leaves things open or where our micro differs: the micro has no pretrained
base, so its UNet and text encoder train with the ControlNet (`unet_locked=False`), and its glyph /
position stacks are narrower with as many stride-2 convs as its f4 autoencoder needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

# SD1.5 (AnyText's base): UNet2DConditionModel defaults (320 ch, mult 1,2,4,4, 2 res blocks, 8 heads),
# context 768, 64x64x4 latents; CLIP ViT-L/14's text transformer.
SD15_UNET: dict[str, Any] = {"sample_size": 64, "cross_attention_dim": 768}
CLIP_L_TEXT: dict[str, Any] = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                               "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                               "projection_dim": 768}
# Reference widths (cldm.py): glyph_block 1->8->8->16(s2)->16->32(s2)->32->96(s2)->96->256(s2);
# position_block 1->8->8->16(s2)->16->32(s2)->32->64(s2).
GLYPH_CHANNELS = (8, 8, 16, 16, 32, 32, 96, 96, 256)
GLYPH_STRIDES = (1, 1, 2, 1, 2, 1, 2, 1, 2)
POSITION_CHANNELS = (8, 8, 16, 16, 32, 32, 64)
POSITION_STRIDES = (1, 1, 2, 1, 2, 1, 2)
CONTEXT_LENGTH = 77
PLACEHOLDER_TOKEN = 265  # CLIP BPE id of "*</w>" (the reference asserts '*' is one token)


@dataclass
class AnyTextConfig:
    image_size: int = 512
    unet: dict[str, Any] = field(default_factory=lambda: dict(SD15_UNET))
    autoencoder_variant: str = "sd-f8"  # zoo.diffusion.autoencoder preset
    text_encoder: dict[str, Any] = field(default_factory=lambda: dict(CLIP_L_TEXT))
    glyph_channels: tuple[int, ...] = GLYPH_CHANNELS
    glyph_strides: tuple[int, ...] = GLYPH_STRIDES
    position_channels: tuple[int, ...] = POSITION_CHANNELS
    position_strides: tuple[int, ...] = POSITION_STRIDES
    glyph_scale: int = 2  # glyphs rendered at 2x the image size (1024 for 512)
    ocr_feature_dim: int = 2560  # T x C of the recogniser's neck (40 x 64 for AnyText's PP-OCRv3)
    recognizer: str = "ppocr-v3"  # the frozen recogniser: "ppocr-v3" AnyText's own (Sec. 3.3), "ppocr-v4" rapidocr's ONNX model
    recognizer_weights: str = ""  # ppocr-v3: a local ppv3_rec.pth (or an AnyText checkpoint with text_predictor.* keys)
    embedding_module: bool = True  # the text embedding module (ablation: off = plain token embeddings of '*')
    unet_locked: bool = True  # the paper's SD1.5 UNet stays frozen; the micro trains it (no pretrained base)
    max_lines: int = 5  # the reference's limits (t3_dataset max_lines 5, max_chars 20)
    max_chars: int = 20
    steps: int = 20  # DDIM steps and classifier-free guidance scale of the reference's inference
    guidance_scale: float = 9.0
    beta_start: float = 0.00085  # SD's scaled-linear schedule, T = 1000, epsilon prediction
    beta_end: float = 0.012
    num_train_timesteps: int = 1000
    negative_prompt: str = ""

    def __post_init__(self) -> None:
        for name in ("glyph_channels", "glyph_strides", "position_channels", "position_strides"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        if len(self.glyph_channels) != len(self.glyph_strides) or len(self.position_channels) != len(self.position_strides):
            raise ValueError("each glyph/position conv needs a stride")


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def conv_stack(channels: tuple[int, ...], strides: tuple[int, ...]) -> nn.Sequential:
    """3x3 convs 1 -> channels[0] -> ... with the given strides, SiLU after each (cldm.py's blocks)."""
    layers: list[nn.Module] = []
    cin = 1
    for cout, stride in zip(channels, strides):
        layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.SiLU()]
        cin = cout
    return nn.Sequential(*layers)


class AuxiliaryLatentModule(nn.Module):
    """Sec. 3.2: (glyphs (B, 1, sH, sW), positions (B, 1, H, W), masked latent (B, 4, h, w)) -> the
    guided hint (B, C0, h, w) = fuse(concat(glyph_block, position_block, masked latent)), fuse zero-initialised."""

    def __init__(self, config: AnyTextConfig, latent_channels: int, out_channels: int):
        super().__init__()
        self.glyph_block = conv_stack(config.glyph_channels, config.glyph_strides)
        self.position_block = conv_stack(config.position_channels, config.position_strides)
        cin = config.glyph_channels[-1] + config.position_channels[-1] + latent_channels
        self.fuse_block = _zero(nn.Conv2d(cin, out_channels, 3, padding=1))

    def forward(self, glyphs: Tensor, positions: Tensor, masked_latent: Tensor) -> Tensor:
        return self.fuse_block(torch.cat([self.glyph_block(glyphs), self.position_block(positions), masked_latent], 1))


RECOGNIZERS = ("ppocr-v3", "ppocr-v4")


def build_recognizer(config: AnyTextConfig) -> Any:
    """The frozen recogniser the config names, checked against the embedding module's input size.

    ppocr-v3: AnyText's own PP-OCRv3 network (ppocr_v3.py) with its checkpoint from `recognizer_weights`
    (nothing is downloaded: the path must be local); ppocr-v4: rapidocr's PP-OCRv4 ONNX model, which the
    package ships (the micro's)."""
    from .recognizer import TextRecognizer

    if config.recognizer == "ppocr-v4":
        rec = TextRecognizer()
    elif config.recognizer == "ppocr-v3":
        if not config.recognizer_weights:
            raise ValueError("this variant reads text with AnyText's PP-OCRv3 recogniser: set recognizer_weights to a local "
                             "ocr_weights/ppv3_rec.pth (or an AnyText checkpoint holding text_predictor.* keys)")
        rec = TextRecognizer.from_anytext_checkpoint(config.recognizer_weights)
    else:
        raise ValueError(f"unknown recognizer {config.recognizer!r}; one of {', '.join(RECOGNIZERS)}")
    if rec.feature_dim != config.ocr_feature_dim:
        raise ValueError(f"the {config.recognizer} recogniser's neck gives {rec.feature_dim} features a line, the embedding "
                         f"module takes ocr_feature_dim={config.ocr_feature_dim}")
    return rec


class EmbeddingManager(nn.Module):
    """Sec. 3.3: OCR neck features of each line -> a token embedding for its `*` placeholder."""

    def __init__(self, feature_dim: int, token_dim: int):
        super().__init__()
        self.proj = nn.Sequential(_zero(nn.Linear(feature_dim, token_dim)), nn.LayerNorm(token_dim))

    def forward(self, input_ids: Tensor, token_embeds: Tensor, line_features: Tensor, placeholder: int = PLACEHOLDER_TOKEN) -> Tensor:
        """input_ids (B, N), token_embeds (B, N, d), line_features (B, L, D) -> token embeddings with the
        k-th placeholder of each row replaced by the projection of line k (placeholders past L keep
        line L's, as the reference truncates)."""
        lines = self.proj(line_features)  # (B, L, d)
        is_placeholder = input_ids == placeholder
        index = (torch.cumsum(is_placeholder.to(torch.int64), 1) - 1).clamp(0, lines.shape[1] - 1)
        gathered = torch.gather(lines, 1, index[..., None].expand(-1, -1, lines.shape[2]))
        return torch.where(is_placeholder[..., None], gathered, token_embeds)


class AnyTextModel(nn.Module):
    """What an AnyText weights file holds: `unet.*`, `controlnet.*`, `codec.*`, `text_encoder.*`,
    `auxiliary.*`, `embedding.*`."""

    alphas_cumprod: Tensor

    def __init__(self, config: AnyTextConfig):
        super().__init__()
        from diffusers import ControlNetModel, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        from zoo.diffusion.autoencoder import LatentCodec, build_autoencoder
        from zoo.diffusion.autoencoder import preset_config as autoencoder_preset

        self.config = config
        self.unet: Any = cast(Any, UNet2DConditionModel(**config.unet))
        vae = autoencoder_preset(config.autoencoder_variant)
        self.codec: Any = LatentCodec(build_autoencoder(vae), scaling=vae.scaling_factor, shift=0.0)
        self.controlnet: Any = ControlNetModel.from_unet(self.unet)
        self.controlnet.controlnet_cond_embedding = nn.Identity()  # the auxiliary module's hint enters here
        self.text_encoder: Any = CLIPTextModel(CLIPTextConfig(**config.text_encoder))
        latent = int(self.unet.config.in_channels)
        first = int(self.unet.config.block_out_channels[0])
        self.auxiliary = AuxiliaryLatentModule(config, latent, first)
        token_dim = int(config.text_encoder["hidden_size"])
        self.embedding = EmbeddingManager(config.ocr_feature_dim, token_dim)
        glyph_down = 2 ** sum(s == 2 for s in config.glyph_strides)
        position_down = 2 ** sum(s == 2 for s in config.position_strides)
        if glyph_down != config.glyph_scale * self.codec.factor or position_down != self.codec.factor:
            raise ValueError(f"glyph_block downsamples by {glyph_down} (needs {config.glyph_scale * self.codec.factor}), "
                             f"position_block by {position_down} (needs {self.codec.factor})")
        self.codec.requires_grad_(False)
        if config.unet_locked:
            self.unet.requires_grad_(False)
            self.text_encoder.requires_grad_(False)
        self.__dict__["_recognizer"] = None
        betas = torch.linspace(config.beta_start ** 0.5, config.beta_end ** 0.5, config.num_train_timesteps, device="cpu") ** 2
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, 0), persistent=False)

    # -- shapes --------------------------------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, int, int]:
        size = self.config.image_size // self.codec.factor
        return (int(self.unet.config.in_channels), size, size)

    @property
    def token_dim(self) -> int:
        return int(self.config.text_encoder["hidden_size"])

    # -- the recogniser (frozen, outside the weights) -------------------------------------------
    def recognizer(self) -> Any:
        rec = self.__dict__["_recognizer"]
        if rec is None:
            rec = build_recognizer(self.config)
            rec.requires_grad_(False)
            self.__dict__["_recognizer"] = rec
        device = self.alphas_cumprod.device
        if next(rec.parameters()).device != device and device.type != "meta":
            rec.to(device)
        return rec

    def line_features(self, line_images: Tensor) -> Tensor:
        """(N, 3, 48, 320) preprocessed line images -> (N, T*C) flattened neck features."""
        _, neck = self.recognizer()(line_images)
        return neck.reshape(neck.shape[0], -1)

    # -- the parts the graphs call -------------------------------------------------------------
    def encode_text(self, input_ids: Tensor, line_features: Tensor) -> Tensor:
        """CLIP text encoder whose `*` token embeddings are replaced by the embedding module (Sec. 3.3)."""
        te = self.text_encoder
        tokens = te.embeddings.token_embedding(input_ids)
        if self.config.embedding_module:
            tokens = self.embedding(input_ids, tokens, line_features.to(tokens.dtype))
        hidden = te.embeddings(inputs_embeds=tokens)
        n = input_ids.shape[1]
        causal = torch.full((n, n), float("-inf"), device=hidden.device, dtype=hidden.dtype).triu(1)
        out = te.encoder(inputs_embeds=hidden, attention_mask=causal[None, None].expand(input_ids.shape[0], 1, n, n))
        last = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return te.final_layer_norm(last)

    def eps(self, latents: Tensor, t: Tensor, context: Tensor, glyphs: Tensor, positions: Tensor, masked_latent: Tensor) -> Tensor:
        """One network evaluation: the ControlNet (with the auxiliary module's hint) and the UNet -> epsilon."""
        hint = self.auxiliary(glyphs.to(latents.dtype), positions.to(latents.dtype), masked_latent.to(latents.dtype))
        down, mid = self.controlnet(latents, t, encoder_hidden_states=context, controlnet_cond=hint, return_dict=False)
        return self.unet(latents, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid, return_dict=False)[0]


class ControlStepGraph(nn.Module):
    """Exported graph "control_unet": (latents, timestep, context, glyphs, positions, masked_latent) -> eps."""

    def __init__(self, model: AnyTextModel):
        super().__init__()
        self.model = model

    def forward(self, latents: Tensor, timestep: Tensor, context: Tensor, glyphs: Tensor, positions: Tensor,
                masked_latent: Tensor) -> Tensor:
        return self.model.eps(latents, timestep, context, glyphs, positions, masked_latent)


class TextEncoderGraph(nn.Module):
    """Exported graph "text_encoder": (input_ids (B, 77), line_features (B, L, T*C)) -> context (B, 77, d)."""

    def __init__(self, model: AnyTextModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, line_features: Tensor) -> Tensor:
        return self.model.encode_text(input_ids, line_features)


class DecodeGraph(nn.Module):
    """Exported graph "vae_decoder": latents -> image in [0, 1]."""

    def __init__(self, model: AnyTextModel):
        super().__init__()
        self.model = model

    def forward(self, latents: Tensor) -> Tensor:
        return self.model.codec.decode(latents).clamp(0, 1)


class EncodeGraph(nn.Module):
    """Exported graph "vae_encoder": image in [0, 1] -> latents (posterior mean, scaled)."""

    def __init__(self, model: AnyTextModel):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        return self.model.codec.encode(image)
