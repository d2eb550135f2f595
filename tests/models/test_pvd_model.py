"""PVD model: shapes, parameter counts (paper variant's encoders against their reference counts),
the Center Anchor Mechanism, one denoiser for any vertex count, DDIM helpers, tokenisation."""

import pytest
import torch

from zoo import registry
from zoo.models.pvd import BERT_BASE_NO_POOLER, RESNET101_FEATURES
from zoo.models.pvd.model import PVDConfig, PVDModel, cosine_alphas_cumprod, ddim_step, ddim_timesteps, from_signal, to_signal
from zoo.models.pvd.tokenizer import VOCAB_DIR, ExpressionError, encode, train_vocab, vocab_size


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return PVDModel(registry.variant_config("pvd", "micro")).eval()


def test_paper_variant_encoders_match_reference_counts():
    """How obtained: timm's resnet101 (the torchvision/timm ResNet-101 of 44,549,160 parameters less its
    2048 x 1000 + 1000 classifier) and transformers' BertConfig() defaults (Google's BERT-base uncased,
    109,482,240 with its 768 x 768 + 768 pooler, which PVD does not use). The counts themselves are
    asserted on the built variant by tests/test_every_model.py (paper_params); building it takes ~10 s."""
    assert RESNET101_FEATURES == 44_549_160 - (2048 * 1000 + 1000)
    assert BERT_BASE_NO_POOLER == 109_482_240 - (768 * 768 + 768)
    spec = registry.get_card("pvd").variants["paper"]
    assert spec.paper_params == {"backbone": RESNET101_FEATURES, "text_encoder": BERT_BASE_NO_POOLER}
    assert registry.parameter_counts("pvd", "micro")["total"] < 500_000


def test_encoder_and_denoiser_shapes(micro):
    c = micro.config
    images = torch.randn(2, 3, c.image_size, c.image_size)
    tokens = encode(["the red circle", "the big blue square left of the red ring"], c.vocab, c.max_tokens)
    memory, valid, centre, logits = micro.encode(images, tokens)
    m = c.grid * c.grid + c.max_tokens
    assert memory.shape == (2, m, c.d_model) and valid.shape == (2, m) and logits.shape == (2, c.grid * c.grid)
    assert ((centre >= 0) & (centre <= 1)).all()
    assert valid[0, : c.grid * c.grid].eq(1).all() and valid[0, c.grid * c.grid + 5:].eq(0).all()  # [CLS] 3 words [SEP], then pads
    for polygon, k in ((False, 2), (True, c.polygon_vertices)):
        x = torch.randn(2, k, 2)
        out = micro.denoiser(memory, valid, centre, x, torch.tensor([10.0, 900.0]), micro.slots(2, polygon))
        assert out.shape == (2, k, 2)


def test_padding_tokens_do_not_change_the_result(micro):
    """Text padding is masked out: one expression alone or beside a longer one encodes the same."""
    c = micro.config
    images = torch.randn(2, 3, c.image_size, c.image_size)
    tokens = encode(["the red circle", "the small green star below the white hexagon"], c.vocab, c.max_tokens)
    both = micro.encode(images, tokens)
    one = micro.encode(images[:1], tokens[:1])
    torch.testing.assert_close(both[2][:1], one[2], rtol=1e-5, atol=1e-6)


def test_center_anchor_mechanism_round_trip_and_absolute_ablation():
    cam = PVDConfig(anchor="center", cam_scale=0.25)
    centre = torch.tensor([[0.5, 0.4]])
    v = torch.tensor([[[0.6, 0.4], [0.25, 0.65]]])
    x0 = to_signal(v, centre, cam)
    torch.testing.assert_close(x0, torch.tensor([[[0.4, 0.0], [-1.0, 1.0]]]))
    torch.testing.assert_close(from_signal(x0, centre, cam), v)
    absolute = PVDConfig(anchor="absolute")
    torch.testing.assert_close(to_signal(v, centre, absolute), v * 2 - 1)
    with pytest.raises(ValueError, match="anchor"):
        PVDConfig(anchor="corner")


def test_ddim_helpers():
    ab = cosine_alphas_cumprod(1000)
    assert ab.shape == (1000,) and ab[0] > 0.999 and ab[-1] < 1e-3 and (ab[1:] <= ab[:-1]).all()
    assert ddim_timesteps(1000, 4) == [999, 666, 333, 0]
    assert ddim_timesteps(1000, 1) == [999]
    # with the exact x0, one DDIM step lands on the noise-free path: x_next = sqrt(ab') x0 + sqrt(1-ab') eps
    x0, eps = torch.tensor([0.3]), torch.tensor([-1.2])
    a, b = 0.25, 0.81
    x_t = a**0.5 * x0 + (1 - a) ** 0.5 * eps
    torch.testing.assert_close(ddim_step(x_t, x0, a, b), b**0.5 * x0 + (1 - b) ** 0.5 * eps)


def test_bundled_vocabulary_is_the_trained_one_and_tokenises_whole_words():
    from zoo.models.pvd.tokenizer import expression_corpus

    bundled = (VOCAB_DIR / "shapes.txt").read_text().splitlines()
    assert bundled[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = {w for text in expression_corpus() for w in text.split()}
    assert words <= set(bundled)  # every word of the procedural expressions is one token
    assert words <= set(train_vocab())  # and retraining (tie order may vary) gives them too
    assert vocab_size("shapes") <= registry.variant_config("pvd", "micro").vocab_size
    ids = encode(["The small red triangle left of the blue circle"], "shapes", 20)[0]
    assert ids[0] == 2 and (ids > 0).sum() == 11  # [CLS] + 9 whole words + [SEP]
    with pytest.raises(ExpressionError, match="'expression' is empty"):
        encode(["   "], "shapes", 20)
    with pytest.raises(ExpressionError, match="too long"):
        encode(["the red circle " * 10], "shapes", 20)
