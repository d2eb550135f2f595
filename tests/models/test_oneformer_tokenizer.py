"""OneFormer tokenizer: CLIP BPE ids of the task and text inputs, offline."""

from __future__ import annotations

import socket

import pytest
import torch

from zoo.models.oneformer.tokenizer import EOT_TOKEN, SOT_TOKEN, VOCAB_SIZE, task_text, task_tokens, text_tokens


def test_known_clip_ids():
    # CLIP's widely quoted ids: "a" 320, "photo" 1125, "of" 539, "cat" 2368, between SOT 49406 and EOT 49407
    ids = text_tokens(["a photo of a cat"])
    assert ids.shape == (1, 77) and ids.dtype == torch.int64
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert ids[0, 7:].eq(0).all()
    assert (SOT_TOKEN, EOT_TOKEN, VOCAB_SIZE) == (49406, 49407, 49408)


def test_task_tokens():
    tokens = task_tokens(["semantic", "instance", "panoptic"])
    assert tokens.shape == (3, 77) and tokens.dtype == torch.int64
    assert tokens[:, 0].eq(SOT_TOKEN).all()
    # "the task is" is shared, the task word differs; lower-casing makes "The" == "the"
    assert tokens[:, 1:4].eq(tokens[0, 1:4]).all()
    assert len(set(tokens[:, 4].tolist())) == 3
    eot = (tokens == EOT_TOKEN).nonzero()
    assert eot.shape[0] == 3
    for row, col in eot.tolist():
        assert tokens[row, col + 1:].eq(0).all()
    assert torch.equal(task_tokens(["panoptic"]), text_tokens(["the task is PANOPTIC"]))
    assert task_text("instance") == "The task is instance"
    assert task_tokens("semantic").shape == (1, 77)
    with pytest.raises(ValueError):
        task_tokens(["detection"])


def test_truncation_keeps_eot_last():
    ids = text_tokens(["circle " * 100, "a panoptic photo"])
    assert ids.shape == (2, 77)
    assert ids[0, -1].item() == EOT_TOKEN and ids[0].ne(0).all()
    assert text_tokens([]).shape == (0, 77)
    with pytest.raises(TypeError):
        text_tokens("a photo")


def test_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the tokenizer tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert text_tokens(["a photo with a hexagon", "an instance photo"]).shape == (2, 77)
