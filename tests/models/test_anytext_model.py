"""AnyText networks: parameter counts, zero initialisation, the embedding module's token replacement,
the text encoder path against transformers' own forward."""

import pytest
import torch

from zoo import registry
from zoo.models.anytext import CARD, AnyTextConfig, AnyTextModel, AuxiliaryLatentModule, EmbeddingManager
from zoo.models.anytext.model import PLACEHOLDER_TOKEN
from zoo.models.anytext.tokenizer import tokenize


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return AnyTextModel(registry.variant_config("anytext", "micro")).eval()


def _conv(cin, cout):
    return cin * cout * 9 + cout


def test_sd15_auxiliary_and_embedding_counts_by_hand():
    """cldm.py's widths counted by hand; the other components' counts are asserted registry-wide
    (tests/test_every_model.py, paper_params on the card)."""
    paper = CARD.variants["sd15"].paper_params
    config = AnyTextConfig()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    glyph = sum(_conv(a, b) for a, b in zip((1, 8, 8, 16, 16, 32, 32, 96, 96), (8, 8, 16, 16, 32, 32, 96, 96, 256)))
    position = sum(_conv(a, b) for a, b in zip((1, 8, 8, 16, 16, 32, 32), (8, 8, 16, 16, 32, 32, 64)))
    assert count(AuxiliaryLatentModule(config, 4, 320)) == glyph + position + _conv(256 + 64 + 4, 320) == paper["auxiliary"]
    assert count(EmbeddingManager(config.ocr_feature_dim, 768)) == 2560 * 768 + 768 + 2 * 768 == paper["embedding"]
    # the ControlNet is diffusers' SD1.5 ControlNet (361,279,120) without its own hint block
    hint = sum(_conv(a, b) for a, b in zip((3, 16, 16, 32, 32, 96, 96, 256), (16, 16, 32, 32, 96, 96, 256, 320)))
    assert paper["controlnet"] == 361_279_120 - hint


def test_fresh_controls_change_nothing(micro):
    """Zero fuse conv and zero ControlNet outputs: the controlled UNet equals the UNet alone."""
    c, h, w = micro.latent_shape
    s = micro.config.image_size
    x, t = torch.randn(2, c, h, w), torch.tensor([10, 900])
    context = torch.randn(2, 77, micro.token_dim)
    glyphs, positions = torch.rand(2, 1, 2 * s, 2 * s), torch.rand(2, 1, s, s)
    with torch.no_grad():
        hint = micro.auxiliary(glyphs, positions, torch.randn(2, c, h, w))
        assert hint.shape == (2, micro.unet.config.block_out_channels[0], h, w) and hint.abs().max() == 0
        controlled = micro.eps(x, t, context, glyphs, positions, torch.randn(2, c, h, w))
        plain = micro.unet(x, t, encoder_hidden_states=context).sample
    torch.testing.assert_close(controlled, plain)


def test_embedding_module_replaces_kth_placeholder_with_line_k():
    torch.manual_seed(0)
    module = EmbeddingManager(6, 4)
    torch.nn.init.normal_(module.proj[0].weight)
    ids = torch.tensor([[1, PLACEHOLDER_TOKEN, 5, PLACEHOLDER_TOKEN, 7]])
    tokens = torch.randn(1, 5, 4)
    lines = torch.randn(1, 2, 6)
    out = module(ids, tokens, lines)
    projected = module.proj(lines)
    torch.testing.assert_close(out[0, 1], projected[0, 0])
    torch.testing.assert_close(out[0, 3], projected[0, 1])
    torch.testing.assert_close(out[0, [0, 2, 4]], tokens[0, [0, 2, 4]])


def test_zero_initialised_projection():
    module = EmbeddingManager(10, 8)
    assert module.proj[0].weight.abs().max() == 0 and module.proj[0].bias.abs().max() == 0


def test_text_encoder_matches_transformers_without_placeholders(micro):
    ids = tokenize(["a photo of a red sign", "a wall"])
    with torch.no_grad():
        ours = micro.encode_text(ids, torch.randn(2, micro.config.max_lines, micro.config.ocr_feature_dim))
        theirs = micro.text_encoder(input_ids=ids).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_text_encoder_uses_line_features_at_placeholders(micro):
    ids = tokenize(['a sign that reads * here'])
    feats = torch.randn(1, micro.config.max_lines, micro.config.ocr_feature_dim)
    torch.nn.init.normal_(micro.embedding.proj[0].weight, std=0.01)
    try:
        with torch.no_grad():
            a = micro.encode_text(ids, feats)
            b = micro.encode_text(ids, torch.randn_like(feats))
            plain = micro.encode_text(tokenize(["a sign that reads here"]), feats)
    finally:
        torch.nn.init.zeros_(micro.embedding.proj[0].weight)
    star = int((ids[0] == PLACEHOLDER_TOKEN).nonzero()[0])
    torch.testing.assert_close(a[0, :star], b[0, :star])  # causal: tokens before * do not see it
    assert (a[0, star:] - b[0, star:]).abs().max() > 1e-4
    assert plain.shape == a.shape


def test_glyph_and_position_strides_must_match_the_autoencoder():
    config = registry.variant_config("anytext", "micro", {"glyph_strides": (1, 2, 1, 2, 1)})
    with pytest.raises(ValueError, match="glyph_block downsamples by 4"):
        with torch.device("meta"):
            AnyTextModel(config)
