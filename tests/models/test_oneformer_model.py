"""OneFormer networks: output structure, gradients, parameter counts against the paper, the text
encoder's causal mask (ONNX parity: the registry-driven tests/export)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from zoo.models.oneformer.model import (
    ADE20K_CLASSES,
    ADE20K_THING_IDS,
    OneFormer,
    OneFormerConfig,
    TextMapper,
    normalize_images,
    parameter_counts,
    preset_config,
)

MICRO = preset_config("micro")


@pytest.fixture(scope="module")
def micro() -> OneFormer:
    torch.manual_seed(0)
    return OneFormer(MICRO)


def _inputs(batch: int, size: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=gen)
    tasks = torch.randint(0, 49408, (batch, 77), generator=gen)
    texts = torch.randint(1, 49407, (batch, MICRO.num_texts, 77), generator=gen)
    return images, tasks, texts


def test_micro_outputs_without_text(micro):
    images, tasks, _ = _inputs(2)
    micro.eval()
    with torch.no_grad():
        out = micro(images, tasks)
    q, k = MICRO.num_queries, MICRO.num_classes + 1
    assert set(out) == {"pred_logits", "pred_masks", "aux_outputs"}
    assert out["pred_logits"].shape == (2, q, k) and k == 10
    assert out["pred_masks"].shape == (2, q, 32, 32)
    assert len(out["aux_outputs"]) == MICRO.dec_layers
    for aux in out["aux_outputs"]:
        assert set(aux) == {"pred_logits", "pred_masks"}
        assert aux["pred_logits"].shape == (2, q, k) and aux["pred_masks"].shape == (2, q, 32, 32)
    # each layer refines the previous prediction: the predictions differ
    assert not torch.allclose(out["aux_outputs"][-1]["pred_masks"], out["pred_masks"])
    # one image at a time gives the same answer (no batch coupling)
    with torch.no_grad():
        single = micro(images[1:], tasks[1:])
    assert torch.allclose(single["pred_masks"][0], out["pred_masks"][1], atol=1e-5)


def test_micro_outputs_with_text(micro):
    images, tasks, texts = _inputs(2)
    micro.train()
    out = micro(images, tasks, texts)
    q, d = MICRO.num_queries, MICRO.hidden_dim
    assert set(out) == {"pred_logits", "pred_masks", "aux_outputs", "contrastive_logits", "texts", "logit_scale"}
    assert out["contrastive_logits"].shape == (2, q, d)
    assert out["texts"].shape == (2, q, d)  # num_queries - n_ctx texts + n_ctx context embeddings
    # the context embeddings are appended unchanged (official encode_text)
    ctx = micro.text_mapper.prompt_ctx.weight
    assert torch.equal(out["texts"][0, -MICRO.n_ctx:], ctx) and torch.equal(out["texts"][1, -MICRO.n_ctx:], ctx)
    assert out["logit_scale"].shape == () and out["logit_scale"].requires_grad
    assert math.isclose(out["logit_scale"].item(), math.log(1 / 0.07), rel_tol=1e-6)


def test_task_token_conditions_the_queries(micro):
    """Sec. 3.1: the same image with another task token gives other queries and predictions."""
    images, tasks, _ = _inputs(1)
    micro.eval()
    with torch.no_grad():
        a = micro(images, tasks)["pred_logits"]
        b = micro(images, torch.flip(tasks, dims=[1]))["pred_logits"]
    assert (a - b).abs().max() > 1e-3


def test_gradients_reach_every_parameter():
    torch.manual_seed(1)
    model = OneFormer(MICRO).train()
    # Deformable DETR initialises the offset and attention-weight projections to zero, so at step 0
    # no gradient flows back into the queries' level embeddings; move them off zero, as one step would.
    with torch.no_grad():
        for layer in model.pixel_decoder.transformer.encoder.layers:
            layer.self_attn.attention_weights.weight.normal_(0.0, 0.01)
    images, tasks, texts = _inputs(2, seed=1)
    out = model(images, tasks, texts)
    preds = [out] + out["aux_outputs"]
    loss = sum(p["pred_logits"].logsumexp(-1).mean() + p["pred_masks"].sigmoid().mean() for p in preds)
    q = torch.nn.functional.normalize(out["contrastive_logits"].flatten(1), dim=-1)
    t = torch.nn.functional.normalize(out["texts"].flatten(1), dim=-1)
    loss = loss + torch.nn.functional.cross_entropy(out["logit_scale"].exp() * q @ t.T, torch.arange(2))
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert dead == []


def test_parameter_counts_against_paper():
    """Paper Table 2 (ADE20K): OneFormer Swin-L 219M. That is the test-time model: backbone, pixel
    decoder, transformer decoder and task MLP; the training-only text mapper adds 17.5M."""
    swin_l = parameter_counts(preset_config("swin-l"))
    assert round(swin_l["inference"] / 1e6) == 219
    assert swin_l == {"backbone": 195_201_204, "pixel_decoder": 5_790_144, "transformer_decoder": 17_734_039,
                      "task_mlp": 85_760, "text_mapper": 17_542_913, "total": 236_354_060, "inference": 218_811_147}
    assert parameter_counts(preset_config("swin-t"))["inference"] == 50_736_401
    assert parameter_counts(preset_config("convnext-l"))["inference"] == 219_842_967
    assert parameter_counts(MICRO) == {"backbone": 360_355, "pixel_decoder": 91_920, "transformer_decoder": 220_234,
                                       "task_mlp": 9_152, "text_mapper": 3_225_729, "total": 3_907_390, "inference": 681_661}


def test_backbone_is_timm_plus_output_norms():
    """Our backbone = timm's model without its classifier and final norm, plus one LayerNorm per
    output (the official D2 wrappers' norm0..3)."""
    import timm

    for variant, channels in (("swin-l", (192, 384, 768, 1536)), ("convnext-l", (192, 384, 768, 1536))):
        config = preset_config(variant)
        with torch.device("meta"):
            plain = timm.create_model(config.backbone, pretrained=False, num_classes=0)
        head = sum(p.numel() for n, p in plain.named_parameters() if n.startswith(("norm.", "head.")))
        expected = sum(p.numel() for p in plain.parameters()) - head + 2 * sum(channels)
        assert parameter_counts(config)["backbone"] == expected


def test_presets_follow_official_configs():
    t, large, c = preset_config("swin-t"), preset_config("swin-l"), preset_config("convnext-l")
    assert (t.num_queries, large.num_queries, c.num_queries) == (150, 250, 250)
    for cfg in (t, large, c):
        assert (cfg.num_classes, cfg.dec_layers, cfg.enc_layers, cfg.dim_feedforward, cfg.enc_dim_feedforward) == (150, 9, 6, 2048, 1024)
        assert (cfg.hidden_dim, cfg.conv_dim, cfg.mask_dim, cfg.nheads, cfg.query_dec_layers) == (256, 256, 256, 8, 2)
        assert (cfg.text_width, cfg.text_layers, cfg.text_heads, cfg.text_context, cfg.vocab_size, cfg.n_ctx) == (256, 6, 4, 77, 49408, 16)
    assert len(ADE20K_CLASSES) == 150 and len(ADE20K_THING_IDS) == 100
    assert ADE20K_CLASSES[12] == "person" and 12 in ADE20K_THING_IDS and 0 not in ADE20K_THING_IDS  # wall is stuff
    assert MICRO.num_classes == 9 and MICRO.thing_classes == (0, 1, 2, 3, 4, 5)
    with pytest.raises(KeyError):
        preset_config("dinat-l")


def test_context_embeddings_need_text_width_equal_hidden():
    with pytest.raises(ValueError, match="text_width"):
        TextMapper(dataclasses.replace(MICRO, text_width=32))


def test_normalize_images_detectron2_convention():
    x = torch.full((1, 3, 2, 2), 0.5)
    y = normalize_images(x, OneFormerConfig())
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([(127.5 - 123.675) / 58.395, (127.5 - 116.28) / 57.12, (127.5 - 103.53) / 57.375]))


def test_text_encoder_is_causal(micro):
    """With the causal mask, tokens after EOT (where the feature is pooled) cannot change it;
    without it (transformers' port) they do."""
    encoder = micro.text_mapper.text_encoder.eval()
    tokens = torch.zeros(1, 77, dtype=torch.long)
    tokens[0, :5] = torch.tensor([49406, 320, 1125, 539, 49407])  # SOT a photo of EOT
    changed = tokens.clone()
    changed[0, 10:20] = 1234
    with torch.no_grad():
        assert torch.equal(encoder(tokens), encoder(changed))
        encoder.causal = False
        try:
            assert not torch.allclose(encoder(tokens), encoder(changed))
        finally:
            encoder.causal = True
