"""Sine and learned position embeddings."""

import math

import torch

from zoo.nn.position_encoding import PositionEmbeddingLearned, PositionEmbeddingSine


def test_sine_hand_values_unnormalised():
    pe = PositionEmbeddingSine(num_pos_feats=2)
    pos = pe(torch.zeros(1, 3, 1, 2))
    assert pos.shape == (1, 4, 1, 2)
    # dim_t = [1, 1]; y = 1 everywhere, x = [1, 2]; channels [sin y, cos y, sin x, cos x]
    expected = torch.tensor([[math.sin(1), math.sin(1)], [math.cos(1), math.cos(1)],
                             [math.sin(1), math.sin(2)], [math.cos(1), math.cos(2)]])
    assert torch.allclose(pos[0, :, 0, :], expected, atol=1e-6)


def test_sine_frequencies_and_offset():
    pe = PositionEmbeddingSine(num_pos_feats=4, temperature=100.0, normalize=True, offset=-0.5)
    pos = pe(torch.zeros(1, 1, 1, 4))
    # first pixel: x = (1 - 0.5) / 4 * 2 pi; channel 2 (third x channel) uses dim_t = 100^(2/4) = 10
    x = 0.5 / 4 * 2 * math.pi
    assert math.isclose(pos[0, 4, 0, 0].item(), math.sin(x), abs_tol=1e-5)
    assert math.isclose(pos[0, 6, 0, 0].item(), math.sin(x / 10), abs_tol=1e-5)
    assert math.isclose(pos[0, 7, 0, 0].item(), math.cos(x / 10), abs_tol=1e-5)


def test_sine_mask_makes_padding_transparent():
    pe = PositionEmbeddingSine(num_pos_feats=8, normalize=True)
    mask = torch.zeros(1, 5, 7, dtype=torch.bool)
    mask[:, 3:, :] = True
    mask[:, :, 4:] = True
    padded = pe(torch.zeros(1, 2, 5, 7), mask)
    cropped = pe(torch.zeros(1, 2, 3, 4))
    assert torch.allclose(padded[:, :, :3, :4], cropped, atol=1e-6)


def test_learned_embedding_structure():
    torch.manual_seed(0)
    pe = PositionEmbeddingLearned(num_pos_feats=6)
    pos = pe(torch.zeros(2, 3, 4, 5))
    assert pos.shape == (2, 12, 4, 5)
    assert torch.equal(pos[:, :6], pe.col_embed.weight[:5].T[None, :, None, :].expand(2, 6, 4, 5))
    assert torch.equal(pos[:, 6:], pe.row_embed.weight[:4].T[None, :, :, None].expand(2, 6, 4, 5))
    assert set(pe.state_dict()) == {"row_embed.weight", "col_embed.weight"}
